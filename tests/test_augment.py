"""Augmentation of the training windows (--augment_shift/jitter/scale): leak-free shifts, draws
keyed to (seed, epoch, window) so accumulation stays exact, and untouched evaluation windows."""

import numpy as np
import pytest
import torch

from data_provider.data_factory import build_data
from exp.exp import Exp
from tests.conftest import TINY, flat_params, make_args
from tests.test_cli import run_cli
from utils.seed import seed_everything

AUGMENT = ("--augment_shift", "6", "--augment_jitter", "0.05", "--augment_scale", "0.1")


def covered(starts: np.ndarray, length: int) -> set[int]:
    return {int(s) + t for s in starts for t in range(length)}


def test_shifted_windows_stay_inside_their_training_blocks_and_change_every_epoch():
    data = build_data(make_args("--data", "Classification", "--augment_shift", "6", "--augment_jitter", "0"))
    train, length = data.train, data.seq_len
    forbidden = covered(data.val.starts, length) | covered(data.test.starts, length)
    everything = torch.arange(len(train))
    moved = []
    for epoch in range(3):
        train.set_epoch(epoch)
        starts = train.augment.window_starts(everything).numpy()
        offsets = starts - train.starts
        assert np.abs(offsets).max() <= 6 and (starts >= train.augment.first).all() and (starts <= train.augment.last).all()
        assert not covered(starts, length) & forbidden  # no validation or test row is ever trained on
        batch = train[everything]
        rows = starts[:, None] + np.arange(length)
        torch.testing.assert_close(batch.x, data.train.values[rows], rtol=0, atol=0)  # the shifted rows, unchanged
        moved.append(offsets)
    assert all(np.count_nonzero(m) > len(train) // 2 for m in moved)
    assert not np.array_equal(moved[0], moved[1])  # drawn anew each epoch
    train.set_epoch(0)
    assert np.array_equal(train.augment.window_starts(everything).numpy() - train.starts, moved[0])  # and reproducibly
    assert data.val.augment is None and data.test.augment is None


def test_jitter_adds_noise_of_the_asked_spread_and_scale_multiplies_each_sensor_of_a_window():
    plain = build_data(make_args("--data", "Classification", "--augment_jitter", "0"))
    index = torch.arange(len(plain.train))
    reference = plain.train[index].x.double()
    jittered = build_data(make_args("--data", "Classification", "--augment_jitter", "0.2"))
    jittered.train.set_epoch(0)
    noise = jittered.train[index].x.double() - reference
    assert noise.mean().abs() < 0.01 and noise.std().item() == pytest.approx(0.2, rel=0.05)
    scaled = build_data(make_args("--data", "Classification", "--augment_scale", "0.1", "--augment_jitter", "0"))
    scaled.train.set_epoch(0)
    x = scaled.train[index].x.double()
    ratio = x / reference
    steady = reference.abs() > 1e-3
    per_window_sensor = torch.where(steady, ratio, torch.nan).nanmean(dim=1, keepdim=True)
    # one factor per window and sensor (nan where a sensor is 0 throughout a window: a derived signal that never fires)
    torch.testing.assert_close(torch.where(steady, ratio, per_window_sensor), per_window_sensor.expand_as(ratio), equal_nan=True)
    factors = per_window_sensor.squeeze(1)
    factors = factors[~factors.isnan()]
    assert (factors - 1).std().item() == pytest.approx(0.1, rel=0.15)


@pytest.mark.parametrize("data_format, model", [("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet")])
def test_augmented_micro_batches_train_exactly_like_one_large_batch(data_format, model):
    """Float64, SGD: (4 x 3 steps) and (12 x 1) see the same augmented windows in every epoch."""
    common = ("--data", data_format, "--model", model, "--dtype", "float64", "--optimizer", "sgd", "--learning_rate", "0.05",
              "--max_grad_norm", "0", "--dropout", "0", "--class_weights", "none", "--train_epochs", "2")  # fmt: skip
    weights = {}
    for micro, steps in ((4, 3), (12, 1), (12, 0)):  # steps 0: one large batch without augmentation
        augment = AUGMENT if steps else ("--augment_jitter", "0")
        args = make_args(*common, *augment, "--batch_size", str(micro), "--gradient_accumulation_steps", str(max(steps, 1)))
        data = build_data(args)
        seed_everything(args.seed)
        exp = Exp(args, data)
        for epoch in range(2):
            exp.train_epoch(epoch)
        weights[(micro, steps)] = flat_params(exp.model)
    small, large, unaugmented = weights[(4, 3)], weights[(12, 1)], weights[(12, 0)]
    assert np.linalg.norm(small - large) / np.linalg.norm(large) < 1e-10
    assert np.linalg.norm(large - unaugmented) / np.linalg.norm(large) > 1e-4  # the augmentation did change the training


def test_an_augmented_run_records_its_recipe_and_a_negative_strength_is_refused(tmp_path):
    outputs = ("--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res"))
    done = run_cli(*TINY, "--augment_jitter", "-0.1", *outputs)
    assert done.returncode == 2 and "--augment_jitter" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "ckpt").exists()
    done = run_cli(*TINY, "--model", "ResNet1D", "--data", "Classification", "--augment_shift", "4", "--augment_scale", "0.05",
                   "--train_epochs", "1", *outputs)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Augmentation of the training windows: shift up to 4 rows, jitter 0.05, scale 0.05" in done.stdout  # jitter: ResNet1D's default
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    state = torch.load(run_dir / "best.pt", weights_only=True)
    assert state["args"]["augment_shift"] == 4 and state["args"]["augment_scale"] == 0.05


