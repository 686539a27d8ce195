"""Checking a configuration without a full run: --fast_dev_run, --limit_train_batches /
--limit_val_batches, --dry_run and scripts/ci_smoke.sh."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from data_provider.data_factory import build_data
from data_provider.sampler import EpochBatchSampler
from exp.launch import main
from tests.conftest import ROOT, TINY, make_args

MICRO_BATCH = 32  # run.py's --batch_size default, which TINY keeps
TINY_SPLITS = {"train": 384, "val": 96, "test": 96}  # windows of the TINY built-in data


def call(flags: list[str]) -> int:
    try:
        return main(flags)
    except SystemExit as stop:
        return stop.code


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def outputs(tmp: Path) -> list[str]:
    return ["--results", str(tmp / "res"), "--checkpoints", str(tmp / "ckpt")]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """The working folder and the temporary-file folder inside tmp_path: every file a run writes shows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def test_the_tiny_splits_are_as_these_tests_assume():
    data = build_data(make_args())
    assert {name: len(getattr(data, name)) for name in TINY_SPLITS} == TINY_SPLITS


# ------------------------------------------------------------------ --fast_dev_run
def test_fast_dev_run_writes_only_into_a_temporary_folder_that_it_removes(isolated, capsys):
    assert call([*TINY, "--fast_dev_run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("smoke run passed: 2 micro-batches x 1 epoch(s) -> 2 optimizer update(s) (2 windows of 1)")
    assert "checkpoints saved and reloaded (best.pt tested, last.pt resumable)" in line and "summary row" in line
    assert f"in {isolated / 'tmp' / 'fast_dev_run_'}" in line and line.endswith(", removed now)")
    assert snapshot(isolated) == {} and not list((isolated / "tmp").glob("fast_dev_run_*"))  # nothing left anywhere


@pytest.mark.parametrize(
    "n, steps, extra, micro_batches, updates",
    [
        (None, 1, (), 2, 2),  # default N: the steps, at least 2
        (None, 3, (), 3, 1),  # default N = the steps: one full window
        ("4", 3, (), 4, 2),  # a full window and a flushed one of 1
        ("7", 2, (), 7, 4),  # 3 full windows and a flushed one of 1
        ("5", 2, ("--train_epochs", "2"), 5, 6),  # 3 windows in each epoch, the last flushed
        ("4", 3, ("--cross_epoch_accumulation", "--train_epochs", "2"), 4, 3),  # 8 micro-batches: 3, 3 across the epoch end, 2
    ],
)
def test_fast_dev_run_makes_the_updates_of_n_micro_batches_and_the_steps(tmp_path, capsys, n, steps, extra, micro_batches, updates):
    flags = [*TINY, "--fast_dev_run", *([n] if n else []), "--gradient_accumulation_steps", str(steps), *extra, *outputs(tmp_path)]
    assert call(flags) == 0
    (run,) = [p for p in (tmp_path / "res").iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    history = rows(run / "history.csv")
    epochs = 2 if "--train_epochs" in extra else 1
    assert metrics["optimizer_updates"] == updates and metrics["epochs_run"] == epochs == len(history)
    assert [int(row["micro_batches"]) for row in history] == [micro_batches] * epochs
    evaluated = {name: min(micro_batches * MICRO_BATCH, TINY_SPLITS[name]) for name in ("val", "test")}  # N batches of the micro-batch
    assert metrics["test_samples"] == evaluated["test"]
    assert f"validated and tested on {evaluated['val']} and {evaluated['test']} windows" in capsys.readouterr().out
    assert len(rows(run / "predictions.csv")) == metrics["test_samples"]
    assert rows(tmp_path / "res" / "summary.csv")[-1]["run"] == run.name  # given folders are kept


def test_fast_dev_run_fails_with_the_usual_one_line_error_and_leaves_nothing(isolated, capsys):
    (isolated / "plain_file").write_text("x")
    code = call([*TINY, "--fast_dev_run", "--results", str(isolated / "plain_file" / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--results" in err[0]
    assert snapshot(isolated) == {"plain_file": hashlib.sha1(b"x").hexdigest()} and not list((isolated / "tmp").glob("fast_dev_run_*"))


def test_fast_dev_run_reports_an_output_that_does_not_read_back(isolated, capsys, monkeypatch):
    import utils.plots

    monkeypatch.setattr(utils.plots, "plot_confusion_matrix", lambda matrix, names, path, title: Path(path).write_text("no image"))
    code = call([*TINY, "--fast_dev_run"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "smoke run failed: confusion_matrix.png is not a PNG image" in err[0]
    assert "smoke run passed" not in captured.out
    assert snapshot(isolated) == {}  # the temporary folder is removed after a failure too


# ------------------------------------------------------------------ --limit_*_batches
@pytest.mark.parametrize("cross, per_epoch", [(False, [3, 3]), (True, [2, 3])])
def test_limit_train_batches_sizes_the_windows_and_the_schedule_from_the_limit(tmp_path, cross, per_epoch):
    """5 micro-batches per epoch in windows of 2: flushed, ceil(5/2) = 3 updates per epoch;
    across epochs, ceil(10/2) = 5 updates, 2 of them ending in the first epoch. The cosine
    schedule spans exactly those updates, so it reaches --min_lr 0 at the last one."""
    flags = [*TINY, "--limit_train_batches", "5", "--gradient_accumulation_steps", "2", "--train_epochs", "2", "--lr_scheduler",
             "cosine", "--learning_rate", "0.01", "--patience", "5", *outputs(tmp_path)]  # fmt: skip
    assert call([*flags, *(["--cross_epoch_accumulation"] if cross else [])]) == 0
    (run,) = [p for p in (tmp_path / "res").iterdir() if p.is_dir()]
    history = rows(run / "history.csv")
    assert [int(row["micro_batches"]) for row in history] == [5, 5]
    assert [int(row["updates"]) for row in history] == per_epoch
    total, done = sum(per_epoch), np.cumsum(per_epoch)
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * d / total)) for d in done]
    np.testing.assert_allclose([float(row["lr"]) for row in history], expected, rtol=1e-5, atol=1e-12)


def test_a_limit_keeps_the_first_batches_of_each_epoch_and_accumulation_sees_the_large_batches():
    full = EpochBatchSampler(100, 8, True, seed=3)
    limited = EpochBatchSampler(100, 8, True, seed=3, limit=5)
    for epoch in (0, 1):
        assert [b.tolist() for b in limited.batches(epoch)] == [b.tolist() for b in full.batches(epoch)[:5]]
    assert len(limited) == limited.batches_per_epoch == 5
    small = EpochBatchSampler(100, 4, True, seed=3, limit=10)  # micro-batch 4 x 2 steps: the same windows
    pairs = [np.concatenate(small.batches(0)[i : i + 2]).tolist() for i in range(0, 10, 2)]
    assert pairs == [b.tolist() for b in limited.batches(0)]
    limited.resize(4)  # out-of-memory recovery keeps the limited samples
    assert np.concatenate(limited.batches(0)).tolist() == np.concatenate(full.batches(0)[:5]).tolist()


def test_an_evaluation_limit_keeps_windows_spread_over_the_split():
    data = build_data(make_args())
    limited = data.evaluated_on(12, None)
    pick = np.linspace(0, len(data.val) - 1, 12).round().astype(int)
    np.testing.assert_array_equal(limited.val.starts, data.val.starts[pick])
    np.testing.assert_array_equal(limited.val[np.arange(12)].labels, data.val[pick].labels)
    assert set(limited.val.labels) == set(data.val.labels)  # every class keeps a share
    assert limited.test is data.test and limited.train is data.train


# ------------------------------------------------------------------ --dry_run
def test_dry_run_prints_the_plan_and_writes_nothing(isolated, capsys):
    assert call([*TINY, "--dry_run", "--batch_size", "8", "--gradient_accumulation_steps", "3", "--train_epochs", "4"]) == 0
    out = capsys.readouterr().out
    updates = 4 * math.ceil(math.ceil(TINY_SPLITS["train"] / 8) / 3)  # 48 micro-batches per epoch in windows of 3
    for piece in ("(--dry_run: nothing is trained or written)", f"{TINY_SPLITS['train']} train", "parameters", "Loss preset",
                  "Optimizer radam", "micro-batch 8 x 3 accumulation steps = effective batch 24",
                  f"Schedule: 4 epoch(s), {updates} optimizer updates", "Memory: about", "does not exist yet"):  # fmt: skip
        assert piece in out, piece
    assert ">>> training" not in out and "Epoch 1" not in out
    assert snapshot(isolated) == {} and not list((isolated / "tmp").glob("fast_dev_run_*"))


def test_dry_run_of_a_finished_run_says_training_would_stop_there(tmp_path, capsys):
    assert call([*TINY, "--fast_dev_run", *outputs(tmp_path)]) == 0  # one epoch: the run name of --train_epochs 1
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert call([*TINY, "--train_epochs", "1", "--dry_run", *outputs(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "exists, holding best.pt, last.pt" in out and "warning: training would stop here: run folder" in out
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ scripts/ci_smoke.sh
def smoke_script(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", "scripts/ci_smoke.sh", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_ci_smoke_script_passes_every_format_and_accumulation_setup():
    done = smoke_script()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("ci_smoke: 9 of 9 smoke runs passed in ")
    assert sum(line.startswith("ok ") for line in lines) == 9
    for setup in ("(2 windows of 1)", "(1 window of 3 + 1 flushed of 1)", "(2 windows of 3 + 1 flushed of 2)"):
        assert sum(setup in line for line in lines) == 3, setup


def test_ci_smoke_script_fails_when_a_run_fails():
    done = smoke_script("--batch_size", "0")
    lines = done.stdout.strip().splitlines()
    assert done.returncode != 0 and lines[-1].startswith("ci_smoke: 0 of 9 smoke runs passed")
    assert all(line.startswith("FAIL ") and "exit 2: run.py: error: argument --batch_size" in line for line in lines[:-1])
