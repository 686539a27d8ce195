"""Train, validate and test an HVAC fault classifier on multivariate sensor windows.

Argument parsing and validation only: the work is done by ``exp.exp.Exp``.
Exit codes: 0 success, 1 an output file could not be written (disk full, permission lost),
2 bad arguments or data (one-line message), 3 training aborted (the loss stayed non-finite),
130 after Ctrl-C / 143 after SIGTERM (a resumable checkpoint is written).
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
from pathlib import Path

SEEDS_HEADLINE = "--model DualGAFNet --data DualGAF --step 96"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage block) and exits with 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, off switches)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


# ------------------------------------------------------------- value types
def _number(kind, low=None, high=None, low_open=False, name="number"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {name}, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def positive_int(high=10**7):
    return _number(int, 1, high, name="an integer")


def non_negative_int(high=10**7):
    return _number(int, 0, high, name="an integer")


def non_negative_float(high=None):
    return _number(float, 0.0, high, name="a number")


def positive_float(high=None):
    return _number(float, 0.0, high, low_open=True, name="a number")


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    from models import DEFAULT_MODEL, MODELS
    from models.layers import NORMS
    from utils.losses import PRESETS, presets_help

    p = OneLineParser(
        prog="run.py",
        description=(
            "Train a fault classifier on multivariate HVAC sensor windows, with exact gradient accumulation. "
            f"With no flags: {SEEDS_HEADLINE} on the built-in AHU simulator."
        ),
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("basic")
    g.add_argument(
        "--is_training", type=int, choices=(0, 1), default=1, help="1: train then test; 0: test the saved best.pt of the same run"
    )
    g.add_argument(
        "--model_id", default=None, help="free name of the experiment, first part of the run name (default: the data file's name, or ahu)"
    )
    g.add_argument(
        "--model",
        choices=list(MODELS),
        default=None,
        help="model; default: the --data format's default ("
        + ", ".join(f"{d} -> {m}" for d, m in DEFAULT_MODEL.items())
        + "); with neither flag, DualGAFNet on the built-in simulator and ResNet1D on your own data",
    )
    g.add_argument("--des", default="Exp", help="free description, part of the run name")
    g.add_argument("--itr", type=positive_int(1000), default=1, help="repeat the experiment this many times, with seeds seed, seed+1, ...")
    g.add_argument("--seed", type=non_negative_int(2**31 - 1), default=2021, help="seed for weights, sample order and dropout")
    g.add_argument("--device", type=device_name, default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N or mps")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="float64 is for verification runs")
    g.add_argument(
        "--deterministic",
        action="store_true",
        help="use PyTorch's deterministic algorithms; an op that has none is reported once as a warning",
    )

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        choices=("Classification", "DualGAF", "GNN"),
        default=None,
        help="batch format: plain windows, dual GASF+GADF images, or a sensor graph; default: the --model's format",
    )
    g.add_argument("--root_path", default=".", help="folder of --data_path")
    g.add_argument("--data_path", default=None, help="CSV file under --root_path; without it the built-in AHU simulator is used")
    g.add_argument(
        "--time_col",
        default=None,
        help="CSV: timestamp column; gaps cut segments, unsorted rows are sorted "
        "(default: a column named Datetime, Timestamp, Time or Date, if any)",
    )
    g.add_argument("--label_col", default="label", help="CSV: class label column (with --fault_inventory: the 0/1 ground truth)")
    g.add_argument("--feature_cols", default=None, help="CSV: comma-separated sensor columns (default: every other numeric column)")
    g.add_argument(
        "--fault_inventory",
        metavar="CSV",
        default=None,
        help="CSV under --root_path with fault type, fault intensity and date columns: rows whose 0/1 label is 1 "
        "get the class '<type> / <intensity>' of their date, rows with 0 the class 'normal'",
    )
    g.add_argument(
        "--missing",
        choices=("ffill", "interpolate", "drop"),
        default="ffill",
        help="empty cells, spreadsheet errors (#VALUE!) and infinities in sensor columns: carry the last value "
        "forward / interpolate linearly (both inside their segment) / drop the row (cutting the segment)",
    )
    g.add_argument(
        "--split",
        choices=("blocked", "chronological", "random"),
        default="blocked",
        help="blocked: blocks of --split_block windows dealt train,train,train,val,test per class; chronological: "
        "first 60/20/20 %% of each segment; random: leaks overlapping windows across splits (warned)",
    )
    g.add_argument("--step", type=_number(int, 2, 100_000, name="an integer"), default=96, help="window length in samples")
    g.add_argument("--stride", type=positive_int(100_000), default=None, help="window stride in samples (default: half of --step)")
    g.add_argument(
        "--train_stride",
        type=positive_int(100_000),
        default=None,
        help="stride of the training windows only, inside the training blocks: denser training windows are extra shifted "
        "views of the same rows; validation and test keep --stride (default: --stride; not with --split random, nor for "
        "UEA .ts files, whose samples come ready-cut)",
    )
    g.add_argument(
        "--split_block",
        type=positive_int(100_000),
        default=4,
        help="leak-free split: each segment is cut into blocks of this many windows, dealt train,train,train,val,test",
    )
    g.add_argument("--sim_days", type=_number(int, 1, 365, name="an integer"), default=12, help="simulator: days per class")
    g.add_argument("--sim_seed", type=non_negative_int(2**31 - 1), default=0, help="simulator: seed of the simulated building")
    g.add_argument(
        "--export_data",
        metavar="CSV",
        default=None,
        help="write the simulated table to this CSV file (the layout real logs have) and exit",
    )
    g.add_argument(
        "--scale",
        choices=("global", "window"),
        default="global",
        help="DualGAF: map each sensor to [-1, 1] with its training-set range (keeps levels apart: a damper stuck "
        "at 25 %% vs 75 %%) or with each window's own range (shape only)",
    )
    g.add_argument(
        "--gaf_size",
        type=_number(int, 2, 1024, name="an integer"),
        default=32,
        help="DualGAF: image size; windows longer than this are shortened by PAA",
    )
    g.add_argument("--graph_threshold", type=non_negative_float(1.0), default=0.3, help="GNN: edge where |corr| >= this on training rows")
    g.add_argument("--num_workers", type=non_negative_int(64), default=0, help="DataLoader worker processes")

    g = p.add_argument_group("model")
    g.add_argument("--d_model", type=_number(int, 8, 4096, name="an integer"), default=64, help="model width")
    g.add_argument("--n_heads", type=positive_int(64), default=4, help="attention heads (DualGAFNet, Transformer)")
    g.add_argument("--e_layers", type=positive_int(64), default=2, help="encoder / graph layers (Transformer, GNN)")
    g.add_argument("--patch_len", type=positive_int(100_000), default=8, help="Transformer: samples per token")
    g.add_argument("--dropout", type=_number(float, 0.0, 0.95, name="a number"), default=0.1, help="dropout probability")
    g.add_argument(
        "--norm",
        choices=NORMS,
        default="layer",
        help="normalisation inside models; 'batch' breaks exact accumulation (per-micro-batch statistics)",
    )
    g.add_argument("--fusion", choices=("gated", "concat", "add"), default="gated", help="DualGAFNet: GASF/GADF fusion per sensor")
    g.add_argument("--window_stats", action="store_true", help="ResNet1D: add a branch on each window's per-sensor statistics")
    g.add_argument(
        "--no_temporal",
        action="store_true",
        help="DualGAFNet: leave out the 1-D conv branch on the raw window (only the GASF/GADF images and window statistics)",
    )

    g = p.add_argument_group("training")
    g.add_argument("--train_epochs", type=positive_int(100_000), default=30, help="maximum epochs")
    g.add_argument("--batch_size", type=positive_int(1_000_000), default=32, help="micro-batch size (samples per forward pass)")
    g.add_argument("--learning_rate", type=positive_float(10.0), default=2e-3, help="initial learning rate")
    g.add_argument("--optimizer", choices=("radam", "adamw", "sgd"), default="radam", help="optimizer (sgd uses momentum 0.9)")
    g.add_argument("--weight_decay", type=non_negative_float(1.0), default=1e-4, help="weight decay (decoupled for radam/adamw)")
    g.add_argument(
        "--lr_scheduler",
        choices=("plateau", "cosine", "none"),
        default="plateau",
        help="plateau: ReduceLROnPlateau on the validation loss, once per epoch; cosine: warm-up then cosine decay, "
        "stepped once per optimizer update and sized from the real number of updates",
    )
    g.add_argument("--warmup_steps", type=non_negative_int(10**9), default=0, help="cosine: linear warm-up, in optimizer updates")
    g.add_argument("--min_lr", type=non_negative_float(10.0), default=0.0, help="cosine: learning rate at the end of the schedule")
    g.add_argument("--lr_factor", type=_number(float, 0.0, 1.0, low_open=True, name="a number"), default=0.5, help="plateau: LR multiplier")
    g.add_argument(
        "--lr_patience", type=non_negative_int(10_000), default=2, help="plateau: epochs without improvement before the LR drops"
    )
    g.add_argument(
        "--patience",
        type=non_negative_int(100_000),
        default=8,
        help="early stopping: epochs without validation-loss improvement (0: off)",
    )
    g.add_argument(
        "--monitor",
        choices=("loss", "macro_f1"),
        default="loss",
        help="validation measure for early stopping and best.pt (ReduceLROnPlateau always follows the loss)",
    )
    g.add_argument(
        "--max_grad_norm",
        type=non_negative_float(),
        default=1.0,
        help="clip the gradient norm once per optimizer update, on the whole window's gradient (0: off)",
    )
    g.add_argument(
        "--max_bad_windows",
        type=positive_int(10**6),
        default=5,
        help="abort (exit code 3) after this many consecutive accumulation windows with a non-finite loss or gradient; "
        "each such window is discarded without touching the weights",
    )
    g.add_argument("--use_amp", action="store_true", help="mixed precision: CUDA fp16 with GradScaler (or bf16), CPU bf16")
    g.add_argument("--amp_dtype", choices=("fp16", "bf16"), default="fp16", help="CUDA AMP dtype")

    g = p.add_argument_group("accumulation", "micro-batches summed into one optimizer update; effective batch = batch_size x steps")
    g.add_argument(
        "--gradient_accumulation_steps",
        type=positive_int(100_000),
        default=None,
        help="micro-batches per optimizer update (default 1; not together with --enable_auto_gradient_accumulation)",
    )
    g.add_argument(
        "--enable_auto_gradient_accumulation",
        action="store_true",
        help="choose the steps from --batch_size: < 4 -> 4 steps, 4..7 -> 2, >= 8 -> 1 (not with --gradient_accumulation_steps)",
    )
    g.add_argument(
        "--cross_epoch_accumulation",
        action="store_true",
        help="let a window carry over the epoch end instead of flushing it there",
    )

    g = p.add_argument_group("loss", presets_help())
    g.add_argument("--loss_preset", choices=list(PRESETS), default="hvac_similar_optimized", help="loss preset (see above)")
    g.add_argument(
        "--class_weights",
        choices=("auto", "none", "balanced"),
        default="auto",
        help="balanced: n/(K*n_c) from training labels; auto: balanced when the preset asks for it or the training "
        "classes are imbalanced (largest > 1.5 x smallest), else none",
    )

    g = p.add_argument_group("output")
    g.add_argument("--checkpoints", default="./checkpoints", help="folder for <run>/last.pt and best.pt")
    g.add_argument("--results", default="./results", help="folder for <run>/metrics.json, history.csv, plots, and summary.csv")
    g.add_argument(
        "--resume",
        metavar="auto|PATH",
        default=None,
        help="continue training from a checkpoint, also from inside an accumulation window; auto: this run's last.pt "
        "if there is one, else start fresh",
    )
    g.add_argument(
        "--save_every_updates",
        type=non_negative_int(10**9),
        default=0,
        help="also write last.pt every this many optimizer updates (0: only at epoch ends and on Ctrl-C/SIGTERM)",
    )
    g.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="auto: a tqdm bar on a terminal, whole lines in a log file",
    )
    return p


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag checks and defaults that depend on other flags."""
    from models import DEFAULT_MODEL, model_format

    if args.model is None:  # own data: the model that did best on real AHU logs (benchmarks/README.md)
        args.model = DEFAULT_MODEL[args.data or ("Classification" if args.data_path else "DualGAF")]
    if args.data is None:
        args.data = model_format(args.model)
    if model_format(args.model) != args.data:
        parser.error(f"argument --model: {args.model} takes --data {model_format(args.model)}, not --data {args.data}")
    if args.model in ("DualGAFNet", "Transformer") and args.d_model % args.n_heads:
        parser.error(f"argument --n_heads: {args.n_heads} does not divide --d_model {args.d_model}")
    if args.model_id is None:
        args.model_id = re.sub(r"[^\w.+=-]", "_", Path(args.data_path).stem) if args.data_path else "ahu"
    if args.stride is None:
        args.stride = max(1, args.step // 2)
    if args.train_stride is not None and args.split == "random":
        parser.error("argument --train_stride: --split random deals windows at random, use --split blocked or chronological")
    if args.data_path is None:
        for flag in ("root_path", "time_col", "feature_cols", "fault_inventory"):
            if getattr(args, flag) not in (None, "."):
                parser.error(f"argument --{flag}: given without --data_path (the built-in simulator needs none)")
    if args.min_lr > args.learning_rate:
        parser.error(f"argument --min_lr: {args.min_lr:g} is above --learning_rate {args.learning_rate:g}")
    if args.resume is not None and not args.is_training:
        parser.error("argument --resume: resumes training, so it needs --is_training 1")
    if args.enable_auto_gradient_accumulation and args.gradient_accumulation_steps is not None:
        parser.error(
            "argument --enable_auto_gradient_accumulation: chooses the steps from --batch_size itself; "
            f"drop it or --gradient_accumulation_steps {args.gradient_accumulation_steps}"
        )
    if args.resume not in (None, "auto") and args.itr > 1:
        parser.error("argument --resume: a checkpoint path resumes one run; use --resume auto with --itr")
    if args.export_data is not None and not args.export_data.strip():
        parser.error("argument --export_data: empty file name")
    for flag in ("model_id", "des"):
        value = getattr(args, flag)
        if not value or not re.fullmatch(r"[\w.+=-]+", value) or value in (".", ".."):
            parser.error(f"argument --{flag}: {value!r} must be a non-empty name of letters, digits and . _ - + = (it names folders)")


def run_name(args: argparse.Namespace, steps: int, ii: int) -> str:
    """Runs that differ in any of these never overwrite each other. The newer options appear only
    when set, so default runs keep their names."""
    options = (f"_ts{args.train_stride}" if args.train_stride is not None else "") + ("_notemporal" if args.no_temporal else "")
    return (
        f"{args.model_id}_{args.model}_{args.data}_sl{args.step}{options}_bs{args.batch_size}_ga{steps}"
        f"_lr{args.learning_rate:g}_{args.loss_preset}_seed{args.seed}_{args.des}_{ii}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(parser, args)

    import torch

    from exp.exp import TrainingAborted
    from utils.errors import OutputError, UserError
    from utils.signals import Interrupted

    try:
        return _run(args)
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, TrainingAborted, OutputError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except (MemoryError, torch.OutOfMemoryError) as exc:
        steps = args.gradient_accumulation_steps or 1
        print(
            f"run.py: error: out of memory ({type(exc).__name__}) with micro-batches of --batch_size {args.batch_size}; "
            f"lower --batch_size and raise --gradient_accumulation_steps to keep the effective batch "
            f"(e.g. --batch_size {max(1, args.batch_size // 2)} --gradient_accumulation_steps {2 * steps})",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last complete checkpoint stays
        print("run.py: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from data_provider.data_factory import build_data
    from data_provider.sources import export_simulated_csv
    from exp.accumulation import resolve_steps
    from exp.exp import Exp
    from utils.seed import make_deterministic, seed_everything

    if args.export_data:
        rows = export_simulated_csv(args, args.export_data)
        print(f"Wrote {rows} rows of simulated AHU data to {args.export_data}")
        return 0
    if args.deterministic:
        make_deterministic()
    steps, _ = resolve_steps(args.batch_size, args.gradient_accumulation_steps, args.enable_auto_gradient_accumulation)
    data = build_data(args)  # the same windows for every repetition
    for ii in range(args.itr):
        run_args = copy.copy(args)
        run_args.seed = args.seed + ii
        setting = run_name(run_args, steps, ii)
        print(f">>> {'training' if args.is_training else 'testing'} {setting}", flush=True)
        seed_everything(run_args.seed)
        exp = Exp(run_args, data)
        if args.is_training:
            exp.train(setting)
            exp.test(setting)
        else:
            exp.test(setting)
    return 0


if __name__ == "__main__":
    sys.exit(main())