def test_jitter_is_on_by_default_for_resnet1d_only():
    assert make_args("--data", "Classification").augment_jitter == 0.05  # the default model for a user's CSV
    assert make_args("--data", "DualGAF").augment_jitter == 0.0
    assert make_args("--model", "GNN").augment_jitter == 0.0
    assert make_args("--data", "Classification", "--augment_jitter", "0").augment_jitter == 0.0
    assert build_data(make_args("--data", "DualGAF")).train.augment is None


def test_ready_cut_uea_samples_get_jitter_but_no_shift(tmp_path, capsys):
    from tests.test_uea import uea_args, write_toy

    write_toy(tmp_path)
    data = build_data(uea_args(tmp_path, "--model", "ResNet1D", "--augment_shift", "4"))
    out = capsys.readouterr().out
    assert "--augment_shift 4: no training window can move" in out and "jitter 0.05" in out
    index = torch.arange(len(data.train))
    plain = data.train[index].x
    data.train.set_epoch(0)
    assert torch.equal(data.train.augment.window_starts(index), data.train.start_rows)  # nothing moved
    assert not torch.equal(data.train[index].x, plain)  # but the values are jittered


@pytest.mark.parametrize("stop_at", [2, 14])  # inside a window of epoch 1; inside one of epoch 2
def test_a_run_resumed_mid_epoch_trains_on_the_same_augmented_windows(tmp_path, stop_at):
    from tests.test_resume import FLAGS, final_state, interrupt_after, new_exp
    from utils.signals import Interrupted

    data = build_data(make_args(*FLAGS, *AUGMENT))
    reference = new_exp(tmp_path / "ref", data, *AUGMENT)
    reference.train("run")
    first = new_exp(tmp_path / "cut", data, *AUGMENT)
    interrupt_after(first, stop_at)
    with pytest.raises(Interrupted):
        first.train("run")
    second = new_exp(tmp_path / "cut", data, *AUGMENT, "--resume", "auto")
    second.train("run")
    (got, got_history), (want, want_history) = final_state(second), final_state(reference)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert [r["val_loss"] for r in got_history] == [r["val_loss"] for r in want_history]
