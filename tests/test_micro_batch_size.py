"""--batch_size auto: the micro-batch from a memory budget, the steps that keep the target."""

import copy
import csv
import json
import math
import types
from contextlib import nullcontext

import pytest
import torch

from exp.accumulation import plan_accumulation
from exp.micro_batch import MiB, MicroBatchSizer, for_target, largest_fitting, saved_bytes
from tests.conftest import TINY, flat_params, make_args, subset
from tests.test_adaptive_batch import EXACT, new_exp, relative_difference
from tests.test_cli import run_cli
from utils.errors import UserError


@pytest.fixture(scope="module")
def data():
    from data_provider.data_factory import build_data

    bundle = copy.copy(build_data(make_args(*EXACT)))
    bundle.train = subset(bundle.train, 45)
    return bundle


@pytest.mark.parametrize("limit", [1, 5, 37, 64, 100])
@pytest.mark.parametrize("guess", [1, 10, 64, 500])
def test_bisection_finds_the_largest_size_that_fits_in_few_probes(limit, guess):
    probes = []

    def fits(size):
        probes.append(size)
        return size <= limit

    assert largest_fitting(64, guess, fits) == min(limit, 64)
    assert len(probes) <= math.ceil(math.log2(64)) + 2 and max(probes) <= 64


def test_bisection_reports_nothing_when_one_window_does_not_fit():
    assert largest_fitting(64, 8, lambda size: False) == 0


@pytest.mark.parametrize("largest, share, chosen", [
    (100, 64, 64),  # the whole share fits: one step
    (48, 64, 32),  # a divisor of the share, not less than half of what fits: the target is met exactly
    (40, 96, 32),
    (40, 97, 40),  # 97 is prime: a divisor would be 1, so the largest that fits (target rounded up)
    (40, None, 40),  # the target does not split evenly over the processes
    (1, 64, 1),
])  # fmt: skip
def test_the_chosen_micro_batch_meets_the_target_exactly_when_that_costs_at_most_half(largest, share, chosen):
    assert for_target(largest, share) == chosen


def test_auto_plans_the_whole_share_until_measured_and_needs_a_target():
    plan = plan_accumulation("auto", None, False, 96, 2)
    assert (plan.batch_size, plan.steps, plan.world_size, plan.sizing) == (48, 1, 2, "auto")
    sized = plan_accumulation(20, None, False, 96, 2, sizing="measured")
    assert (sized.batch_size, sized.steps, sized.effective_batch_size) == (20, 3, 120)  # ceil(96 / 40): rounded up, as noted
    assert "rounded up to 3" in sized.note()
    with pytest.raises(UserError, match="--batch_size auto: needs --target_batch_size"):
        plan_accumulation("auto", None, False, None, 1)
    with pytest.raises(UserError, match="--target_batch_size 3 is smaller than one micro-batch per process"):
        plan_accumulation("auto", None, False, 3, 4)


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "auto"], "--batch_size auto: needs --target_batch_size N"),
    (["--max_memory_mb", "100"], "--max_memory_mb: sets the memory budget of --batch_size auto"),
    (["--max_memory_fraction", "0.5", "--batch_size", "8"], "--max_memory_fraction: sets the memory budget of --batch_size auto"),
    (["--batch_size", "auto", "--target_batch_size", "32", "--max_memory_fraction", "0"], "--max_memory_fraction: must be > 0.0"),
    (["--batch_size", "automatic"], "--batch_size: expected an integer, got 'automatic'"),
])  # fmt: skip
def test_bad_auto_flags_are_one_line_errors(flags, message):
    result = run_cli(*flags)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_the_estimate_counts_the_bytes_autograd_keeps_per_window():
    """Linear(10 -> 20) keeps its input (10 floats a window) for the weight's gradient and ReLU
    its output (20): 120 bytes a window in float32 (the weight is not kept: the input needs no gradient)."""
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU())
    batch = lambda n: types.SimpleNamespace(inputs=lambda: (torch.randn(n, 10),))  # noqa: E731
    kept = {n: saved_bytes(model, batch(n), nullcontext) for n in (2, 4, 8)}
    assert kept == {2: 2 * 120, 4: 4 * 120, 8: 8 * 120}


