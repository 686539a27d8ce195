"""Accumulation that adapts: out-of-memory recovery keeps the effective batch and every window."""

import copy

import numpy as np
import pytest
import torch

from exp.accumulation import AccumulationPlan, shrunk, smaller_micro_batch
from exp.exp import Exp
from exp.trainer import is_out_of_memory
from tests.conftest import flat_params, make_args, subset
from utils.errors import UserError
from utils.seed import seed_everything

# float64 SGD without clipping: the update scales with the gradient, so a wrong normaliser shows.
EXACT = ("--model", "ResNet1D", "--data", "Classification", "--dtype", "float64", "--optimizer", "sgd", "--learning_rate", "0.05",
         "--max_grad_norm", "0", "--dropout", "0", "--class_weights", "none", "--train_epochs", "2", "--patience", "0")  # fmt: skip


@pytest.fixture(scope="module")
def data():
    from data_provider.data_factory import build_data

    bundle = copy.copy(build_data(make_args(*EXACT)))
    bundle.train = subset(bundle.train, 45)  # micro-batch 4: 12 per epoch, the last of 1 sample; windows of 3 -> 4 updates
    return bundle


def new_exp(tmp, data, *flags):
    args = make_args(*EXACT, *flags, tmp=tmp)
    seed_everything(args.seed)
    return Exp(args, data)


