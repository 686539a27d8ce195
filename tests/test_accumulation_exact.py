"""Exact gradient accumulation in every corner: formats x loss presets x class weights, float64
and float32, a broken reference, clipping, cross-epoch windows, LR per update, AMP, bad losses."""

import copy
import math

import numpy as np
import pytest
import torch

from exp.exp import Exp, TrainingAborted
from exp.runtime import SingleProcess
from exp.trainer import Trainer
from tests.conftest import flat_params, make_args, subset
from utils.losses import PRESETS
from utils.seed import seed_everything

FORMAT_MODELS = [("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")]


def build(data, *flags, n_train=45, tmp=None):
    args = make_args("--dropout", "0", "--class_weights", "none", *flags, tmp=tmp)  # references are plain means
    if n_train is not None:
        data = copy.copy(data)
        data.train = subset(data.train, n_train)
    seed_everything(args.seed)
    return Exp(args, data)


def train_epochs(exp, epochs):
    for epoch in range(epochs):
        exp.train_epoch(epoch)
    return exp


def relative_difference(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def pair(data, model, steps, *flags, micro=4, epochs=2):
    """Final weights of (micro, GA=steps) and (micro*steps, GA=1) after ``epochs`` epochs."""
    small = train_epochs(
        build(data, "--model", model, "--batch_size", str(micro), "--gradient_accumulation_steps", str(steps), *flags), epochs
    )
    large = train_epochs(build(data, "--model", model, "--batch_size", str(micro * steps), *flags), epochs)
    assert small.state.updates == large.state.updates
    return small, large


# float64 with SGD and no clipping: SGD's update scales with the gradient, so any normaliser
# error shows (Adam-type optimizers are nearly scale-invariant and would hide one).
# float32 with the default RAdam and clipping: the everyday configuration. (With SGD at a large
# learning rate, float32 rounding differences grow through the normalisation layers' backward
# pass to ~1e-4 after a few clipped updates: a float32 limit, not an accumulation error.)
DTYPE_CASES = {
    "float64": (1e-6, ("--dtype", "float64", "--optimizer", "sgd", "--learning_rate", "0.05", "--max_grad_norm", "0")),
    "float32": (1e-5, ("--dtype", "float32")),
}


@pytest.mark.parametrize("dtype", list(DTYPE_CASES))
@pytest.mark.parametrize("class_weights", ["none", "balanced"])
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("data_format, model", FORMAT_MODELS)
def test_micro_batches_train_exactly_like_one_large_batch(tiny_data, data_format, model, preset, class_weights, dtype):
    """45 windows: batches of 12 end with 9; micro-batches of 4 end with 1 -> uneven everywhere.
    Two epochs, so the per-epoch flush and the second epoch's order are covered too."""
    tolerance, flags = DTYPE_CASES[dtype]
    small, large = pair(
        tiny_data(data_format, "--dtype", dtype), model, 3, "--loss_preset", preset, "--class_weights", class_weights, *flags
    )
    assert small.state.updates == 8  # 2 x ceil(45 / 12)
    assert relative_difference(flat_params(small.model), flat_params(large.model)) < tolerance


class NaiveTrainer(Trainer):
    """The common broken rule: each micro-batch's own (weighted) mean divided by the step count."""

    def _micro_step(self, batch, step):
        logits = self.model(*batch.inputs())
        losses, weights = self.criterion(logits, batch.labels)
        mean = losses.mean() if weights is None else (losses * weights).sum() / weights.sum()
        (mean / self.plan.steps).backward()
        if step.is_update:
            self._update()


class CountNormalisedTrainer(Trainer):
    """Class-weighted sum divided by the window's sample count instead of its total weight."""

    def _micro_step(self, batch, step):
        logits = self.model(*batch.inputs())
        losses, weights = self.criterion(logits, batch.labels)
        samples = sum(len(b) for b in self._window_batches(step))
        ((losses * weights).sum() / samples).backward()
        if step.is_update:
            self._update()

    def _window_batches(self, step):
        batches = self.train_loader.sampler.batches(step.epoch)
        first = step.batch - step.position
        return batches[first : first + step.window_length]


@pytest.mark.parametrize("broken, flags", [
    (NaiveTrainer, ("--class_weights", "none")),
    (CountNormalisedTrainer, ("--class_weights", "balanced")),
])  # fmt: skip
def test_broken_normalisers_fail_where_ours_passes(tiny_data, broken, flags):
    data = tiny_data("Classification", "--dtype", "float64")
    common = ("--model", "ResNet1D", *DTYPE_CASES["float64"][1], "--loss_preset", "standard", *flags)
    ours, large = pair(data, "ResNet1D", 3, *common[2:])
    assert relative_difference(flat_params(ours.model), flat_params(large.model)) < 1e-6
    args = make_args("--dropout", "0", *common, "--batch_size", "4", "--gradient_accumulation_steps", "3")
    seed_everything(args.seed)
    bad = copy.copy(data)
    bad.train = subset(data.train, 45)
    wrong = Exp(args, bad)
    wrong.trainer.__class__ = broken  # the same parts, the broken loop
    train_epochs(wrong, 2)
    assert relative_difference(flat_params(wrong.model), flat_params(large.model)) > 1e-3


def test_clipping_happens_once_per_update_on_the_whole_window(tiny_data, monkeypatch):
    """With a tiny --max_grad_norm every update is clipped; clipping each micro-batch would
    give different weights from the large batch, clipping the window's sum gives the same."""
    calls = []
    original = torch.nn.utils.clip_grads_with_norm_

    def counting(params, max_norm, total_norm, *a, **k):
        calls.append(float(total_norm))
        return original(params, max_norm, total_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", counting)
    flags = ("--dtype", "float64", "--optimizer", "sgd", "--learning_rate", "0.05", "--max_grad_norm", "0.05")
    small, large = pair(tiny_data("Classification", "--dtype", "float64"), "ResNet1D", 3, *flags)
    assert len(calls) == small.state.updates + large.state.updates == 16
    assert min(calls) > 0.05  # every update was really clipped
    assert relative_difference(flat_params(small.model), flat_params(large.model)) < 1e-6


def window_gradients_match_references(exp, epochs, windows):
    """Record every update's gradient; each must be the mean CE gradient of its window's samples."""
    from tests.test_training_equivalence import assert_grads_close, record_updates, reference_gradient

    updates = record_updates(exp)
    train_epochs(exp, epochs)
    assert len(updates) == len(windows)
    for (weights, grads), samples in zip(updates, windows):
        assert_grads_close(grads, reference_gradient(exp, weights, samples))


def test_cross_epoch_windows_complete_in_the_next_epoch_even_when_an_epoch_is_shorter(tiny_data):
    """8 windows in micro-batches of 4 -> 2 micro-batches per epoch, 3 steps, 3 epochs:
    windows [e0b0 e0b1 e1b0] [e1b1 e2b0 e2b1] -> 2 updates, each the mean over its 12 samples."""
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3",
        "--cross_epoch_accumulation", "--train_epochs", "3", "--loss_preset", "standard", "--max_grad_norm", "0", n_train=8,
    )  # fmt: skip
    order = [exp.train_loader.sampler.order(e) for e in range(3)]
    windows = [np.concatenate([order[0], order[1][:4]]), np.concatenate([order[1][4:], order[2]])]
    window_gradients_match_references(exp, 3, windows)
    assert [exp.policy.updates_in_epoch(e) for e in range(3)] == [0, 1, 1]


def test_cross_epoch_last_window_of_training_is_flushed_with_its_own_scale_and_logged(tiny_data, tmp_path, capsys):
    """10 windows in micro-batches of 4 (4, 4, 2) x 2 epochs = 6 micro-batches, 4 steps:
    windows [e0: 4 4 2, e1: 4] and a final flushed window [e1: 4 2] of 6 samples."""
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "4",
        "--cross_epoch_accumulation", "--train_epochs", "2", "--loss_preset", "standard", "--max_grad_norm", "0",
        "--patience", "0", n_train=10, tmp=tmp_path,
    )  # fmt: skip
    from tests.test_training_equivalence import assert_grads_close, record_updates, reference_gradient

    updates = record_updates(exp)
    exp.train("run")
    order = [exp.train_loader.sampler.order(e) for e in range(2)]
    windows = [np.concatenate([order[0], order[1][:4]]), order[1][4:]]
    assert exp.state.updates == len(updates) == 2
    for (weights, grads), samples in zip(updates, windows):
        assert_grads_close(grads, reference_gradient(exp, weights, samples))
    assert "Final accumulation window: 2 of 4 micro-batches" in capsys.readouterr().out
    assert [row["updates"] for row in exp.state.history] == [0, 2]