def sizer_numbers(exp):
    """Per-window estimate and fixed bytes that the run's sizer measures, for choosing budgets."""
    args = make_args(*EXACT, "--batch_size", "auto", "--target_batch_size", "48")
    sizer = MicroBatchSizer(exp.bare_model, exp.data.train, exp.device, exp._autocast, args, cap=48)
    with torch.random.fork_rng():
        return sizer.per_window_estimate(), sizer.state


def test_cpu_budget_chooses_the_micro_batch_and_the_steps_and_reports_them(tmp_path, data):
    probe = new_exp(tmp_path / "probe", data, "--batch_size", "4")
    per_window, state = sizer_numbers(probe)
    assert per_window > 0 and state == 2 * sum(p.numel() * 8 for p in probe.bare_model.parameters())  # SGD: gradient + momentum
    budget_mb = math.ceil((state + 10.5 * per_window) / MiB)
    fits = min(48, math.floor((budget_mb * MiB - state) / per_window))
    exp = new_exp(tmp_path / "auto", data, "--batch_size", "auto", "--target_batch_size", "48", "--max_memory_mb", str(budget_mb))
    assert exp.plan.batch_size == for_target(fits, 48) and exp.plan.effective_batch_size == 48
    assert exp.plan.steps == 48 // exp.plan.batch_size and exp.plan.sizing.startswith("--batch_size auto, estimated")
    assert f"--max_memory_mb {budget_mb}" in exp.describe()
    exp.train("run")
    metrics = exp.test("run")
    assert metrics["batch_size"] == exp.plan.batch_size and metrics["accumulation_steps"] == exp.plan.steps
    assert metrics["micro_batch_sizing"] == exp.plan.sizing
    written = json.loads((tmp_path / "auto" / "res" / "run" / "metrics.json").read_text())
    assert written["micro_batch_sizing"] == exp.plan.sizing and written["batch_size"] == exp.plan.batch_size
    rows = list(csv.DictReader((tmp_path / "auto" / "res" / "run" / "history.csv").open()))
    assert [int(r["batch_size"]) for r in rows] == [exp.plan.batch_size] * 2
    # The same micro-batch given by hand trains the same weights: the sizing left no trace.
    by_hand = new_exp(tmp_path / "hand", data, "--batch_size", str(exp.plan.batch_size), "--target_batch_size", "48")
    by_hand.train("run")
    assert relative_difference(flat_params(exp.model), flat_params(by_hand.model)) < 1e-12


def test_a_budget_below_one_window_is_a_one_line_error(tmp_path):
    result = run_cli(*TINY, "--d_model", "512", "--batch_size", "auto", "--target_batch_size", "32", "--max_memory_mb", "1",
                     "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--batch_size auto: one window needs about" in result.stderr and "--max_memory_mb 1 (1 MiB)" in result.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt"))


def test_a_resumed_auto_run_keeps_its_micro_batch_when_the_budget_changed(tmp_path, capsys):
    import exp.trainer
    from exp.launch import main

    common = ["--sim_days", "1", "--step", "32", "--d_model", "16", "--n_heads", "2", "--progress", "none", "--model", "ResNet1D",
              "--dtype", "float64", "--dropout", "0", "--batch_size", "auto", "--target_batch_size", "32", "--train_epochs", "2",
              "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]  # fmt: skip
    real = exp.trainer.Trainer._micro_step
    count = {"n": 0}

    def stop_at_micro_step_5(self, batch, step):
        count["n"] += 1
        if count["n"] == 5:
            self.stop.signum = 2
        return real(self, batch, step)

    exp.trainer.Trainer._micro_step = stop_at_micro_step_5
    try:
        assert main([*common, "--max_memory_mb", "2"]) == 130
    finally:
        exp.trainer.Trainer._micro_step = real
    first = capsys.readouterr().out
    chosen = int(first.split("Micro-batch ")[1].split(" ")[0])
    assert chosen < 32  # the small budget split the target into several steps
    assert main([*common, "--max_memory_mb", "4000", "--resume", "auto"]) == 0  # a budget that would fit the whole target
    out = capsys.readouterr().out
    assert f"Micro-batch {chosen} chosen by --batch_size auto, kept from" in out
    (metrics,) = (tmp_path / "r").rglob("metrics.json")
    assert json.loads(metrics.read_text())["batch_size"] == chosen