def fail_above(exp, size: int, after_calls: int, error=lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")):
    """From training forward call ``after_calls`` on, a micro-batch of more than ``size`` windows raises ``error``."""
    model = exp.bare_model
    original, calls = model.forward, {"n": 0}

    def forward(x):
        calls["n"] += model.training
        if model.training and calls["n"] > after_calls and x.shape[0] > size:
            raise error()
        return original(x)

    model.forward = forward
    return calls


def relative_difference(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_the_smaller_micro_batch_divides_the_old_one_and_the_steps_keep_the_effective_batch():
    assert [smaller_micro_batch(b) for b in (1, 2, 3, 4, 6, 9, 12, 32, 7)] == [None, 1, 1, 2, 3, 3, 6, 16, 1]
    plan = AccumulationPlan(batch_size=12, steps=3, world_size=1, mode="target", target=36)
    assert [(p.batch_size, p.steps, p.effective_batch_size) for p in (shrunk(plan, 6), shrunk(plan, 4), shrunk(plan, 1))] == [
        (6, 6, 36), (4, 9, 36), (1, 36, 36)]  # fmt: skip
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("after_calls", [4, 6])  # mid-window (window 2, second micro-batch); a window's last micro-batch
def test_out_of_memory_mid_window_goes_on_with_half_the_micro_batch_and_ends_with_the_small_batch_weights(
    tmp_path, data, after_calls, capsys
):
    shrinking = new_exp(tmp_path / "oom", data, "--batch_size", "4", "--gradient_accumulation_steps", "3")
    fail_above(shrinking, 2, after_calls)
    shrinking.train("run")
    out = capsys.readouterr().out
    assert out.count("out of memory") == 1
    assert f"epoch 1, micro-batch {after_calls + 1} (--batch_size 4): going on with micro-batch 2 x 6 steps, effective batch 12 kept" in out
    reference = new_exp(tmp_path / "ref", data, "--batch_size", "2", "--gradient_accumulation_steps", "6")
    reference.train("run")

    assert relative_difference(flat_params(shrinking.model), flat_params(reference.model)) < 1e-9
    assert shrinking.state.updates == reference.state.updates == 2 * 4
    assert (shrinking.plan.batch_size, shrinking.plan.steps) == (2, 6)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    got, want = strip(shrinking.state.history), strip(reference.state.history)
    assert [r["micro_batches"] for r in got] == [r["micro_batches"] for r in want] == [23, 23]
    assert got[0]["train_loss"] == pytest.approx(want[0]["train_loss"], rel=1e-9)  # the redone window counted once
    # The run's outputs and checkpoint say how it really trained.
    saved = torch.load(tmp_path / "oom" / "ckpt" / "run" / "last.pt", weights_only=True)
    assert saved["layout"] == {"batch_size": 2, "steps": 6, "world_size": 1, "effective_batch_size": 12}
    assert [r["batch_size"] for r in got] == [2, 2]


def test_out_of_memory_at_micro_batch_1_gives_up_with_a_one_line_error(tmp_path, data):
    exp = new_exp(tmp_path, data, "--batch_size", "2", "--gradient_accumulation_steps", "2")
    fail_above(exp, 0, 3)  # micro-batch 4 (of 2) fails; its window is redone from micro-batch 5 of 1, which fails too
    with pytest.raises(UserError, match=r"out of memory in epoch 1, micro-batch 5 \(--batch_size 1\): a single window does not fit"):
        exp.train("run")


def test_an_error_that_is_not_out_of_memory_is_not_swallowed(tmp_path, data):
    exp = new_exp(tmp_path, data, "--batch_size", "4", "--gradient_accumulation_steps", "3")
    fail_above(exp, 2, 4, error=lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x7 and 8x3)"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        exp.train("run")
    assert exp.plan.batch_size == 4


def test_a_run_that_shrank_resumes_mid_epoch_with_the_smaller_micro_batch_and_the_same_weights(tmp_path, data, capsys):
    import signal

    from utils.signals import Interrupted

    flags = ("--batch_size", "4", "--gradient_accumulation_steps", "3")
    reference = new_exp(tmp_path / "ref", data, *flags)
    fail_above(reference, 2, 4)
    reference.train("run")

    first = new_exp(tmp_path / "cut", data, *flags)
    fail_above(first, 2, 4)
    original, count = first.trainer._micro_step, {"n": 0}

    def stop_after_the_shrink(batch, step):
        count["n"] += first.plan.batch_size == 2
        if count["n"] == 9:  # epoch 1, inside the third window of micro-batches of 2
            first.trainer.stop.signum = signal.SIGINT
        return original(batch, step)

    first.trainer._micro_step = stop_after_the_shrink
    with pytest.raises(Interrupted):
        first.train("run")
    capsys.readouterr()
    second = new_exp(tmp_path / "cut", data, *flags, "--resume", "auto")  # the flags the user first gave
    second.train("run")
    assert "went on with smaller micro-batches after running out of memory: micro-batch 2 x 6 steps" in capsys.readouterr().out
    assert (second.plan.batch_size, second.plan.steps) == (2, 6)
    assert relative_difference(flat_params(second.model), flat_params(reference.model)) < 1e-9


# ------------------------------------------------------------------------- gradient noise scale
def test_the_noise_scale_estimator_finds_the_true_b_simple_of_a_quadratic_with_known_covariance():
    """Per-sample loss |w - z|^2 / 2 with z ~ N(mu, I): the per-sample gradient is w - z, so
    G = w - mu, tr(Sigma) = d and B_simple = d / |w - mu|^2 exactly (here 2000 / 20 = 100)."""
    from exp.grad_noise import GradNoiseScale

    d, micro, steps = 2000, 8, 8
    gen = torch.Generator().manual_seed(0)
    mu = torch.zeros(d, dtype=torch.float64)
    w = torch.nn.Parameter(mu + torch.full((d,), (20 / d) ** 0.5, dtype=torch.float64))  # |w - mu|^2 = 20
    noise = GradNoiseScale()
    for _ in range(300):
        for _ in range(steps):  # the trainer's micro-batch loss: summed per-sample losses over the window's samples
            z = mu + torch.randn(micro, d, generator=gen, dtype=torch.float64)
            (0.5 * ((w - z) ** 2).sum() / (micro * steps)).backward()
            noise.after_backward([w], (micro * steps) / micro, micro)
        noise.at_update([w])
        w.grad = None
    assert noise.b_simple == pytest.approx(100, rel=0.10)
    assert noise.windows == 300


def test_log_grad_noise_logs_per_epoch_and_recommends_an_effective_batch(tmp_path):
    import csv

    from exp.launch import main

    flags = ["--sim_days", "1", "--step", "32", "--d_model", "16", "--n_heads", "2", "--gaf_size", "8", "--progress", "none",
             "--model", "ResNet1D", "--batch_size", "8", "--gradient_accumulation_steps", "4", "--train_epochs", "2",
             "--log_grad_noise", "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]  # fmt: skip
    assert main(flags) == 0
    (history,) = (tmp_path / "r").rglob("history.csv")
    rows = list(csv.DictReader(history.open()))
    assert [float(r["grad_noise_scale"]) > 0 for r in rows] == [True, True]


def test_log_grad_noise_without_accumulation_is_refused_in_one_line():
    from tests.test_cli import run_cli

    result = run_cli("--log_grad_noise", "--batch_size", "8")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--log_grad_noise" in result.stderr and "needs >= 2 accumulation steps" in result.stderr


def test_a_window_with_an_infinite_gradient_leaves_the_noise_estimate_alone():
    from exp.grad_noise import GradNoiseScale

    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    noise = GradNoiseScale()
    for grads in ([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], [[0.5, 0.0, 0.0], [float("inf"), 0.0, 0.0]]):
        for g in grads:  # the window's sum accumulates in .grad as the trainer's backward does
            w.grad = torch.tensor(g, dtype=torch.float64) + (0 if w.grad is None else w.grad)
            noise.after_backward([w], 2.0, 1)
        noise.at_update([w])
        w.grad = None
        if noise.windows == 1:
            first = (noise.true_sq, noise.trace)
    assert noise.windows == 1 and (noise.true_sq, noise.trace) == first
    # The first window by hand: each backward adds its sample's gradient over the window's 2 samples;
    # x2 gives the micro-batch means e1 and e2 (|.|^2 = 1), the window mean is (e1 + e2) / 2
    # (|.|^2 = 0.5), B_s = 1, B_b = 2: |G|^2 = (2 x 0.5 - 1 x 1) / 1 = 0, tr(S) = (1 - 0.5) / (1 - 1/2) = 1.
    assert first == pytest.approx(((2 * 0.5 - 1 * 1.0) / 1, (1.0 - 0.5) / (1 - 0.5)))
