"""Time-Series-Library command lines: aliases, translations, ignored flags with a note, refusals,
and a TSL classification script line that trains with only the paths and the model changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from config.flags import build_parser
from config.validation import validate
from exp.launch import main


def parse(*flags: str):
    parser = build_parser()
    argv = list(flags)
    args = parser.parse_args(argv)
    notes = validate(parser, args, argv)
    return args, notes


def refused(capsys, flags: list[str], culprit: str) -> None:
    with pytest.raises(SystemExit) as stop:
        parse(*flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and culprit in err[0], err


def test_no_prefix_matching_so_loss_ce_is_plain_cross_entropy_not_an_abbreviation(capsys):
    args, _ = parse("--loss", "CE")
    assert args.loss_preset == "standard"  # TSL's classification loss, not '--loss_preset CE'
    refused(capsys, ["--loss_pre", "standard"], "--loss_pre")  # a prefix of a flag is not that flag
    refused(capsys, ["--loss", "CE", "--loss_preset", "hard_samples"], "--loss")
    args, notes = parse("--loss", "MSE")
    assert args.loss_preset == "hvac_similar_optimized" and any("--loss MSE ignored" in n for n in notes)


@pytest.mark.parametrize(
    "flags, device",
    [
        (["--use_gpu", "False"], "cpu"),
        (["--no_use_gpu"], "cpu"),
        (["--use_gpu", "True", "--gpu", "1"], "cuda:1"),
        (["--use_gpu"], "auto"),  # TSL: CUDA when available, else the CPU
        (["--gpu_type", "cuda"], "auto"),
        (["--gpu", "0"], "cuda:0"),
        (["--gpu_type", "mps"], "mps"),
        (["--use_multi_gpu", "--devices", "2,3"], "cuda:2"),
    ],
)
def test_tsl_gpu_flags_map_to_device(flags, device):
    args, notes = parse(*flags)
    assert args.device == device
    if "--use_multi_gpu" in flags:
        assert any("torchrun --nproc_per_node 2" in n for n in notes)


def test_aliases_and_schedules():
    args, _ = parse("--seq_len", "48", "--lradj", "cosine", "--use_class_weights", "--window_step", "12")
    assert (args.step, args.lr_scheduler, args.class_weights, args.stride) == (48, "cosine", "balanced", 12)
    args, _ = parse("--lradj", "constant")
    assert args.lr_scheduler == "none"


@pytest.mark.parametrize(
    "flags, culprit",
    [
        (["--task_name", "long_term_forecast"], "--task_name"),
        (["--lradj", "type1"], "--lradj: TSL's type1 schedule has no equivalent here; use --lr_scheduler"),
        (["--seq_len", "48", "--step", "32"], "--seq_len"),
        (["--use_gpu", "maybe"], "--use_gpu"),
        (["--use_gpu", "false", "--device", "cuda"], "--use_gpu"),
        (["--data", "UEA"], "--model_id"),
        (["--data", "UEA", "--data_path", "ahu.csv"], "not --data_path ahu.csv"),
        (["--data_path", "x.ts"], "NAME_TRAIN.ts"),
        (["--model", "TimesNet"], "DualGAFNet"),  # an unknown model lists ours
    ],
)
def test_tsl_refusals_are_one_line(capsys, flags, culprit):
    refused(capsys, flags, culprit)


def test_flags_that_do_not_apply_are_named_in_one_note():
    args, notes = parse("--model", "ResNet1D", "--top_k", "3", "--d_ff", "256", "--features", "M", "--inverse", "--p_hidden_dims",
                        "128", "128", "--embed", "timeF")  # fmt: skip
    (note,) = [n for n in notes if "ignored" in n]
    for flag in ("--top_k", "--d_ff", "--features", "--inverse", "--p_hidden_dims", "--embed"):
        assert flag in note
    _, notes = parse("--model", "Transformer", "--d_ff", "256")
    assert not notes  # the Transformer uses --d_ff


def write_uea(folder: Path, name: str, dims: int = 2, length: int = 24, per_class: int = 8) -> None:
    rng = np.random.default_rng(0)
    for split in ("TRAIN", "TEST"):
        lines = [f"@problemName {name}", f"@dimensions {dims}", "@univariate false", "@classLabel true a b c", "@data"]
        for label, shift in zip("abc", (0.0, 1.0, 2.0)):
            for _ in range(per_class):
                series = shift + rng.normal(size=(dims, length))
                lines.append(":".join(",".join(f"{v:.4f}" for v in dim) for dim in series) + f":{label}")
        (folder / f"{name}_{split}.ts").write_text("\n".join(lines) + "\n")


def test_a_tsl_classification_script_line_trains(tmp_path, capsys):
    write_uea(tmp_path, "Vowels")
    line = f"""--task_name classification --is_training 1 --root_path {tmp_path}/ --model_id Vowels --model Transformer
               --data UEA --e_layers 3 --batch_size 16 --d_model 128 --d_ff 256 --top_k 3 --des Exp --itr 1
               --learning_rate 0.001 --train_epochs 100 --patience 10"""  # scripts/classification/PatchTST.sh, our model
    outputs = ["--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r"), "--progress", "none", "--device", "cpu"]
    assert main([*line.split(), *outputs]) == 0
    out = capsys.readouterr().out
    assert "note: Time-Series-Library flags ignored (they do not apply to these models): --top_k" in out
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    assert run.name.startswith("Vowels_Transformer_Classification_") and run.name.endswith("_Exp_0")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_samples"] == 24 and metrics["source"].startswith("UEA Vowels")
    assert metrics["test_accuracy"] > 0.5  # three well-separated classes


@pytest.mark.parametrize("given", ["Vowels_TRAIN.ts", "Vowels_TEST.ts", "Vowels"])
def test_data_path_to_either_ts_file_loads_the_pair(tmp_path, given):
    from data_provider.data_factory import build_data

    write_uea(tmp_path, "Vowels")
    args, _ = parse("--root_path", str(tmp_path), "--data_path", given, "--model", "ResNet1D")
    data = build_data(args)
    assert (len(data.train) + len(data.val), len(data.test), args.model_id) == (24, 24, "Vowels")


def test_enc_in_and_num_class_are_checked_against_the_data(tmp_path, capsys):
    write_uea(tmp_path, "Vowels")
    base = ["--root_path", str(tmp_path), "--data", "UEA", "--model_id", "Vowels", "--model", "ResNet1D", "--train_epochs", "1",
            "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r"), "--progress", "none"]  # fmt: skip
    for flags, culprit in ((["--enc_in", "3"], "--enc_in 3: "), (["--num_class", "4"], "--num_class 4: ")):
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and culprit in err[0] and "has 2 sensors" in err[0] or "has 3 classes" in err[0]
    assert not (tmp_path / "c").exists()
    assert main([*base, "--enc_in", "2", "--num_class", "3"]) == 0


@pytest.mark.parametrize("flags", [["--d_ff", "128"], ["--data", "Classification", "--d_ff", "128"], ["--model", "GNN", "--d_ff", "8"]])
def test_d_ff_for_a_model_that_has_none_is_a_note_also_before_the_model_is_chosen(flags):
    _, notes = parse(*flags)
    assert notes == ["Time-Series-Library flags ignored (they do not apply to these models): --d_ff"]
    assert parse("--model", "Transformer", "--d_ff", "128")[1] == []