def test_early_stop_inside_a_cross_epoch_window_rescales_and_applies_it(tiny_data, tmp_path, capsys):
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "5",
        "--cross_epoch_accumulation", "--train_epochs", "6", "--loss_preset", "standard", "--max_grad_norm", "0",
        "--patience", "1", "--learning_rate", "1e-9", n_train=8, tmp=tmp_path,
    )  # fmt: skip
    from tests.test_training_equivalence import assert_grads_close, record_updates, reference_gradient

    exp.early_stopping.step(-1.0, -1)  # nothing will beat this: stop after the first epoch
    updates = record_updates(exp)
    exp.train("run")
    assert len(exp.state.history) == 1 and exp.state.updates == 1
    weights, grads = updates[0]
    assert_grads_close(grads, reference_gradient(exp, weights, exp.train_loader.sampler.order(0)))  # 2 of 5 micro-batches
    assert "Flushed the open accumulation window (2 micro-batches)" in capsys.readouterr().out


def learning_rates(exp, epochs):
    seen, step = [], exp.optimizer.step

    def recording(*a, **k):
        seen.append(exp.trainer.lr())
        return step(*a, **k)

    exp.optimizer.step = recording
    train_epochs(exp, epochs)
    return seen


@pytest.mark.parametrize("cross_epoch", [False, True])
def test_cosine_schedule_runs_in_updates_and_is_sized_from_the_real_count(tiny_data, cross_epoch):
    """45 windows, micro 4 x 3 steps: 12 micro-batches/epoch -> flush: 4 updates/epoch (ceil),
    carry: 36 micro-batches over 3 epochs -> 12 updates; the same LR at every update as (12, GA 1)."""
    flags = ("--lr_scheduler", "cosine", "--warmup_steps", "3", "--train_epochs", "3", "--min_lr", "1e-4")
    if cross_epoch:
        flags += ("--cross_epoch_accumulation",)
    data = tiny_data("Classification")
    small = build(data, "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3", *flags)
    lrs = learning_rates(small, 3)
    total = small.policy.planned_updates()
    assert total == len(lrs) == small.state.updates == 12
    from utils.schedulers import warmup_cosine_factor

    expected = [2e-3 * warmup_cosine_factor(u, 3, total, 1e-4 / 2e-3) for u in range(total)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[:3] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])  # warm-up in updates
    assert lrs[-1] == pytest.approx(1e-4 + (2e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 8 / 9)))
    if not cross_epoch:
        large = build(data, "--model", "ResNet1D", "--batch_size", "12", *flags)
        assert learning_rates(large, 3) == lrs


