"""Whole runs through exp.launch.main (what run.py runs): every format trains and writes every output file."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from exp.launch import main
from tests.conftest import TINY

PNG = b"\x89PNG\r\n\x1a\n"


def run_main(tmp_path, *flags):
    return main([*TINY, "--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res"), *flags])


def only_run(folder):
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize(
    "data_format, model",
    [("Classification", "ResNet1D"), ("Classification", "Transformer"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")],
)
def test_each_format_trains_one_epoch_and_writes_all_outputs(tmp_path, data_format, model):
    assert (
        run_main(
            tmp_path,
            "--data",
            data_format,
            "--model",
            model,
            "--train_epochs",
            "1",
            "--batch_size",
            "8",
            "--gradient_accumulation_steps",
            "2",
        )
        == 0
    )
    ckpt, res = only_run(tmp_path / "ckpt"), only_run(tmp_path / "res")
    assert ckpt.name == res.name and f"_{model}_{data_format}_sl32_bs8_ga2_" in ckpt.name
    for name in ("last.pt", "best.pt"):
        state = torch.load(ckpt / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "accumulation", "args"} <= set(state)
        assert state["epoch"] == 1 and state["args"]["model"] == model and state["accumulation"]["steps"] == 2
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics["effective_batch_size"] == 16 and metrics["accumulation_steps"] == 2
    assert 0 <= metrics["test_macro_f1"] <= 1 and len(metrics["confusion_matrix"]) == len(metrics["class_names"]) == 8
    assert set(metrics["per_class"]) == set(metrics["class_names"])
    history = list(csv.DictReader(open(res / "history.csv")))
    assert len(history) == 1 and int(history[0]["updates"]) == metrics["optimizer_updates"] > 0
    assert int(history[0]["effective_batch_size"]) == 16
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (res / png).read_bytes()[:8] == PNG
    summary = list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))
    assert len(summary) == 1 and summary[0]["run"] == res.name
    assert not list(tmp_path.rglob("*.tmp"))


def test_is_training_0_tests_the_saved_best_checkpoint(tmp_path):
    flags = ("--data", "Classification", "--model", "Transformer", "--train_epochs", "2")
    assert run_main(tmp_path, *flags) == 0
    res = only_run(tmp_path / "res")
    trained = json.loads((res / "metrics.json").read_text())
    assert run_main(tmp_path, *flags, "--is_training", "0") == 0
    tested = json.loads((res / "metrics.json").read_text())
    assert tested["test_macro_f1"] == trained["test_macro_f1"] and tested["confusion_matrix"] == trained["confusion_matrix"]
    assert tested["optimizer_updates"] == trained["optimizer_updates"]
    assert len(list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))) == 2


def test_folds_of_a_cross_validation_test_disjoint_windows_and_are_told_apart_in_the_summary(tmp_path):
    flags = ("--data", "Classification", "--model", "ResNet1D", "--train_epochs", "1")
    for fold in ("0", "2"):
        assert run_main(tmp_path, *flags, "--split_fold", fold) == 0
    summary = list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))
    assert [row["split_fold"] for row in summary] == ["0", "2"] and summary[0]["run"] != summary[1]["run"]
    tested = [set(pd.read_csv(tmp_path / "res" / row["run"] / "predictions.csv")["window_start"]) for row in summary]
    assert tested[0] and tested[1] and not tested[0] & tested[1]


def test_itr_repeats_with_new_seeds_into_separate_runs_and_ends_with_mean_and_std(tmp_path, capsys):
    assert run_main(tmp_path, "--data", "GNN", "--train_epochs", "1", "--itr", "3", "--seed", "7") == 0
    names = sorted(p.name for p in (tmp_path / "res").iterdir() if p.is_dir())
    assert len(names) == 3 and "_seed7_" in names[0] and names[0].endswith("_Exp_0") and "_seed9_" in names[2]
    accuracy = [json.loads((tmp_path / "res" / n / "metrics.json").read_text())["test_accuracy"] for n in names]
    repeats = json.loads((tmp_path / "res" / names[0] / "repeats.json").read_text())
    assert repeats["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
    assert repeats["test_accuracy"]["std"] == pytest.approx(np.std(accuracy, ddof=1))
    assert repeats["runs"] == names and repeats["seeds"] == [7, 8, 9]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Over 3 repeats (seeds 7..9): accuracy") and f"{np.mean(accuracy):.2%}" in last


def test_log_progress_is_whole_lines_with_the_accumulation_state(tmp_path, capsys):
    assert (
        run_main(
            tmp_path,
            "--data",
            "GNN",
            "--train_epochs",
            "1",
            "--batch_size",
            "4",
            "--gradient_accumulation_steps",
            "2",
            "--progress",
            "log",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("Epoch 1/1 [GA:2]:")]
    assert len(lines) >= 5 and all("Loss=" in line and "Acc=" in line and "GA=" in line for line in lines)
    assert " 100% " in lines[-1]
    assert "micro-batch 4 x 2 accumulation steps = effective batch 8" in out


def test_sweep_script_gathers_every_split_of_the_effective_batch(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHON": sys.executable, "EFFECTIVE": "16", "STEPS": "1 2 4", "MODEL": "GNN", "DATA": "GNN",
           "RESULTS": str(tmp_path / "res"), "CHECKPOINTS": str(tmp_path / "ckpt")}  # fmt: skip
    flags = [*TINY, "--train_epochs", "1", "--dropout", "0"]
    script = str(ROOT / "scripts" / "sweep_accumulation.sh")
    result = subprocess.run(["bash", script, *flags], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))
    assert [(r["batch_size"], r["accumulation_steps"]) for r in rows] == [("16", "1"), ("8", "2"), ("4", "4")]
    assert {r["effective_batch_size"] for r in rows} == {"16"} and len({r["optimizer_updates"] for r in rows}) == 1
    # the same training up to float rounding: the final weights agree
    weights = []
    for run in sorted((tmp_path / "ckpt").iterdir()):
        state = torch.load(run / "last.pt", weights_only=True)["model"]
        weights.append(torch.cat([t.double().flatten() for t in state.values()]))
    assert len(weights) == 3
    for other in weights[1:]:
        assert torch.linalg.norm(other - weights[0]) / torch.linalg.norm(weights[0]) < 1e-5
