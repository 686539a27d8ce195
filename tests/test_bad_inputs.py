"""Battery of bad inputs: each exits with code 2 and one line naming the culprit, prints no
traceback, and leaves the output folders exactly as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from config.naming import run_name
from exp.accumulation import plan_accumulation
from exp.launch import main
from tests.conftest import TINY, make_args

GOOD_CSV = "Datetime,a,b,label\n" + "".join(
    f"2024-01-01 {i // 60:02d}:{i % 60:02d},{i % 7},{(i * 3) % 11},{'x' if i < 60 else 'y'}\n" for i in range(120)
)


def csv_file(name: str, text: str):
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["--root_path", str(tmp), "--data_path", name, "--step", "8", "--stride", "4", "--split_block", "1"]

    return make


def ts_files(train: str, test: str):
    def make(tmp: Path) -> list[str]:
        (tmp / "U_TRAIN.ts").write_text(train)
        (tmp / "U_TEST.ts").write_text(test)
        return ["--root_path", str(tmp), "--data_path", "U"]

    return make


def checkpoint(kind: str):
    """A file passed to --resume or used by --is_training 0."""

    def make(tmp: Path) -> list[str]:
        path = tmp / "given.pt"
        if kind == "truncated":
            path.write_bytes(CHECKPOINT.read_bytes()[:2000])
        elif kind == "text":
            path.write_text("this is not a checkpoint\n")
        elif kind == "tensor":
            torch.save(torch.ones(3), path)
        return ["--resume", str(path)]

    return make


def setting(*flags: str) -> str:
    """The run name these flags (after TINY) give."""
    args = make_args(*flags)
    return run_name(args, plan_accumulation(args.batch_size, None, False, None, 1), 0)


def other_model_checkpoint(tmp: Path) -> list[str]:
    flags = ["--is_training", "0", "--model", "ResNet1D"]
    folder = tmp / "out" / "checkpoints" / setting(*flags)
    folder.mkdir(parents=True)
    shutil.copy(CHECKPOINT, folder / "best.pt")  # a GNN checkpoint where a ResNet1D one should be
    return flags


def otherwise_trained_checkpoint(tmp: Path) -> list[str]:
    flags = ["--is_training", "0", "--data", "GNN", "--d_model", "32"]
    folder = tmp / "out" / "checkpoints" / setting(*flags)
    folder.mkdir(parents=True)
    shutil.copy(CHECKPOINT, folder / "best.pt")  # trained with --d_model 16 (TINY)
    return flags


def other_classes_checkpoint(tmp: Path) -> list[str]:
    (tmp / "two.csv").write_text(GOOD_CSV)
    flags = ["--is_training", "0", "--model", "GNN", "--root_path", str(tmp), "--data_path", "two.csv", "--step", "8",
             "--stride", "4", "--split_block", "1"]  # fmt: skip
    folder = tmp / "out" / "checkpoints" / setting(*flags)
    folder.mkdir(parents=True)
    shutil.copy(CHECKPOINT, folder / "best.pt")  # trained on the 8 simulator classes
    return flags


def predict_log(tmp: Path) -> list[str]:
    (tmp / "new.csv").write_text(GOOD_CSV)
    return ["--predict", "--root_path", str(tmp), "--data_path", "new.csv"]


def ensemble_of_other_classes(tmp: Path) -> list[str]:
    state = torch.load(CHECKPOINT, weights_only=True)
    state["deployment"]["class_names"] = [f"class {i}" for i in range(len(state["deployment"]["class_names"]))]
    torch.save(state, tmp / "renamed.pt")  # the same model, its classes named otherwise
    return predict_log(tmp) + ["--checkpoint", f"{CHECKPOINT},{tmp / 'renamed.pt'}"]


def existing_run(tmp: Path) -> list[str]:
    folder = tmp / "out" / "checkpoints" / setting()
    folder.mkdir(parents=True)
    shutil.copy(CHECKPOINT, folder / "best.pt")  # a finished run of the same flags
    return []


def output_is_a_file(flag: str):
    def make(tmp: Path) -> list[str]:
        (tmp / "plain_file").write_text("x")
        return [flag, str(tmp / "plain_file")]

    return make


CASES = {
    # numeric flags out of range: zero, negative, NaN, infinite, absurdly large, not a number
    "batch_size zero": (["--batch_size", "0"], "--batch_size"),
    "batch_size negative": (["--batch_size", "-4"], "--batch_size"),
    "batch_size huge": (["--batch_size", "10000000000"], "--batch_size"),
    "batch_size text": (["--batch_size", "many"], "--batch_size"),
    "steps zero": (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
    "steps huge": (["--gradient_accumulation_steps", "99999999999"], "--gradient_accumulation_steps"),
    "lr zero": (["--learning_rate", "0"], "--learning_rate"),
    "lr negative": (["--learning_rate", "-1e-3"], "--learning_rate"),
    "lr nan": (["--learning_rate", "nan"], "--learning_rate"),
    "lr huge": (["--learning_rate", "1e9"], "--learning_rate"),
    "epochs zero": (["--train_epochs", "0"], "--train_epochs"),
    "step one": (["--step", "1"], "--step"),
    "stride zero": (["--stride", "0"], "--stride"),
    "dropout above one": (["--dropout", "1.5"], "--dropout"),
    "dropout negative": (["--dropout", "-0.1"], "--dropout"),
    "weight decay nan": (["--weight_decay", "nan"], "--weight_decay"),
    "clip negative": (["--max_grad_norm", "-1"], "--max_grad_norm"),
    "clip infinite": (["--max_grad_norm", "inf"], "--max_grad_norm"),
    "patience negative": (["--patience", "-1"], "--patience"),
    "itr zero": (["--itr", "0"], "--itr"),
    "d_model tiny": (["--d_model", "4"], "--d_model"),
    "heads zero": (["--n_heads", "0"], "--n_heads"),
    "gaf size one": (["--gaf_size", "1"], "--gaf_size"),
    "graph threshold above one": (["--graph_threshold", "2"], "--graph_threshold"),
    "seed negative": (["--seed", "-5"], "--seed"),
    "sim days zero": (["--sim_days", "0"], "--sim_days"),
    "workers negative": (["--num_workers", "-1"], "--num_workers"),
    "resident with workers": (["--resident_data", "on", "--num_workers", "2"], "--resident_data"),
    "cuda graphs with accumulation": (["--compile", "reduce-overhead", "--gradient_accumulation_steps", "2"], "--compile reduce-overhead"),
    "lr factor one": (["--lr_factor", "1.5"], "--lr_factor"),
    "split block zero": (["--split_block", "0"], "--split_block"),
    "split fold past the pattern": (["--split_fold", "5"], "--split_fold"),
    "statistics branch of a model without one": (["--model", "Transformer", "--window_stats"], "--window_stats"),
    "split fold of a chronological split": (["--split", "chronological", "--split_fold", "1"], "--split_fold"),
    "bad windows zero": (["--max_bad_windows", "0"], "--max_bad_windows"),
    # conflicting flags
    "auto with explicit steps": (
        ["--enable_auto_gradient_accumulation", "--gradient_accumulation_steps", "2"], "--enable_auto_gradient_accumulation"
    ),
    "model for another format": (["--model", "ResNet1D", "--data", "GNN"], "--model"),
    "heads do not divide width": (["--d_model", "30", "--n_heads", "4"], "--n_heads"),
    "min lr above lr": (["--lr_scheduler", "cosine", "--min_lr", "1"], "--min_lr"),
    "resume without training": (["--is_training", "0", "--resume", "auto"], "--resume"),
    "testing with no checkpoint": (["--is_training", "0"], "--is_training 0"),
    "inventory without data": (["--fault_inventory", "f.csv"], "--fault_inventory"),
    "train stride with a random split": (["--split", "random", "--train_stride", "4"], "--train_stride"),
    "train stride zero": (["--train_stride", "0"], "--train_stride"),
    "target batch zero": (["--target_batch_size", "0"], "--target_batch_size"),
    "target with explicit steps": (["--target_batch_size", "16", "--gradient_accumulation_steps", "2"], "--target_batch_size"),
    "target with auto steps": (["--target_batch_size", "16", "--enable_auto_gradient_accumulation"], "--target_batch_size"),
    "target below one micro-batch": (["--batch_size", "8", "--target_batch_size", "4"], "--target_batch_size 4"),
    "nccl with --device cpu": (["--dist_backend", "nccl", "--device", "cpu"], "--dist_backend"),
    "dist timeout zero": (["--dist_timeout", "0"], "--dist_timeout"),
    "fast_dev_run zero": (["--fast_dev_run", "0"], "--fast_dev_run"),
    "fast_dev_run with resume": (["--fast_dev_run", "--resume", "auto"], "drop --resume"),
    "fast_dev_run when only testing": (["--fast_dev_run", "--is_training", "0"], "drop --is_training"),
    "fast_dev_run with a limit": (["--fast_dev_run", "--limit_train_batches", "3"], "drop --limit_train_batches"),
    "fast_dev_run with dry_run": (["--fast_dev_run", "--dry_run"], "drop --dry_run"),
    "limit train batches zero": (["--limit_train_batches", "0"], "--limit_train_batches"),
    "limit val batches text": (["--limit_val_batches", "few"], "--limit_val_batches"),
    "dry_run with predict": (["--dry_run", "--predict", "--checkpoint", "x.pt", "--data_path", "x.csv"], "--dry_run"),
    # unknown choices
    "unknown model": (["--model", "LSTM"], "--model"),
    "unknown data": (["--data", "Images"], "--data"),
    "unknown loss": (["--loss_preset", "mse"], "--loss_preset"),
    "unknown optimizer": (["--optimizer", "adam"], "--optimizer"),
    "unknown norm": (["--norm", "instance"], "--norm"),
    "unknown device": (["--device", "tpu"], "--device"),
    "model id with a slash": (["--model_id", "../x"], "--model_id"),
    # paths
    "data file missing": (lambda t: ["--root_path", str(t), "--data_path", "nope.csv"], "nope.csv"),
    "data file is a folder": (lambda t: (t / "dir.csv").mkdir() or ["--root_path", str(t), "--data_path", "dir.csv"], "dir.csv"),
    "inventory missing": (lambda t: csv_file("g.csv", GOOD_CSV)(t) + ["--fault_inventory", "none.csv"], "none.csv"),
    "checkpoints is a file": (output_is_a_file("--checkpoints"), "--checkpoints"),
    "results is a file": (output_is_a_file("--results"), "--results"),
    "output under a file": (lambda t: output_is_a_file("--results")(t)[:1] + [str(t / "plain_file" / "sub")], "--results"),
    # CSV content
    "empty csv": (csv_file("e.csv", ""), "e.csv"),
    "header only": (csv_file("h.csv", "Datetime,a,label\n"), "h.csv"),
    "one row": (csv_file("o.csv", "Datetime,a,label\n2024-01-01 00:00,1,x\n"), "o.csv"),
    "text columns only": (csv_file("t.csv", "Datetime,a,label\n2024-01-01 00:00,abc,x\n2024-01-01 00:01,def,y\n"), "no numeric sensor"),
    "one class": (csv_file("c.csv", GOOD_CSV.replace(",y\n", ",x\n")), "one class only"),
    "all-NaN channel": (csv_file("n.csv", "Datetime,a,c,label\n" + "".join(
        f"2024-01-01 {i // 60:02d}:{i % 60:02d},{i % 7},{'' if i % 2 else '#N/A'},{'x' if i < 60 else 'y'}\n" for i in range(120))),
        "column 'c' has no numeric value"),
    "constant channels": (csv_file("k.csv", "Datetime,a,b,label\n" + "".join(
        f"2024-01-01 {i // 60:02d}:{i % 60:02d},1,2,{'x' if i < 60 else 'y'}\n" for i in range(120))), "every sensor column is constant"),
    "window longer than the data": (lambda t: csv_file("w.csv", GOOD_CSV)(t) + ["--step", "500"], "--step 500"),
    "label column missing": (lambda t: csv_file("l.csv", GOOD_CSV)(t) + ["--label_col", "fault"], "--label_col"),
    # CSV as building automation exports it
    "wrong separator": (lambda t: csv_file("s.csv", GOOD_CSV.replace(",", ";"))(t) + ["--csv_sep", "comma"],
                        "it looks semicolon-separated: pass --csv_sep semicolon"),
    "decimal comma with comma separator": (lambda t: csv_file("d.csv", GOOD_CSV)(t) + ["--csv_decimal", "comma"], "--csv_decimal"),
    "unknown separator": (["--csv_sep", "pipe"], "--csv_sep"),
    "conflicting repeated times": (csv_file("r.csv", GOOD_CSV + "2024-01-01 01:59,9,9,y\n"),
                                   "1 row repeats the time of an earlier row with other values (the first at 2024-01-01 01:59:00)"),
    "duplicates without data": (["--duplicates", "first"], "--duplicates"),
    "max_gap without a unit": (["--max_gap", "5"], "--max_gap"),
    "max_gap negative": (["--max_gap", "-5min"], "--max_gap"),
    "max_gap not a duration": (["--max_gap", "soon"], "--max_gap"),
    "max_gap with --missing drop": (lambda t: csv_file("m.csv", GOOD_CSV)(t) + ["--max_gap", "5min", "--missing", "drop"], "--max_gap"),
    "max_gap below the interval": (lambda t: csv_file("b.csv", GOOD_CSV)(t) + ["--max_gap", "30s"],
                                   "--max_gap 30 s is shorter than the sampling interval"),
    # UEA
    "ts dimensions differ": (ts_files("@data\n1,2:3,4:a\n1,2:3,4:b\n", "@data\n1,2:a\n"), "U_TEST.ts"),
    "ts bad value": (ts_files("@data\n1,x:3,4:a\n", "@data\n1,2:3,4:a\n"), "U_TRAIN.ts line 2"),
    "train stride on ready-cut samples": (lambda t: ts_files("@data\n1,2:a\n3,4:b\n" * 3, "@data\n1,2:a\n3,4:b\n")(t)
                                          + ["--train_stride", "1"], "--train_stride"),
    # checkpoints
    "resume truncated": (checkpoint("truncated"), "given.pt"),
    "resume not a checkpoint": (checkpoint("text"), "given.pt"),
    "resume plain tensor": (checkpoint("tensor"), "given.pt"),
    "checkpoint of another model": (other_model_checkpoint, "holds a GNN model"),
    "checkpoint with other classes": (other_classes_checkpoint, "other classes"),
    "checkpoint trained otherwise": (otherwise_trained_checkpoint, "does not fit this model (--d_model 16 there, --d_model 32 here"),
    "temporal with no_temporal": (["--temporal", "resnet", "--no_temporal"], "--no_temporal leaves the temporal branch out"),
    # runs never replace each other
    "the same run again": (existing_run, "already holds best.pt of an earlier run: continue it with --resume auto"),
    "overwrite with resume": (["--overwrite", "--resume", "auto"], "--overwrite"),
    "overwrite when only testing": (["--overwrite", "--is_training", "0"], "--overwrite"),
    "unknown normal class": (["--normal_class", "healthy"], "--normal_class 'healthy' is not a class"),
    # using a trained model
    "predict without a checkpoint": (["--predict", "--data_path", "x.csv"], "--predict"),
    "checkpoint without predict": (["--checkpoint", "x.pt"], "--checkpoint"),
    "predict with export": (["--predict", "--checkpoint", "x.pt", "--data_path", "x.csv", "--export", "onnx"], "--export"),
    "predict with another window": (lambda t: predict_log(t) + ["--checkpoint", str(CHECKPOINT), "--step", "48"], "--step 48"),
    "tsl alias out of range": (["--window_step", "0"], "--window_step"),
    "tsl negative gpu": (["--gpu", "-1"], "--gpu"),
    "predict with a missing checkpoint": (lambda t: predict_log(t) + ["--checkpoint", str(t / "no.pt")], "no.pt"),
    "ensemble without repeats": (["--ensemble", "--itr", "1"], "--ensemble: averages the --itr repeats, and this run has --itr 1"),
    "predict with ensemble": (["--predict", "--checkpoint", "x.pt", "--data_path", "x.csv", "--ensemble"], "--ensemble"),
    "predict with an empty path in the checkpoints": (lambda t: predict_log(t) + ["--checkpoint", f"{CHECKPOINT},"], "an empty path"),
    "predict with a missing ensemble member": (lambda t: predict_log(t) + ["--checkpoint", f"{CHECKPOINT},{t / 'no.pt'}"], "no.pt"),
    "predict with members of other classes": (ensemble_of_other_classes, "renamed.pt differs from"),
    "predict on a log without the trained sensors": (lambda t: predict_log(t) + ["--checkpoint", str(CHECKPOINT)],
                                                     "lacks the sensor column(s) OA_TEMP"),
    # Time-Series-Library command lines
    "abbreviated flag": (["--learning", "0.1"], "--learning"),
    "tsl task not classification": (["--task_name", "imputation"], "--task_name"),
    "tsl lradj without equivalent": (["--lradj", "type3"], "--lradj"),
    "tsl enc_in not the data's": (["--enc_in", "7"], "--enc_in 7"),
    "tsl num_class not the data's": (["--num_class", "2"], "--num_class 2"),
    "single ts file": (["--data_path", "one.ts"], "NAME_TRAIN.ts"),
    "uea without a name": (["--data", "UEA"], "--model_id"),
}  # fmt: skip

CHECKPOINT: Path = Path()


@pytest.fixture(scope="module", autouse=True)
def trained_checkpoint(tmp_path_factory):
    """One real checkpoint (a GNN on the simulator) for the checkpoint cases."""
    global CHECKPOINT
    folder = tmp_path_factory.mktemp("trained")
    flags = [*TINY, "--data", "GNN", "--train_epochs", "1", "--checkpoints", str(folder / "c"), "--results", str(folder / "r")]
    assert main(flags) == 0
    CHECKPOINT = next((folder / "c").rglob("best.pt"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file with its hash and every folder (an empty run folder left behind counts too)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "folder" for p in folder.rglob("*")}


def call(flags: list[str]) -> int:
    try:
        return main(flags)
    except SystemExit as stop:  # argparse stops the process itself
        return stop.code


def test_the_battery_is_large_enough():
    assert len(CASES) >= 55


# Under torchrun (its environment variables, no peer needed: these are refused before any group forms).
TORCHRUN = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
DIST_CASES = {
    "torchrun, nccl with --device cpu": (["--dist_backend", "nccl", "--device", "cpu"], "--device cpu"),
    "torchrun, target below one micro-batch per process": (["--batch_size", "4", "--target_batch_size", "6"],
                                                           "smaller than one micro-batch per process (--batch_size 4 x 2"),
    "torchrun, --device cuda:1": (["--device", "cuda:1"], "--device cuda:1"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_touches_no_output(tmp_path, capsys, name):
    check_refused(tmp_path, capsys, *CASES[name])


@pytest.mark.parametrize("name", list(DIST_CASES))
def test_bad_input_under_torchrun_exits_2_with_one_line(tmp_path, capsys, monkeypatch, name):
    for key, value in TORCHRUN.items():
        monkeypatch.setenv(key, value)
    check_refused(tmp_path, capsys, *DIST_CASES[name])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_nccl_without_cuda_exits_2_with_one_line(tmp_path, capsys):
    check_refused(tmp_path, capsys, ["--dist_backend", "nccl", "--device", "auto"], "--dist_backend nccl: CUDA is not available")


def check_refused(tmp_path, capsys, make, culprit):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "summary.csv").write_text("run,test_macro_f1\nearlier,0.9\n")
    (out / "checkpoints" / "earlier").mkdir(parents=True)
    (out / "checkpoints" / "earlier" / "last.pt").write_bytes(b"an earlier run's checkpoint")
    extra = make(tmp_path) if callable(make) else list(make)
    outputs = ["--checkpoints", str(out / "checkpoints"), "--results", str(out / "results")]
    before = snapshot(out)
    code = call([*TINY, *outputs, *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and culprit in lines[0], err
    assert "Traceback" not in err
    assert snapshot(out) == before  # nothing overwritten, nothing half-written
    os.chmod(tmp_path, 0o755)
