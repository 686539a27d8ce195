"""GAF images against the arccos definition; metrics by hand and against scikit-learn."""

import argparse

import numpy as np
import pytest
import torch

from data_provider.gaf import dual_gaf, paa
from utils.metrics import classification_report, confusion_matrix


def reference_gaf(series: np.ndarray):
    phi = np.arccos(np.clip(series, -1, 1))
    return np.cos(phi[:, None] + phi[None, :]), np.sin(phi[:, None] - phi[None, :])


def test_dual_gaf_matches_the_angular_definition():
    rng = np.random.default_rng(0)
    windows = rng.uniform(-1, 1, size=(3, 20, 4))
    gasf, gadf = dual_gaf(torch.as_tensor(windows))
    assert gasf.shape == gadf.shape == (3, 4, 20, 20)
    for b in range(3):
        for c in range(4):
            want_s, want_d = reference_gaf(windows[b, :, c])
            np.testing.assert_allclose(gasf[b, c].numpy(), want_s, atol=1e-12)
            np.testing.assert_allclose(gadf[b, c].numpy(), want_d, atol=1e-12)


def test_values_outside_the_training_range_are_clipped():
    gasf, gadf = dual_gaf(torch.tensor([[[1.7], [-3.0]]]))
    np.testing.assert_allclose(gasf[0, 0].numpy(), reference_gaf(np.array([1.0, -1.0]))[0], atol=1e-12)


def test_paa_is_the_segment_mean():
    x = torch.arange(12.0).reshape(1, 1, 12)
    np.testing.assert_allclose(paa(x, 4).numpy().ravel(), [1, 4, 7, 10])
    assert paa(x, 5).shape == (1, 1, 5)
    assert paa(x, 12) is x


def test_report_by_hand():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 0])
    report = classification_report(y_true, y_pred, 4)
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert report["accuracy"] == pytest.approx(3 / 6)
    # class 0: P 1/3 R 1/2 F1 0.4; class 1: P 2/3 R 2/3 F1 2/3; class 2: 0; class 3 absent -> not averaged
    assert report["f1"][:3] == pytest.approx([0.4, 2 / 3, 0.0])
    assert report["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0) / 3)
    assert report["support"] == [2, 3, 1, 0]


def test_report_agrees_with_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    report = classification_report(y_true, y_pred, 6)
    assert report["macro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"))


@pytest.mark.parametrize("temporal", [True, False])
def test_dualgafnet_temporal_branch_is_used_and_can_be_left_out(temporal):
    from models import InputDims, build_model
    from tests.conftest import make_args

    args = make_args("--model", "DualGAFNet", "--window_stats", "off", *([] if temporal else ["--no_temporal"]))
    model = build_model("DualGAFNet", args, InputDims(channels=3, length=24, classes=4))
    window = torch.randn(5, 24, 3)
    model(*dual_gaf(window.clamp(-1, 1), 8), window).logsumexp(1).sum().backward()
    branch = [p for name, p in model.named_parameters() if name.startswith("temporal.")]
    if temporal:  # every weight of the branch gets a gradient from the classifier
        assert branch and all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch)
    else:
        assert not branch and model.head[1].in_features == 3 * args.d_model


def test_dualgafnet_temporal_resnet_is_resnet1d_stack_and_older_args_build_the_small_branch():
    """--temporal resnet: the branch is ResNet1D's own residual stack (same weights -> same
    features); saved args without the flag (checkpoints written before it) build the small branch."""
    from models import InputDims, build_model
    from tests.conftest import make_args

    dims = InputDims(channels=3, length=24, classes=4)
    args = make_args("--model", "DualGAFNet", "--temporal", "resnet")
    model = build_model("DualGAFNet", args, dims)
    resnet = build_model("ResNet1D", make_args("--model", "ResNet1D", "--d_model", str(args.d_model)), dims)
    resnet.blocks.load_state_dict(model.temporal.state_dict())
    window = torch.randn(5, 24, 3)
    assert torch.equal(model.temporal(window.transpose(1, 2)), resnet.blocks(window.transpose(1, 2)))
    assert model.head[1].in_features == 3 * args.d_model + 2 * args.d_model + args.d_model  # sensors, temporal 2d, statistics

    older = argparse.Namespace(**{k: v for k, v in vars(make_args("--model", "DualGAFNet")).items() if k != "temporal"})
    small = build_model("DualGAFNet", older, dims)
    widths = [small.temporal[i].body[0].out_channels for i in range(len(small.temporal))]
    assert widths == [args.d_model, args.d_model]  # two blocks of width d: the weights old checkpoints hold
