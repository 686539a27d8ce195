"""Putting a trained model to work: --predict on new logs, --export, and the run-folder rule
(a run never silently replaces another: refusal, --overwrite, the configuration hash, args.json,
summary rows)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exp.inference import load_predictor
from exp.launch import main
from tests.conftest import ROOT, TINY

FORMATS = ("Classification", "DualGAF", "GNN")


def call(flags: list[str]) -> int:
    try:
        return main(flags)
    except SystemExit as stop:
        return stop.code


def outputs(tmp: Path) -> list[str]:
    return ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")]


def run_folder(tmp: Path, kind: str = "res") -> Path:
    (folder,) = [p for p in (tmp / kind).iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run per format on the simulator, and the same table as a CSV log."""
    runs = {}
    for fmt in FORMATS:
        tmp = tmp_path_factory.mktemp(fmt)
        assert call([*TINY, "--data", fmt, "--train_epochs", "1", "--dropout", "0", *outputs(tmp)]) == 0
        runs[fmt] = tmp
    log = tmp_path_factory.mktemp("log")
    assert call([*TINY, "--export_data", str(log / "ahu.csv")]) == 0
    frame = pd.read_csv(log / "ahu.csv")
    frame.drop(columns=["label"]).to_csv(log / "unlabelled.csv", index=False)
    runs["log"] = log
    return runs


def predict(tmp: Path, checkpoint: Path, data: Path, *flags: str) -> int:
    return call(["--predict", "--checkpoint", str(checkpoint), "--root_path", str(data.parent), "--data_path", data.name,
                 "--results", str(tmp / "pred"), "--progress", "none", "--device", "cpu", *flags])  # fmt: skip


# ------------------------------------------------------------------ predict
@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_on_the_exported_log_without_labels_reproduces_the_test_set_predictions(trained, tmp_path, fmt):
    best = run_folder(trained[fmt], "ckpt") / "best.pt"
    assert predict(tmp_path, best, trained["log"] / "unlabelled.csv") == 0
    (out,) = (tmp_path / "pred").rglob("predictions.csv")
    new = pd.read_csv(out)
    test = pd.read_csv(run_folder(trained[fmt]) / "predictions.csv")
    assert "true_class" not in new and list(new.columns) == [c for c in test.columns if c != "true_class"]
    both = test.merge(new, on=["window_start", "window_end"], suffixes=("_test", "_new"))
    assert len(both) == len(test) > 0  # every test window is among the windows of the log
    assert (both["predicted_class_test"] == both["predicted_class_new"]).all()
    np.testing.assert_allclose(both["probability_new"], both["probability_test"], atol=1e-6)
    assert not (out.parent / "metrics.json").exists()  # no labels, no metrics