def test_plateau_schedule_steps_per_epoch_and_gives_the_same_lr_at_every_update(tiny_data, tmp_path):
    runs = []
    for batch, steps in ((4, 3), (12, 1)):
        exp = build(
            tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", str(batch),
            "--gradient_accumulation_steps", str(steps), "--train_epochs", "3", "--lr_scheduler", "plateau", "--lr_patience", "0",
            "--patience", "0", tmp=tmp_path / str(batch),
        )  # fmt: skip
        real_vali, epochs = exp.vali, []

        def worse_each_epoch(loader, real_vali=real_vali, epochs=epochs):
            report = real_vali(loader)
            epochs.append(None)
            report["loss"] += 10.0 * len(epochs)  # never improves: the LR halves after every epoch but the first
            return report

        exp.vali = worse_each_epoch
        seen, step = [], exp.optimizer.step
        exp.optimizer.step = lambda *a, exp=exp, seen=seen, step=step, **k: (seen.append(exp.trainer.lr()), step(*a, **k))[1]
        exp.train("run")
        runs.append(seen)
    assert runs[0] == runs[1] == [2e-3] * 8 + [1e-3] * 4  # per epoch, after 4 + 4 updates, not per micro-batch


class CallLog:
    def __init__(self):
        self.calls = []

    def wrap(self, owner, name, label=None):
        original = getattr(owner, name)

        def logged(*a, **k):
            self.calls.append(label or name)
            return original(*a, **k)

        setattr(owner, name, logged)


