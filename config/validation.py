"""Cross-flag checks, and the defaults that depend on other flags (the model's own, the stride)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from config import tsl
from config.flags import flag_table
from config.registry import NOT_DECLARED, typed_flags
from data_provider.units import default_name, names_several
from models import MODELS, default_model, model_format
from utils.launcher import launched_world_size
from utils.outputs import safe_name


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None = None) -> list[str]:
    """Checks ``args`` (parsed from ``argv``, the flags as typed) and fills in the defaults that depend on other
    flags; returns notes to print (Time-Series-Library flags that were mapped or ignored). ``parser.derived``
    names the flags whose values were worked out here from other flags (a configuration file records them apart)."""
    typed = typed_flags(argv)
    notes = tsl.translate(parser, args, argv, launched_world_size())
    given = dict(vars(args))
    _resolve_model(parser, args)
    if args.model_id is None:
        args.model_id = safe_name(default_name(args.root_path, args.data_path)) if args.data_path else "ahu"
    if args.stride is None and not args.predict:  # --predict: the checkpoint's stride
        args.stride = max(1, args.step // 2)
    _check_data(parser, args)
    _model_defaults(parser, args)
    _check_inputs(parser, args, typed)
    _check_training(parser, args, typed)
    _check_modes(parser, args, typed)
    parser.derived = {dest for dest, value in vars(args).items() if value != given[dest]}
    return notes


def _resolve_model(parser, args) -> None:
    """--model and --data from each other."""
    if args.model is None:  # own data: the model that did best on real AHU logs (benchmarks/README.md)
        args.model = default_model(args.data or ("Classification" if args.data_path else "DualGAF"))
    if args.data is None:
        args.data = model_format(args.model)
    if model_format(args.model) != args.data:
        parser.error(f"argument --model: {args.model} takes --data {model_format(args.model)}, not --data {args.data}")
    if MODELS[args.model].attention and args.d_model % args.n_heads:
        parser.error(f"argument --n_heads: {args.n_heads} does not divide --d_model {args.d_model}")


def _model_defaults(parser, args) -> None:
    """The defaults each model declares for itself (its ModelSpec), and what its spec rules out."""
    spec = MODELS[args.model]
    if args.sensor_roles is not None:
        args.derived_signals = "auto"
    for dest, flag in flag_table().items():
        if flag.per_model is not NOT_DECLARED and getattr(args, dest) is None:
            setattr(args, dest, spec.defaults.get(dest, flag.per_model))
    if args.window_stats and not spec.statistics_branch:
        having = ", ".join(name for name, other in MODELS.items() if other.statistics_branch)
        parser.error(f"argument --window_stats: {args.model} has no statistics branch (only {having})")


def _check_data(parser, args) -> None:
    if args.split_fold and args.split != "blocked":
        parser.error(f"argument --split_fold: folds deal the blocks of --split blocked, not --split {args.split}")
    if args.train_stride is not None and args.split == "random":
        parser.error(
            "argument --train_stride: --split random deals windows at random, use --split blocked or chronological"
        )
    if args.data_path is None:
        for flag in ("root_path", "time_col", "feature_cols", "fault_inventory", "duplicates", "max_gap"):
            if getattr(args, flag) not in (None, "."):
                parser.error(f"argument --{flag}: given without --data_path (the built-in simulator needs none)")
    if args.max_gap is not None and args.missing == "drop":
        parser.error(
            "argument --max_gap: fills gaps with rows that --missing drop would drop again; "
            "use --missing ffill or interpolate"
        )


def _check_inputs(parser, args, typed: set[str]) -> None:
    if args.no_temporal and "temporal" in typed:
        parser.error("argument --temporal: --no_temporal leaves the temporal branch out; give one or the other")
    asked = {"derived_signals", "sensor_roles"} & typed
    uea_file = args.data_path and Path(args.data_path).suffix.lower() == ".ts"
    if args.derived_signals == "auto" and asked and uea_file and not args.predict:
        parser.error(
            f"argument --{sorted(asked)[0]}: UEA files hold ready-cut samples without sensor names; "
            "use it with sensor logs"
        )
    if args.resident_data == "on" and args.num_workers:
        parser.error(
            "argument --resident_data: on cuts every batch on the device, "
            f"so --num_workers {args.num_workers} would idle"
        )


def _check_training(parser, args, typed: set[str]) -> None:
    if args.min_lr > args.learning_rate:
        parser.error(f"argument --min_lr: {args.min_lr:g} is above --learning_rate {args.learning_rate:g}")
    if args.resume is not None and not args.is_training:
        parser.error("argument --resume: resumes training, so it needs --is_training 1")
    if args.enable_auto_gradient_accumulation and args.gradient_accumulation_steps is not None:
        parser.error(
            "argument --enable_auto_gradient_accumulation: chooses the steps from --batch_size itself; "
            f"drop it or --gradient_accumulation_steps {args.gradient_accumulation_steps}"
        )
    if args.dist_backend == "nccl" and args.device in ("cpu", "mps"):
        parser.error(
            f"argument --dist_backend: nccl needs CUDA devices, not --device {args.device} (use --dist_backend gloo)"
        )
    steps_too = args.gradient_accumulation_steps is not None or args.enable_auto_gradient_accumulation
    if args.target_batch_size is not None and steps_too:
        other = (
            "--enable_auto_gradient_accumulation"
            if args.enable_auto_gradient_accumulation
            else "--gradient_accumulation_steps"
        )
        parser.error(f"argument --target_batch_size: sets the steps itself; drop it or {other}")
    for flag in ("max_memory_fraction", "max_memory_mb"):
        if flag in typed and args.batch_size != "auto":
            parser.error(
                f"argument --{flag}: sets the memory budget of --batch_size auto, "
                f"and this run has --batch_size {args.batch_size}"
            )


def _check_modes(parser, args, typed: set[str]) -> None:
    """--predict, --fast_dev_run, --dry_run, --checkpoint, --overwrite, --ensemble, --resume PATH, names."""
    if args.predict and (args.checkpoint is None or args.data_path is None):
        parser.error("argument --predict: needs --checkpoint PATH (a best.pt) and --data_path NEW.csv")
    if args.predict:
        for flag in ("export", "tensorboard", "itr", "ensemble", "resume", "is_training"):
            if flag in typed:
                parser.error(f"argument --{flag}: does not apply to --predict (it applies --checkpoint to --data_path)")
        if launched_world_size() > 1:
            parser.error("argument --predict: runs on one process; start it with python, not torchrun")
        if names_several(args.root_path, args.data_path):
            parser.error("argument --data_path: --predict reads one log; run it once per file")
    if args.fast_dev_run is not None:
        own = ("resume", "predict", "dry_run", "export_data", "limit_train_batches", "limit_val_batches", "itr")
        clashes = [flag for flag in own if flag in typed] + (["is_training"] if not args.is_training else [])
        if clashes:
            parser.error(f"argument --fast_dev_run: trains and tests one short run of its own; drop --{clashes[0]}")
        if "train_epochs" not in typed:
            args.train_epochs = 1
    if args.dry_run and (args.predict or args.export_data):
        parser.error(
            f"argument --dry_run: plans a training run; drop {'--predict' if args.predict else '--export_data'}"
        )
    if args.checkpoint is not None and not args.predict:
        parser.error("argument --checkpoint: is read by --predict (to continue training use --resume PATH)")
    if args.overwrite and (args.resume is not None or not args.is_training or args.predict):
        other = "--resume continues it" if args.resume is not None else "it only applies to training"
        parser.error(f"argument --overwrite: starts the run afresh, but {other}")
    if args.ensemble and args.itr < 2:  # (with --predict, refused above)
        parser.error(
            f"argument --ensemble: averages the --itr repeats, and this run has --itr {args.itr}; give --itr 2 or more"
        )
    if args.resume not in (None, "auto") and args.itr > 1:
        parser.error("argument --resume: a checkpoint path resumes one run; use --resume auto with --itr")
    if args.export_data is not None and not args.export_data.strip():
        parser.error("argument --export_data: empty file name")
    for flag in ("model_id", "des"):
        value = getattr(args, flag)
        if not value or not re.fullmatch(r"[\w.+=-]+", value) or value in (".", ".."):
            parser.error(
                f"argument --{flag}: {value!r} must be a non-empty name of letters, digits and . _ - + = "
                "(it names folders)"
            )