def test_predict_with_labels_reports_metrics_and_fault_detection_rates(trained, tmp_path, capsys):
    best = run_folder(trained["GNN"], "ckpt") / "best.pt"
    assert predict(tmp_path, best, trained["log"] / "ahu.csv") == 0
    out = capsys.readouterr().out
    (folder,) = [p.parent for p in (tmp_path / "pred").rglob("predictions.csv")]
    table, metrics = pd.read_csv(folder / "predictions.csv"), json.loads((folder / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx((table["true_class"] == table["predicted_class"]).mean())
    normal = table["true_class"] == "normal"
    flagged = table["predicted_class"] != "normal"
    fdd = metrics["fault_detection"]
    assert fdd["false_alarm_rate"] == pytest.approx((normal & flagged).sum() / normal.sum())
    assert fdd["detection_rate"] == pytest.approx((~normal & flagged).sum() / (~normal).sum())
    assert "False-alarm rate" in out and "Confusion matrix" in out


def test_probabilities_and_top3_are_consistent(trained, tmp_path):
    best = run_folder(trained["DualGAF"], "ckpt") / "best.pt"
    assert predict(tmp_path, best, trained["log"] / "unlabelled.csv") == 0
    (out,) = (tmp_path / "pred").rglob("predictions.csv")
    table = pd.read_csv(out)
    assert (table["probability"] >= table["top2_probability"]).all() and (table["top2_probability"] >= table["top3_probability"]).all()
    assert (table["predicted_class"] != table["top2_class"]).all()
    starts, ends = pd.to_datetime(table["window_start"]), pd.to_datetime(table["window_end"])
    assert ((ends - starts) == pd.Timedelta(minutes=31)).all()  # 32 rows a minute apart


def test_predict_with_several_checkpoints_averages_their_probabilities(trained, tmp_path, capsys):
    """An ensemble of the three formats' models (each with its own input format, the same sensors and
    classes): the table's class and probability are those of the mean of each model's own probabilities."""
    paths = [run_folder(trained[fmt], "ckpt") / "best.pt" for fmt in FORMATS]
    log = trained["log"] / "unlabelled.csv"
    assert predict(tmp_path, ",".join(str(p) for p in paths), log) == 0
    assert "the mean probabilities of 3 checkpoints" in capsys.readouterr().out
    (out,) = (tmp_path / "pred").rglob("predictions.csv")
    assert out.parent.name == "predict_unlabelled_ensemble_of_3"
    table, frame = pd.read_csv(out), pd.read_csv(log)
    row_of = {time: i for i, time in enumerate(pd.to_datetime(frame["Datetime"]))}
    members = []
    for path in paths:
        predictor, state = load_predictor(path, torch.device("cpu"))
        deployment = state["deployment"]
        values = frame[deployment["channels"]].to_numpy(dtype=np.float64)
        starts = np.array([row_of[t] for t in pd.to_datetime(table["window_start"])])
        windows = torch.as_tensor(values[starts[:, None] + np.arange(deployment["window"])])
        with torch.no_grad():
            members.append(predictor(windows).numpy())
    mean = np.mean(members, axis=0)
    names = np.array(deployment["class_names"])
    assert (table["predicted_class"] == names[mean.argmax(1)]).all()
    np.testing.assert_allclose(table["probability"], mean.max(1), atol=1e-6)
    assert not all((m.argmax(1) == mean.argmax(1)).all() for m in members)  # the mean is not just one member's answer


def refuse(capsys, tmp_path, code: int, culprit: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and culprit in lines[0], err
    assert not (tmp_path / "pred").exists()  # nothing written


@pytest.mark.parametrize(
    "change, culprit",
    [
        (lambda f: f.drop(columns=["SA_TEMP"]), "lacks the sensor column(s) SA_TEMP"),
        (lambda f: f.assign(EXTRA=1.0), "EXTRA that the model was not trained on"),
        (lambda f: f.iloc[::5], "sampled every 300 s, the model was trained on data sampled every 60 s"),
        (lambda f: f.iloc[:20], "longer than every stretch of the file"),
    ],
    ids=["missing sensor", "extra sensor", "other interval", "window longer than the file"],
)
def test_predict_refuses_a_log_that_does_not_fit_the_model(trained, tmp_path, capsys, change, culprit):
    frame = change(pd.read_csv(trained["log"] / "unlabelled.csv"))
    frame.to_csv(tmp_path / "new.csv", index=False)
    code = predict(tmp_path, run_folder(trained["GNN"], "ckpt") / "best.pt", tmp_path / "new.csv")
    refuse(capsys, tmp_path, code, culprit)


def test_testing_a_checkpoint_on_a_log_sampled_otherwise_is_refused(trained, tmp_path, capsys):
    (tmp_path / "log").mkdir()
    frame = pd.read_csv(trained["log"] / "ahu.csv")
    frame.to_csv(tmp_path / "log" / "ahu.csv", index=False)
    flags = [*TINY, "--data", "GNN", "--root_path", str(tmp_path / "log"), "--data_path", "ahu.csv", "--train_epochs", "1",
             *outputs(tmp_path)]  # fmt: skip
    assert call(flags) == 0
    frame["Datetime"] = pd.date_range(frame["Datetime"].iloc[0], periods=len(frame), freq="2min")  # re-exported every 2 min
    frame.to_csv(tmp_path / "log" / "ahu.csv", index=False)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = call([*flags, "--is_training", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is sampled every 120 s, the model was trained on data sampled every 60 s" in err[0]
    assert snapshot(tmp_path) == before


def test_predict_refuses_a_checkpoint_without_deployment_settings(trained, tmp_path, capsys):
    state = torch.load(run_folder(trained["GNN"], "ckpt") / "best.pt", weights_only=True)
    del state["deployment"]
    torch.save(state, tmp_path / "old.pt")
    code = predict(tmp_path, tmp_path / "old.pt", trained["log"] / "unlabelled.csv")
    refuse(capsys, tmp_path, code, "older version without the scaler")


def test_checkpoint_carries_what_applying_the_model_needs(trained):
    state = torch.load(run_folder(trained["GNN"], "ckpt") / "best.pt", weights_only=True)
    deployment = state["deployment"]
    assert deployment["window"] == 32 and deployment["stride"] == 16 and deployment["interval_s"] == 60.0
    assert deployment["channels"][0] == "OA_TEMP" and deployment["class_names"][0] == "normal"
    assert deployment["adjacency"].shape == (13, 13) and set(deployment["scaler"]) == {"center", "width", "gain", "bias"}


# ------------------------------------------------------------------- export
def exported_outputs(path: Path, windows: np.ndarray) -> np.ndarray:
    if path.suffix == ".ts":
        with torch.no_grad():
            return torch.jit.load(str(path))(torch.as_tensor(windows)).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"windows": windows})[0]


def raw_test_windows(trained, fmt: str, n: int) -> tuple[np.ndarray, Path]:
    """The first n test windows of a run, in sensor units, read from the exported log by their times."""
    folder = run_folder(trained[fmt])
    starts = pd.read_csv(folder / "predictions.csv")["window_start"][:n]
    log = pd.read_csv(trained["log"] / "unlabelled.csv")
    first = log.index[log["Datetime"].isin(pd.to_datetime(starts).dt.strftime("%Y-%m-%d %H:%M"))].to_numpy()
    values = log.drop(columns=["Datetime"]).to_numpy(np.float32)
    return values[first[:, None] + np.arange(32)], folder


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: still what LibTorch loads
@pytest.mark.parametrize("fmt, kind", [(f, "torchscript") for f in FORMATS] + [("DualGAF", "onnx")])
def test_exported_model_gives_the_outputs_of_the_pytorch_model(trained, fmt, kind):
    if kind == "onnx":
        pytest.importorskip("onnxruntime", reason="requirements-dev.txt installs onnx, onnxscript and onnxruntime")
    assert call([*TINY, "--data", fmt, "--train_epochs", "1", "--dropout", "0", *outputs(trained[fmt]), "--is_training", "0",
                 "--export", kind]) == 0  # fmt: skip
    ckpt = run_folder(trained[fmt], "ckpt")
    path = ckpt / ("model.ts" if kind == "torchscript" else "model.onnx")
    windows, results = raw_test_windows(trained, fmt, 5)  # another batch size than the one traced
    predictor, _ = load_predictor(ckpt / "best.pt", torch.device("cpu"))
    with torch.no_grad():
        expected = predictor(torch.as_tensor(windows)).numpy()
    np.testing.assert_allclose(exported_outputs(path, windows), expected, atol=1e-4)
    test_probability = pd.read_csv(results / "predictions.csv")["probability"][:5].to_numpy()
    np.testing.assert_allclose(expected.max(1), test_probability, atol=1e-4)  # the model that was tested
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["window"] == 32 and len(card["channels"]) == 13 and len(card["class_names"]) == 8


def test_export_onnx_without_the_package_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    code = call([*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path), "--export", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install onnx onnxscript" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "res").exists()


# -------------------------------------------------------------- run folders
def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_the_same_command_twice_is_refused_and_changes_nothing(tmp_path, capsys):
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path)]
    assert call(flags) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = call(flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(run_folder(tmp_path, "ckpt")) in err[0] and all(hint in err[0] for hint in ("--resume auto", "--des", "--overwrite"))
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_earlier_run(tmp_path):
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path)]
    assert call(flags) == 0
    stale = run_folder(tmp_path, "ckpt") / "model.ts"
    stale.write_bytes(b"an export of the earlier model")
    first = (run_folder(tmp_path) / "args.json").read_text()
    assert call([*flags, "--overwrite"]) == 0
    assert not stale.exists() and (run_folder(tmp_path, "ckpt") / "best.pt").is_file()
    assert json.loads((run_folder(tmp_path) / "args.json").read_text())["created"] >= json.loads(first)["created"]
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert len(rows) == 2 and rows[0]["run"] == rows[1]["run"]  # the summary keeps the history of both


def test_resume_auto_continues_a_finished_run_instead_of_being_refused(tmp_path):
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path)]
    assert call(flags) == 0
    assert call([*flags, "--resume", "auto"]) == 0
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert [r["phase"] for r in rows] == ["train", "test"]  # the finished run was only tested again
    record = json.loads((run_folder(tmp_path) / "args.json").read_text())
    assert len(record["resumes"]) == 1 and record["created"] <= record["resumes"][0]["created"]  # the first record is kept


