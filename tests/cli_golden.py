"""Golden record of the command line: ``--help``, the flag table, and for representative command
lines the validated arguments, the run names and the config hash. Captured before the
configuration moved out of run.py (tests/golden/cli.json) and compared by tests/test_cli_golden.py,
so the move changed no flag, default, help text, run name or hash.

Regenerate (only when a change to the command line is intended): ``python -m tests.cli_golden``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "cli.json"

# (name, environment, command line); the environment is what torchrun sets for a process.
TORCHRUN = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
COMMAND_LINES = [
    ("defaults", {}, []),
    ("seeds headline", {}, "--model DualGAFNet --data DualGAF --step 96 --batch_size 4 --gradient_accumulation_steps 2 "
                           "--loss_preset hvac_similar_optimized"),
    ("plain windows", {}, "--data Classification"),
    ("own csv", {}, "--data_path logs/AHU-1.csv --root_path data"),
    ("graph", {}, "--data GNN --graph_threshold 0.5 --e_layers 3"),
    ("transformer", {}, "--model Transformer --d_ff 256 --n_heads 8 --d_model 64 --patch_len 12"),
    ("tsl uea script", {}, "--task_name classification --is_training 1 --root_path ./dataset/EthanolConcentration/ "
                           "--model_id EthanolConcentration --model Transformer --data UEA --e_layers 3 --batch_size 16 "
                           "--d_model 128 --d_ff 256 --top_k 3 --des Exp --itr 1 --learning_rate 0.001 --train_epochs 100 "
                           "--patience 10 --use_gpu False --lradj cosine --loss CE"),
    ("tsl aliases", {}, "--seq_len 128 --window_step 32 --use_gpu true --gpu 0 --use_class_weights --enc_in 8 --num_class 3"),
    ("torchrun steps", TORCHRUN, "--batch_size 8 --gradient_accumulation_steps 2"),
    ("torchrun target", TORCHRUN, "--batch_size 4 --target_batch_size 32 --use_multi_gpu --devices 0,1"),
    ("target batch", {}, "--batch_size 8 --target_batch_size 64"),
    ("auto batch", {}, "--batch_size auto --target_batch_size 64"),
    ("auto batch budget", {}, "--batch_size auto --target_batch_size 64 --max_memory_mb 2000 --data Classification"),
    ("predict", {}, "--predict --checkpoint checkpoints/run/best.pt --data_path new.csv"),
    ("auto steps", {}, "--batch_size 2 --enable_auto_gradient_accumulation"),
    ("recipe hash", {}, "--dropout 0 --norm none --optimizer adamw --window_stats off --temporal resnet --weight_decay 0"),
    ("schedules", {}, "--cross_epoch_accumulation --lr_scheduler plateau --monitor macro_f1 --no_temporal --train_stride 8"),
    ("csv options", {}, "--data_path logs.csv --time_col t --feature_cols a,b --max_gap 5min --missing interpolate "
                        "--csv_sep semicolon --csv_decimal comma --duplicates mean --split_fold 2 --derived_signals off"),
    ("fault inventory", {}, "--data_path SZVAV.csv --fault_inventory SZVAV-faults.csv --label_col fault --sensor_roles roles.json"),
    ("smoke", {}, "--fast_dev_run"),
    ("repeats", {}, "--itr 3 --ensemble --seed 7 --des sweep --model_id b1"),
    ("augment float64", {}, "--dtype float64 --augment_shift 4 --augment_jitter 0.1 --augment_scale 0.05 --sim_days 3 "
                            "--sim_seed 5 --step 48 --gaf_size 16 --scale window --fusion concat"),
    ("grad noise", {}, "--log_grad_noise --batch_size 8 --gradient_accumulation_steps 4 --train_epochs 3 --use_amp"),
    ("outputs", {}, "--checkpoints ck --results res --resume auto --save_every_updates 10 --progress log --tensorboard"),
]


@contextlib.contextmanager
def environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in (*TORCHRUN, "COLUMNS")}
    for key in TORCHRUN:
        os.environ.pop(key, None)
    os.environ.update({"COLUMNS": "120", **values})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def plain(value):
    return json.loads(json.dumps(value, default=repr))


def snapshot(hide: set[str] = frozenset()) -> dict:
    """The record; ``hide``: flags left out of it (added after the record was taken)."""
    from config.flags import build_parser, flag_table
    from config.naming import config_hash, run_name
    from config.validation import validate
    from exp.launch import accumulation_plan

    with environment({}):
        parser = build_parser()
        for action in parser._actions:
            if action.dest in hide:
                action.help = argparse.SUPPRESS
        help_text = parser.format_help()
    table = {}
    for dest, flag in flag_table().items():
        if dest in hide:
            continue
        name = None if flag.name is None else [flag.name.order, flag.name.fmt, flag.name.shows is not None]
        table[dest] = plain({"role": flag.role, "name": name, "older_runs": repr(flag.older_runs) if flag.older_runs is not
                             _not_declared() else "NOT_DECLARED", "default": flag.action.default})
    lines = {}
    for label, env, line in COMMAND_LINES:
        argv = line.split() if isinstance(line, str) else line
        with environment(env):
            parser = build_parser()
            args = parser.parse_args(argv)
            notes = validate(parser, args, argv)
            entry = {"argv": argv, "env": env, "notes": notes}
            if not args.predict:
                plan = accumulation_plan(parser, args)
                entry["names"] = [run_name(_repeat(args, ii), plan, ii) for ii in range(args.itr)]
                entry["hash"] = config_hash(args)
            entry["args"] = plain({key: value for key, value in vars(args).items() if key not in hide})
        lines[label] = entry
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "help": help_text, "flags": table, "lines": lines}


def _repeat(args, ii: int):
    import copy

    repeat = copy.copy(args)
    repeat.seed = args.seed + ii
    return repeat


def _not_declared():
    from config.registry import NOT_DECLARED

    return NOT_DECLARED


if __name__ == "__main__":
    with contextlib.redirect_stdout(io.StringIO()):
        record = snapshot()
    GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
