"""run.py from the shell: bad arguments are refused in one line with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run_cli(*flags, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *flags], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("flags, culprit", [
    (["--batch_size", "0"], "--batch_size"),
    (["--batch_size", "-3"], "--batch_size"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
    (["--model", "LSTMNet"], "--model"),
    (["--model", "ResNet1D", "--data", "DualGAF"], "--model"),
    (["--model", "DualGAFNet", "--data", "GNN"], "--model"),
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--dropout", "1.5"], "--dropout"),
    (["--d_model", "30", "--n_heads", "4"], "--n_heads"),
    (["--device", "gpu0"], "--device"),
    (["--model_id", "a/b"], "--model_id"),
    (["--export_data", ""], "--export_data"),
    (["--resume", "x.pt", "--itr", "2"], "--resume"),
    (["--model", "GNN", "--window_stats", "--time_col", "t"], "--time_col"),  # the checks' order, as before config/
])  # fmt: skip
def test_bad_arguments_exit_2_with_one_line_naming_the_flag(flags, culprit):
    result = run_cli(*flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_input_found_after_parsing_is_also_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--data_path", "missing.csv", "--root_path", str(tmp_path)], "missing.csv"),
        (["--sim_days", "1", "--step", "32", "--checkpoints", str(tmp_path / "a_file")], "--checkpoints"),
        (["--sim_days", "1", "--is_training", "0", "--checkpoints", str(tmp_path / "none")], "--is_training 0"),
        (["--sim_days", "1", "--device", "cuda:7"], "--device cuda:7"),
    ]
    for flags, culprit in cases:
        result = run_cli(*flags, "--progress", "none")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "a_file").read_text() == "x"


def test_help_lists_the_groups_and_the_presets():
    result = run_cli("--help")
    assert result.returncode == 0
    for text in (
        "basic:",
        "data:",
        "model:",
        "training:",
        "accumulation:",
        "loss:",
        "output:",
        "hvac_similar_optimized",
        "effective batch",
    ):
        assert text in result.stdout


def test_out_of_memory_is_one_line_that_suggests_accumulation(tmp_path, monkeypatch, capsys):
    import torch

    import exp.trainer
    from exp.launch import main

    def no_memory(self, batch, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(exp.trainer.Trainer, "_micro_step", no_memory)
    flags = ["--sim_days", "1", "--step", "32", "--d_model", "16", "--n_heads", "2", "--progress", "none", "--batch_size", "64"]
    assert main([*flags, "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "--batch_size 32 --gradient_accumulation_steps 2" in err[0]


def test_runs_that_differ_in_training_stride_temporal_branch_or_fold_get_their_own_folders():
    from config.flags import build_parser
    from config.naming import run_name
    from config.validation import validate
    from exp.accumulation import plan_accumulation

    def name(*flags):
        parser = build_parser()
        args = parser.parse_args(list(flags))
        validate(parser, args)
        return run_name(args, plan_accumulation(args.batch_size, None, False, None), 0)

    plain, dense, image_only = name(), name("--train_stride", "12"), name("--no_temporal")
    folds = {name("--split_fold", str(k)) for k in range(1, 5)}
    assert len({plain, dense, image_only, *folds}) == 7  # the folds of a cross-validation never share a folder
    assert plain == "ahu_DualGAFNet_DualGAF_sl96_bs32_ga1_lr0.002_hvac_similar_optimized_seed2021_Exp_0"  # default names unchanged


def test_every_flag_declares_its_role_and_the_derived_lists_follow_the_declarations():
    from config.flags import build_parser, flag_table, flags_with_role
    from config.registry import LAYOUT, RECIPE, RUN, TSL

    parser = build_parser()
    dests = {action.dest for action in parser._actions if action.dest != "help"}
    assert dests == set(flag_table())  # no flag added around add()
    assert {flag.role for flag in flag_table().values()} <= {RECIPE, LAYOUT, RUN, TSL}
    recipe = set(flags_with_role(RECIPE))
    assert {"model", "learning_rate", "dropout", "cross_epoch_accumulation", "loss_preset"} <= recipe
    layout = {"batch_size", "gradient_accumulation_steps", "enable_auto_gradient_accumulation", "target_batch_size"}
    assert layout == set(flags_with_role(LAYOUT))
    assert not recipe & {"device", "num_workers", "progress", "checkpoints", "resume", "dist_backend", "dist_timeout"}


def test_run_name_parts_come_from_the_flag_declarations_and_follow_the_effective_batch_recipe():
    from config.flags import build_parser
    from config.naming import run_name
    from config.validation import validate
    from exp.accumulation import plan_accumulation

    def name(world, *flags):
        parser = build_parser()
        args = parser.parse_args(["--batch_size", "4", *flags])
        validate(parser, args)
        plan = plan_accumulation(args.batch_size, args.gradient_accumulation_steps, False, args.target_batch_size, world)
        return run_name(args, plan, 0)

    plain = "ahu_DualGAFNet_DualGAF_sl96_bs4_ga2_lr0.002_hvac_similar_optimized_seed2021_Exp_0"
    assert name(1, "--gradient_accumulation_steps", "2") == plain
    assert "_bs4_ga2_np2_lr" in name(2, "--gradient_accumulation_steps", "2")  # another effective batch: another run
    on_one, on_two = name(1, "--target_batch_size", "16"), name(2, "--target_batch_size", "16")
    assert on_one == on_two and "_bs4_tb16_lr" in on_one  # the same recipe on 1 or 2 processes: the same run
    assert "_seed0_" in name(1, "--seed", "0")  # a zero is a value, not an unset option


def test_the_console_script_of_an_installed_checkout_is_run_py():
    """pip install -e . (the requirements files do it) gives hvac-train: the same parser and exit codes."""
    script = Path(sys.executable).parent / "hvac-train"
    if not script.exists():
        pytest.skip("the checkout is not installed (pip install -e .)")
    assert subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120).stdout == run_cli("--help").stdout
    refused = subprocess.run([str(script), "--batch_size", "0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr == run_cli("--batch_size", "0").stderr