def test_amp_update_order_and_a_skipped_step_with_an_injected_inf(tiny_data, monkeypatch):
    """GradScaler path (CPU scaler, so it runs without CUDA): per window unscale -> clip -> step
    -> scaler update -> zero grads -> scheduler, once; an inf gradient skips the step, the
    scheduler and the update counter, and leaves the weights untouched."""
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3",
        "--lr_scheduler", "cosine", "--max_grad_norm", "0.5", n_train=36,
    )  # fmt: skip
    exp.scaler = exp.trainer.scaler = exp.state.components["scaler"] = torch.amp.GradScaler(exp.device.type, init_scale=2.0**10)
    log = CallLog()
    for name in ("unscale_", "update"):
        log.wrap(exp.scaler, name, f"scaler.{name}")
    log.wrap(exp.optimizer, "step", "optimizer.step")
    log.wrap(exp.optimizer, "zero_grad", "zero_grad")
    log.wrap(exp.scheduler, "step", "scheduler.step")
    original_clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: (log.calls.append("clip"), original_clip(*a, **k))[1])
    original_scale = exp.scaler.scale
    scales = []

    def scale(loss):
        scales.append(exp.scaler.get_scale())
        return original_scale(loss)

    exp.scaler.scale = scale
    original_unscale = exp.scaler.unscale_
    weights_at_unscale = []

    def unscale_with_inf(optimizer):
        weights_at_unscale.append(flat_params(exp.model))
        if len(weights_at_unscale) == 2:  # poison the second window's (scaled) gradient
            next(exp.model.parameters()).grad.view(-1)[0] = float("inf")
        return original_unscale(optimizer)

    exp.scaler.unscale_ = unscale_with_inf
    exp.train_epoch(0)
    per_window = ["scaler.unscale_", "clip", "optimizer.step", "scaler.update", "zero_grad", "scheduler.step"]
    skipped = ["scaler.unscale_", "clip", "scaler.update", "zero_grad"]  # GradScaler skips optimizer.step
    assert log.calls == per_window + skipped + per_window
    assert exp.state.updates == 2 and exp.state.skipped_updates == 1 and exp.scheduler.last_epoch == 2
    assert scales == [2.0**10] * 6 + [2.0**9] * 3  # constant inside a window, halved after the inf
    np.testing.assert_array_equal(weights_at_unscale[1], weights_at_unscale[2])  # the skipped step changed nothing
    assert not np.array_equal(weights_at_unscale[0], weights_at_unscale[1])


def test_amp_bf16_on_cpu_trains_under_autocast(tiny_data):
    exp = build(tiny_data("Classification"), "--model", "ResNet1D", "--use_amp", "--batch_size", "8", "--device", "cpu", n_train=32)
    assert exp.amp_dtype == torch.bfloat16 and not exp.scaler.is_enabled()
    dtypes = []
    exp.model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = flat_params(exp.model)
    exp.train_epoch(0)
    assert set(dtypes) == {torch.bfloat16} and exp.state.updates == 4
    after = flat_params(exp.model)
    assert np.isfinite(after).all() and not np.array_equal(before, after)
    assert all(p.dtype == torch.float32 for p in exp.model.parameters())  # master weights stay fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for fp16 autocast with GradScaler")
def test_amp_fp16_on_cuda_matches_fp32_closely(tiny_data):
    flags = ("--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3", "--device", "cuda")
    amp = train_epochs(build(tiny_data("Classification"), *flags, "--use_amp"), 1)
    plain = train_epochs(build(tiny_data("Classification"), *flags), 1)
    assert amp.scaler.is_enabled() and amp.updates + amp.skipped_updates == 4
    assert relative_difference(flat_params(amp.model), flat_params(plain.model)) < 1e-2


