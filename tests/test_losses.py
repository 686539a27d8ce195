"""Loss presets against torch's own losses and hand-written formulas."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.losses import PRESETS, LossPreset, PresetLoss, balanced_class_weights, build_loss, fault_family, target_matrix

torch.manual_seed(0)
LOGITS = torch.randn(12, 5, dtype=torch.float64) * 3
LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0])


def test_standard_is_cross_entropy():
    losses, weights = PresetLoss(PRESETS["standard"], 5)(LOGITS, LABELS)
    assert weights is None
    torch.testing.assert_close(losses, F.cross_entropy(LOGITS, LABELS, reduction="none"))


def test_hvac_similar_is_torch_label_smoothing():
    losses, _ = PresetLoss(PRESETS["hvac_similar"], 5)(LOGITS, LABELS)
    torch.testing.assert_close(losses, F.cross_entropy(LOGITS, LABELS, reduction="none", label_smoothing=0.1))


def test_focal_loss_matches_its_formula():
    losses, _ = PresetLoss(PRESETS["hard_samples"], 5)(LOGITS, LABELS)
    p_true = torch.softmax(LOGITS, -1)[torch.arange(12), LABELS]
    torch.testing.assert_close(losses, -((1 - p_true) ** 2) * torch.log(p_true))


def test_confidence_penalty_subtracts_entropy():
    losses, _ = PresetLoss(PRESETS["overconfidence_prevention"], 5)(LOGITS, LABELS)
    p = torch.softmax(LOGITS, -1)
    entropy = -(p * p.log()).sum(-1)
    want = F.cross_entropy(LOGITS, LABELS, reduction="none", label_smoothing=0.1) - 0.1 * entropy
    torch.testing.assert_close(losses, want)


def test_class_weighted_window_mean_equals_torch_weighted_mean():
    labels = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 4])
    loss = build_loss("imbalanced_focus", 5, labels)
    assert loss.class_weights_np is not None
    w = torch.as_tensor(balanced_class_weights(labels, 5))
    plain = PresetLoss(LossPreset("x", "", class_weights="balanced"), 5, w.numpy())
    losses, weights = plain(LOGITS, LABELS)
    torch.testing.assert_close((losses * weights).sum() / weights.sum(), F.cross_entropy(LOGITS, LABELS, weight=w))
    assert plain.weight_total(LABELS.numpy()) == pytest.approx(float(weights.sum()))


def test_balanced_weights_follow_sklearn_formula():
    np.testing.assert_allclose(balanced_class_weights(np.array([0, 0, 0, 1]), 3), [4 / 6, 4 / 2, 0.0])


def test_family_aware_targets_keep_smoothing_inside_the_family():
    names = ["normal", "oa_damper_stuck_25", "oa_damper_stuck_75", "heating_valve_leak_10"]
    families = [fault_family(n) for n in names]
    assert families == ["normal", "oa_damper_stuck", "oa_damper_stuck", "heating_valve_leak"]
    q = target_matrix(4, 0.1, families, 0.5)
    torch.testing.assert_close(q.sum(1), torch.ones(4, dtype=torch.float64))
    # damper 25 -> uniform share 0.1*0.5/4 on every class, plus 0.05 on damper 75
    assert q[1, 2] == pytest.approx(0.05 + 0.0125)
    assert q[1, 3] == pytest.approx(0.0125)
    assert q[1, 1] == pytest.approx(0.9 + 0.0125)
    assert q[0, 1] == pytest.approx(0.025)  # no sibling: uniform smoothing


def test_lbnl_style_names_have_families():
    assert fault_family("Stuck OA Damper / Fully open (100%)") == "Stuck OA Damper"
    assert fault_family("heating_valve_leak_40") == "heating_valve_leak"


def test_adaptive_smoothing_decays_over_epochs():
    loss = PresetLoss(PRESETS["hvac_adaptive"], 5)
    loss.set_epoch(0, 11)
    start = loss.smoothing
    loss.set_epoch(10, 11)
    assert (start, loss.smoothing) == pytest.approx((0.2, 0.02))
    torch.testing.assert_close(loss.targets, target_matrix(5, 0.02, None, 0.5))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_gives_finite_per_sample_losses(name):
    loss = build_loss(name, 5, LABELS.numpy())
    losses, weights = loss(LOGITS.float(), LABELS)
    assert losses.shape == (12,) and torch.isfinite(losses).all()
    assert weights is None or weights.shape == (12,)