def test_resume_auto_without_last_pt_does_not_replace_an_earlier_run(tmp_path, capsys):
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path)]
    assert call(flags) == 0
    (run_folder(tmp_path, "ckpt") / "last.pt").unlink()  # best.pt and the results stay
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert call([*flags, "--resume", "auto"]) == 2
    assert "already holds best.pt" in capsys.readouterr().err and snapshot(tmp_path) == before


def name_for(*flags: str) -> str:
    """Run name in a fresh Python process with its own hash seed (stability across sessions)."""
    code = (
        "import sys; from config.flags import build_parser; from config.validation import validate; "
        "from config.naming import run_name; "
        "from exp.accumulation import plan_accumulation; p = build_parser(); a = p.parse_args(sys.argv[1:]); validate(p, a); "
        "print(run_name(a, plan_accumulation(a.batch_size, a.gradient_accumulation_steps, False, None, 1), 0))"
    )
    env = {**os.environ, "PYTHONHASHSEED": str(len(flags) * 7919 % 1000)}
    return subprocess.run([sys.executable, "-c", code, *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()  # fmt: skip


def test_configurations_that_differ_in_an_unnamed_flag_get_their_own_folder_stable_across_sessions():
    base = name_for()
    assert base == "ahu_DualGAFNet_DualGAF_sl96_bs32_ga1_lr0.002_hvac_similar_optimized_seed2021_Exp_0"  # defaults: no hash
    others = {flag: name_for(*flag.split()) for flag in (
        "--norm group", "--d_model 32", "--dropout 0.2", "--optimizer adamw", "--lr_scheduler plateau", "--train_epochs 5",
        "--cross_epoch_accumulation", "--dtype float64", "--class_weights balanced",
    )}  # fmt: skip
    assert len(set(others.values()) | {base}) == len(others) + 1
    for name in others.values():
        assert name.startswith("ahu_DualGAFNet_DualGAF_sl96_bs32_ga1_lr0.002_hvac_similar_optimized_seed2021_h")
        assert name.endswith("_Exp_0") and len(name.split("_h")[-1].split("_")[0]) == 6
    assert name_for("--dropout", "0.2") == others["--dropout 0.2"]  # the same in another session
    assert name_for("--stride", "48") == base and name_for("--dropout", "0.10") == base  # the default value, spelled out
    assert name_for("--device", "cpu", "--num_workers", "1") == base  # how a run executes does not change its recipe


def test_args_json_and_summary_rows_say_how_and_when(tmp_path):
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", "--dropout", "0.2", *outputs(tmp_path)]
    assert call(flags) == 0
    record = json.loads((run_folder(tmp_path) / "args.json").read_text())
    assert record["args"]["dropout"] == 0.2 and record["args"]["data"] == "GNN" and record["torch"] == torch.__version__
    assert set(record["args"]) >= {"learning_rate", "batch_size", "seed", "norm", "checkpoints"}
    assert record["git"] is None or len(record["git"]["commit"]) == 40
    assert call([*flags, "--is_training", "0"]) == 0
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert [r["phase"] for r in rows] == ["train", "test"] and rows[0]["finished"] <= rows[1]["finished"]
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]  # the same best.pt tested twice


def test_a_summary_from_an_older_version_gains_the_new_columns(tmp_path):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "summary.csv").write_text("run,test_accuracy\nolder_run,0.5\n")
    assert call([*TINY, "--data", "GNN", "--train_epochs", "1", *outputs(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert rows[0]["run"] == "older_run" and rows[0]["test_accuracy"] == "0.5" and rows[0]["phase"] == ""
    assert rows[1]["phase"] == "train" and rows[1]["false_alarm_rate"] != ""


def test_predict_reads_the_log_with_the_training_columns_unless_told_otherwise(trained, tmp_path):
    frame = pd.read_csv(trained["log"] / "ahu.csv").rename(columns={"Datetime": "ts", "label": "fault"})
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", "--root_path", str(tmp_path), "--data_path", "renamed.csv",
             "--label_col", "fault", "--time_col", "ts", *outputs(tmp_path)]  # fmt: skip
    assert call(flags) == 0
    assert predict(tmp_path, run_folder(tmp_path, "ckpt") / "best.pt", tmp_path / "renamed.csv") == 0  # no column flags
    (folder,) = [p.parent for p in (tmp_path / "pred").rglob("predictions.csv")]
    table = pd.read_csv(folder / "predictions.csv")
    assert (folder / "metrics.json").is_file() and table["true_class"].notna().all()  # 'fault' read as the labels
    assert table["window_start"].str.startswith("20").all()  # 'ts' read as the time column