def test_a_non_finite_loss_discards_its_whole_window_and_never_touches_the_weights(tiny_data, capsys):
    exp = build(tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3", n_train=36)
    original = exp.model.forward
    calls = {"n": 0}

    def forward(x):
        calls["n"] += 1
        out = original(x)
        return out * float("nan") if calls["n"] == 5 else out  # micro-batch 5: window 2, position 2

    exp.model.forward = forward
    before_after = []
    step = exp.optimizer.step

    def recording_step(*a, **k):
        before = flat_params(exp.model)
        out = step(*a, **k)
        before_after.append((before, flat_params(exp.model)))
        return out

    exp.optimizer.step = recording_step
    exp.train_epoch(0)
    assert exp.state.updates == 2 and exp.state.bad_windows == 1 and exp.state.consecutive_bad_windows == 0
    assert calls["n"] == 9  # decided at the update (no sync per micro-batch): micro-batch 6 ran, into dropped gradients
    assert "non-finite loss in epoch 1, micro-batch 5" in capsys.readouterr().out
    # The epoch's statistics leave out the bad micro-batch and the one after it, and stay finite.
    loss, weight, correct, samples = exp.state.meter.totals()
    assert samples == 36 - 2 * 4 and np.isfinite(loss) and weight > 0
    assert len(before_after) == 2  # windows 1 and 3 stepped
    np.testing.assert_array_equal(before_after[0][1], before_after[1][0])  # nothing moved the weights in window 2
    assert np.isfinite(before_after[1][1]).all()


def test_consecutive_bad_windows_abort_with_a_clear_message(tiny_data):
    exp = build(tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--max_bad_windows", "3", n_train=36)
    original = exp.model.forward
    exp.model.forward = lambda x: original(x) * float("inf")
    before = flat_params(exp.model)
    with pytest.raises(TrainingAborted, match="3 consecutive accumulation windows"):
        exp.train_epoch(0)
    np.testing.assert_array_equal(before, flat_params(exp.model))


def test_logged_train_loss_is_the_mean_per_sample_loss_of_the_epoch(tiny_data, tmp_path):
    exp = build(tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3",
                "--train_epochs", "1", "--loss_preset", "hvac_similar", tmp=tmp_path)  # fmt: skip
    seen = []
    original = exp.criterion.forward

    def spy(logits, labels):
        losses, weights = original(logits, labels)
        seen.append(losses.detach().double())
        return losses, weights

    exp.criterion.forward = spy
    exp.train("run")
    row = exp.state.history[0]
    # Each micro-batch's total is the float32 sum the backward uses; the epoch adds those totals in float64.
    assert row["train_loss"] == pytest.approx(float(torch.cat(seen).mean()), rel=1e-6)
    assert (row["micro_batches"], row["updates"], row["effective_batch_size"]) == (12, 4, 12)


def test_early_stop_inside_a_window_that_went_bad_discards_it(tiny_data, tmp_path, capsys):
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "5",
        "--cross_epoch_accumulation", "--train_epochs", "6", "--patience", "1", n_train=8, tmp=tmp_path,
    )  # fmt: skip
    exp.early_stopping.step(-1.0, -1)  # stop after the first epoch, inside the first window
    original, calls = exp.model.forward, {"n": 0}

    def forward(x):
        calls["n"] += 1
        return original(x) * (float("nan") if calls["n"] == 2 else 1.0)

    exp.model.forward = forward
    before = flat_params(exp.model)
    exp.train("run")
    np.testing.assert_array_equal(before, flat_params(exp.model))
    assert exp.state.updates == 0 and exp.state.bad_windows == 1 and exp.state.window_bad is None
    assert "accumulation window discarded" in capsys.readouterr().out
    assert torch.load(tmp_path / "ckpt" / "run" / "last.pt", weights_only=True)["window_bad"] is None


def test_the_flushed_update_of_an_early_stop_is_in_the_history(tiny_data, tmp_path):
    exp = build(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "5",
        "--cross_epoch_accumulation", "--train_epochs", "6", "--patience", "1", n_train=8, tmp=tmp_path,
    )  # fmt: skip
    exp.early_stopping.step(-1.0, -1)
    exp.train("run")
    assert exp.state.updates == 1
    assert exp.state.history[-1]["updates"] == exp.state.history[-1]["total_updates"] == 1


def test_a_window_counts_only_the_micro_batches_before_the_earliest_non_finite_loss_of_any_process():
    """Another process's NaN at stream position 11 (agreed via ``agree``) leaves this process's
    finite micro-batches from 11 on out of the epoch's statistics, as on that process."""
    from exp.state import EpochMeter, OpenWindow

    class PeerSawNaNAt11:
        def agree(self, value):
            return (max(value, OpenWindow.NONE - 11),)

    window, meter = OpenWindow(), EpochMeter(torch.device("cpu"))
    for position, total in zip((10, 11, 12), (1.0, 2.0, 4.0)):
        window.add(torch.tensor(total), torch.tensor(position - 9), None, position, 4)
    assert window.settle(PeerSawNaNAt11(), meter) == 11
    assert meter.totals() == [1.0, 4.0, 1.0, 4.0]  # only position 10: loss 1, weight 4, 1 correct, 4 samples
    window.add(torch.tensor(float("nan")), torch.tensor(0), None, 13, 4)
    assert window.settle(SingleProcess(), meter) == 13 and meter.totals() == [1.0, 4.0, 1.0, 4.0]
    window.add(torch.tensor(3.0), torch.tensor(2), torch.tensor(0.5), 14, 4)  # class weights: weight is their sum
    assert window.settle(SingleProcess(), meter) is None and meter.totals() == [4.0, 4.5, 3.0, 8.0]
