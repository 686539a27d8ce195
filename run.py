"""Train, validate and test an HVAC fault classifier on multivariate sensor windows.

Argument parsing and validation only: the work is done by ``exp.exp.Exp``.
Exit codes: 0 success, 1 an output file could not be written (disk full, permission lost),
2 bad arguments or data (one-line message), 3 training aborted (the loss stayed non-finite),
4 another process of a torchrun run failed or timed out, 130 after Ctrl-C / 143 after SIGTERM
(a resumable checkpoint is written).
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


# --train_epochs auto: a length in windows seen, not in epochs, so a large data set is not
# trained for 30 long epochs and a small one still gets enough updates (benchmarks/README.md,
# "Default run": 12 epochs on the built-in data, 30 on the small LBNL files).
AUTO_EPOCH_WINDOWS = 16_000
AUTO_EPOCHS = (3, 30)


def auto_epochs(train_windows: int) -> int:
    low, high = AUTO_EPOCHS
    return min(high, max(low, math.ceil(AUTO_EPOCH_WINDOWS / max(train_windows, 1))))


def epochs_or_auto(text: str) -> int | str:
    return text if text == "auto" else positive_int(100_000)(text)


EVAL_BATCH_SIZE = 256  # evaluation batch size: changes no result, only speed and memory (--limit_val_batches counts these)

# The models that gain from --derived_signals on the real AHU files and the simulator (benchmarks/README.md;
# ResNet1D: with --window_stats, on the validation folds of table C).
DERIVED_SIGNALS_DEFAULT = {"DualGAFNet": "auto", "ResNet1D": "auto"}
# The models whose validation macro-F1 on the real AHU files rose with jitter (benchmarks/README.md); 0 for the others.
AUGMENT_JITTER_DEFAULT = {"ResNet1D": 0.05}
# The models with a statistics branch (--window_stats) and its default: on for both, as measured (with derived
# signals) on the validation folds of table C and, for DualGAFNet, the simulator's default run.
WINDOW_STATS_DEFAULT = {"ResNet1D": True, "DualGAFNet": True}
# DualGAFNet's temporal branch (--temporal): ResNet1D's blocks did not gain on the three real files together.
TEMPORAL_DEFAULT = "small"


def on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def batches_or_auto(text: str) -> int | str:
    return text if text == "auto" else positive_int(10**6)(text)


def size_or_auto(text: str) -> int | str:
    return text if text == "auto" else positive_int(1_000_000)(text)


def _spelled(choices: dict[str, str], what: str):
    """A type that takes a name or the character itself (comma or ',') and gives the character."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return choices[text]

    return parse


separator = _spelled({"comma": ",", ",": ",", "semicolon": ";", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t"}, "comma, semicolon or tab")
decimal_mark = _spelled({"point": ".", ".": ".", "comma": ",", ",": ","}, "point or comma")


def duration_seconds(text: str) -> float:
    """'5min', '90s', '1h', '00:05:00' -> seconds; a bare number is refused (minutes? rows?)."""
    import pandas as pd

    if re.fullmatch(r"\s*[-+]?[\d.]+\s*", text):
        raise argparse.ArgumentTypeError(f"give {text!r} a unit: a duration such as 5min, 90s or 1h")
    try:
        seconds = pd.Timedelta(text.strip()).total_seconds()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 5min, 90s or 1h, got {text!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"must be a positive duration, got {text!r}")
    return seconds


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# ------------------------------------------------------------- flag roles
# Every flag declares its role next to its definition; the lists other parts need (what a
# resumed run must match, what the run name holds) are derived from these declarations.
RECIPE = "recipe"  # shapes the data, the model, the loss or the schedule: a resumed run must match it
LAYOUT = "layout"  # how a window is cut into micro-batches: a resumed run must keep the effective batch
RUN = "run"  # how or where this run executes (device, outputs, progress): free to change on resume
TSL = "tsl"  # a Time-Series-Library name, translated into the flags above before anything else (utils/tsl.py)


@dataclass(frozen=True)
class NamePart:
    """A flag's part of the run name: its place, its format, and whether it shows (default:
    when the flag is set, so options added later leave the default names unchanged)."""

    order: int
    fmt: str
    shows: Callable[[argparse.Namespace], bool] | None = None


NOT_DECLARED = object()


@dataclass(frozen=True)
class Flag:
    role: str
    name: NamePart | None
    older_runs: object = NOT_DECLARED  # recipe flags added later: the value every run had before the flag existed
    action: argparse.Action | None = None

    def absent(self, value) -> bool:
        """Whether ``value`` is what a run gets without typing the flag at all (None, an unset switch)."""
        return value is None or (self.action.nargs == 0 and value != self.action.const)

    def spell(self, value) -> str:
        """``value`` as it is typed on the command line (for messages): ``--window_stats off``,
        ``--no_temporal``, ``no --max_gap``."""
        option = self.action.option_strings[0]
        if self.absent(value):
            return f"no {option}"
        if self.action.nargs == 0:  # a switch that is set
            return option
        if self.action.type is on_off:
            return f"{option} {'on' if value else 'off'}"
        return f"{option} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"


def add(group, option: str, *, role: str, name: NamePart | None = None, older_runs=NOT_DECLARED, **kwargs) -> None:
    """``group.add_argument`` that also records the flag's role (the only way flags are added).
    ``older_runs``: a checkpoint written before this recipe flag existed was trained as with this
    value, so ``--resume`` continues it when the run has that value."""
    action = group.add_argument(option, **kwargs)
    group.flags[action.dest] = Flag(role, name, older_runs, action)


@functools.cache
def flag_table() -> dict[str, Flag]:
    """dest -> Flag for every flag of run.py."""
    return build_parser().flags


def flags_with_role(role: str) -> tuple[str, ...]:
    return tuple(dest for dest, flag in flag_table().items() if flag.role == role)


def build_parser() -> argparse.ArgumentParser:
    from data_provider.windows import BLOCK_PATTERN
    from models import DEFAULT_MODEL, MODELS
    from models.DualGAFNet import TEMPORAL_BEFORE_THE_FLAG, TEMPORAL_BRANCHES
    from models.layers import NORMS
    from utils.losses import PRESETS, presets_help

    p = OneLineParser(
        prog="run.py",
        description=(
            "Train a fault classifier on multivariate HVAC sensor windows, with exact gradient accumulation. "
            f"With no flags: {SEEDS_HEADLINE} on the built-in AHU simulator."
        ),
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # --loss must never be taken for --loss_preset
    )
    p.flags = {}

    def group(title: str, description: str | None = None):
        g = p.add_argument_group(title, description)
        g.flags = p.flags
        return g

    g = group("basic")
    add(
        g,
        "--is_training",
        role=RUN,
        type=int,
        choices=(0, 1),
        default=1,
        help="1: train then test; 0: test the saved best.pt of the same run",
    )
    add(
        g,
        "--model_id",
        role=RUN,
        name=NamePart(0, "{}"),
        default=None,
        help="free name of the experiment, first part of the run name (default: the data file's name, or ahu)",
    )
    add(
        g,
        "--model",
        role=RECIPE,
        name=NamePart(1, "{}"),
        choices=list(MODELS),
        default=None,
        help="model; default: the --data format's default ("
        + ", ".join(f"{d} -> {m}" for d, m in DEFAULT_MODEL.items())
        + "); with neither flag, DualGAFNet on the built-in simulator and ResNet1D on your own data",
    )
    add(g, "--des", role=RUN, name=NamePart(11, "{}"), default="Exp", help="free description, part of the run name")
    add(
        g, "--itr", role=RUN, type=positive_int(1000), default=1, help="repeat the experiment this many times, with seeds seed, seed+1, ..."
    )
    add(g, "--ensemble", role=RUN, action="store_true",
        help="with --itr K (2 or more): also test the mean class probabilities of the K repeats' best models, written to "
        "ensemble.json and ensemble_predictions.csv in the first repeat's results (apply it to new logs with --predict "
        "--checkpoint A,B,...)")  # fmt: skip
    add(
        g,
        "--seed",
        role=RECIPE,
        name=NamePart(10, "seed{}"),
        type=non_negative_int(2**31 - 1),
        default=2021,
        help="seed for weights, sample order and dropout",
    )
    add(g, "--device", role=RUN, type=device_name, default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N or mps")
    add(g, "--dtype", role=RECIPE, choices=("float32", "float64"), default="float32", help="float64 is for verification runs")
    add(
        g,
        "--deterministic",
        role=RUN,
        action="store_true",
        help="use PyTorch's deterministic algorithms; an op that has none is reported once as a warning",
    )

    g = group("data")
    add(
        g,
        "--data",
        role=RECIPE,
        name=NamePart(2, "{}"),
        choices=("Classification", "DualGAF", "GNN", "UEA"),
        default=None,
        help="batch format: plain windows, dual GASF+GADF images, or a sensor graph; default: the --model's format. "
        "UEA (as in Time-Series-Library): --root_path DIR --model_id NAME reads DIR/NAME_TRAIN.ts + NAME_TEST.ts in --model's format",
    )
    add(g, "--root_path", role=RECIPE, default=".", help="folder of --data_path")
    add(
        g,
        "--data_path",
        role=RECIPE,
        default=None,
        help="CSV file under --root_path, or a UEA pair NAME (NAME_TRAIN.ts / NAME_TEST.ts); without it the built-in AHU simulator is used",
    )
    add(
        g,
        "--time_col",
        role=RECIPE,
        default=None,
        help="CSV: timestamp column; gaps cut segments, unsorted rows are sorted "
        "(default: a column named Datetime, Timestamp, Time or Date, if any)",
    )
    add(g, "--label_col", role=RECIPE, default="label", help="CSV: class label column (with --fault_inventory: the 0/1 ground truth)")
    add(g, "--feature_cols", role=RECIPE, default=None, help="CSV: comma-separated sensor columns (default: every other numeric column)")
    add(
        g,
        "--fault_inventory",
        role=RECIPE,
        metavar="CSV",
        default=None,
        help="CSV under --root_path with fault type, fault intensity and date columns: rows whose 0/1 label is 1 "
        "get the class '<type> / <intensity>' of their date, rows with 0 the class 'normal'",
    )
    add(
        g,
        "--missing",
        role=RECIPE,
        choices=("ffill", "interpolate", "drop"),
        default="ffill",
        help="empty cells, spreadsheet errors (#VALUE!) and infinities in sensor columns: carry the last value "
        "forward / interpolate linearly (both inside their segment) / drop the row (cutting the segment)",
    )
    add(g, "--csv_sep", role=RUN, type=separator, default=None, metavar="SEP",
        help="CSV: column separator, comma, semicolon or tab (default: detected from the first lines)")  # fmt: skip
    add(g, "--csv_decimal", role=RUN, type=decimal_mark, default=None, metavar="MARK",
        help="CSV: decimal mark of the numbers, point or comma (default: detected; a comma needs --csv_sep semicolon or tab)")  # fmt: skip
    add(
        g,
        "--duplicates",
        role=RECIPE,
        choices=("first", "last", "mean"),
        default=None,
        help="CSV: rows that repeat a time with other values (overlapping exports, the daylight-saving hour of local time) "
        "are refused unless this says which to keep: the first, the last, or the mean of their sensor values; rows "
        "identical in every cell are always dropped, with a note",
    )
    add(g, "--max_gap", role=RECIPE, older_runs=None, type=duration_seconds, default=None, metavar="DURATION",
        help="CSV: the longest gap between two rows (5min, 90s, 1h) that is filled with rows on the sampling grid, which "
        "--missing ffill or interpolate then fills like empty cells; a longer gap, or a step off the grid, cuts the log "
        "(default: one sampling interval, nothing filled)")  # fmt: skip
    add(
        g,
        "--derived_signals",
        role=RECIPE,
        older_runs="off",
        choices=("auto", "off"),
        default=None,
        help=f"default: auto for {' and '.join(DERIVED_SIGNALS_DEFAULT)}, off for the other models (measured on the real AHU "
        "files, see benchmarks/README.md); auto: add channels for the relations HVAC fault rules check (outdoor-air fraction "
        "from temperatures against the damper, mixed air outside outdoor/return air, supply-air set-point error, heating and cooling at "
        "once, duct-pressure error), from sensor roles found in the column names or --sensor_roles",
    )
    add(
        g,
        "--sensor_roles",
        role=RECIPE,
        older_runs=None,
        metavar="FILE",
        default=None,
        help='JSON file naming the columns of the sensor roles, e.g. {"mixed_air_temp": "MAT", "outdoor_air_damper": '
        '"OA_DMP"} (roles: see README); implies --derived_signals auto',
    )
    add(
        g,
        "--split",
        role=RECIPE,
        choices=("blocked", "chronological", "random"),
        default="blocked",
        help="blocked: blocks of --split_block windows dealt train,train,train,val,test per class; chronological: "
        "first 60/20/20 %% of each segment; random: leaks overlapping windows across splits (warned)",
    )
    add(
        g,
        "--step",
        role=RECIPE,
        name=NamePart(3, "sl{}"),
        type=_number(int, 2, 100_000, name="an integer"),
        default=96,
        help="window length in samples",
    )
    add(g, "--stride", role=RECIPE, type=positive_int(100_000), default=None, help="window stride in samples (default: half of --step)")
    add(
        g,
        "--train_stride",
        role=RECIPE,
        name=NamePart(4, "ts{}"),
        type=positive_int(100_000),
        default=None,
        help="stride of the training windows only, inside the training blocks: denser training windows are extra shifted "
        "views of the same rows; validation and test keep --stride (default: --stride; not with --split random, nor for "
        "UEA .ts files, whose samples come ready-cut)",
    )
    add(
        g,
        "--split_block",
        role=RECIPE,
        type=positive_int(100_000),
        default=4,
        help="leak-free split: each segment is cut into blocks of this many windows, dealt train,train,train,val,test",
    )
    add(g, "--split_fold", role=RECIPE, older_runs=0, type=_number(int, 0, len(BLOCK_PATTERN) - 1, name="an integer"), default=0,
        metavar="K",
        help=f"blocked cross-validation: deal the pattern K blocks on, so other blocks validate and test (0-{len(BLOCK_PATTERN) - 1}; "
        "the folds together test every block once)")  # fmt: skip
    add(
        g,
        "--augment_shift",
        role=RECIPE,
        older_runs=0,
        type=non_negative_int(100_000),
        default=0,
        metavar="ROWS",
        help="augment the training windows: each epoch, move every window up to this many rows earlier or later, "
        "inside its own training block (0: off)",
    )
    add(g, "--augment_jitter", role=RECIPE, older_runs=0.0, type=_number(float, 0.0, 10.0, name="a number"), default=None, metavar="STD",
        help="augment the training windows: Gaussian noise of this standard deviation (scaled units) on every value, drawn "
        "each epoch; 0: off (default: " + ", ".join(f"{v:g} for {m}" for m, v in AUGMENT_JITTER_DEFAULT.items())
        + ", 0 for the other models, as measured on the real AHU files)")  # fmt: skip
    add(g, "--augment_scale", role=RECIPE, older_runs=0.0, type=_number(float, 0.0, 10.0, name="a number"), default=0.0, metavar="STD",
        help="augment the training windows: multiply each sensor of a window by 1 + N(0, STD^2), drawn each epoch (0: off)")  # fmt: skip
    add(g, "--sim_days", role=RECIPE, type=_number(int, 1, 365, name="an integer"), default=12, help="simulator: days per class")
    add(g, "--sim_seed", role=RECIPE, type=non_negative_int(2**31 - 1), default=0, help="simulator: seed of the simulated building")
    add(
        g,
        "--export_data",
        role=RUN,
        metavar="CSV",
        default=None,
        help="write the simulated table to this CSV file (the layout real logs have) and exit",
    )
    add(
        g,
        "--scale",
        role=RECIPE,
        choices=("global", "window"),
        default="global",
        help="DualGAF: map each sensor to [-1, 1] with its training-set range (keeps levels apart: a damper stuck "
        "at 25 %% vs 75 %%) or with each window's own range (shape only)",
    )
    add(
        g,
        "--gaf_size",
        role=RECIPE,
        type=_number(int, 2, 1024, name="an integer"),
        default=32,
        help="DualGAF: image size; windows longer than this are shortened by PAA",
    )
    add(
        g,
        "--graph_threshold",
        role=RECIPE,
        type=non_negative_float(1.0),
        default=0.3,
        help="GNN: edge where |corr| >= this on training rows",
    )
    add(g, "--num_workers", role=RUN, type=non_negative_int(64), default=0, help="DataLoader worker processes")
    add(
        g,
        "--resident_data",
        role=RUN,
        choices=("auto", "on", "off"),
        default="auto",
        help="keep every window of the data set on the training device and cut the batches there: no DataLoader, no "
        "copy per batch, the same batches (auto: on unless --num_workers > 0)",
    )

    g = group("model")
    add(g, "--d_model", role=RECIPE, type=_number(int, 8, 4096, name="an integer"), default=64, help="model width")
    add(g, "--n_heads", role=RECIPE, type=positive_int(64), default=4, help="attention heads (DualGAFNet, Transformer)")
    add(g, "--e_layers", role=RECIPE, type=positive_int(64), default=2, help="encoder / graph layers (Transformer, GNN)")
    add(
        g,
        "--d_ff",
        role=RECIPE,
        type=_number(int, 1, 65_536, name="an integer"),
        default=None,
        help="Transformer: feed-forward width (default: 2 x --d_model); other models ignore it",
    )
    add(g, "--patch_len", role=RECIPE, type=positive_int(100_000), default=8, help="Transformer: samples per token")
    add(g, "--dropout", role=RECIPE, type=_number(float, 0.0, 0.95, name="a number"), default=0.1, help="dropout probability")
    add(
        g,
        "--norm",
        role=RECIPE,
        choices=NORMS,
        default="layer",
        help="normalisation inside models; 'batch' breaks exact accumulation (per-micro-batch statistics)",
    )
    add(g, "--fusion", role=RECIPE, choices=("gated", "concat", "add"), default="gated", help="DualGAFNet: GASF/GADF fusion per sensor")
    add(g, "--window_stats", role=RECIPE, type=on_off, nargs="?", const=True, default=None, metavar="on|off",
        help=f"{', '.join(WINDOW_STATS_DEFAULT)}: a branch on each window's per-sensor statistics (mean, std, min, max, last "
        "minus first) straight to the classifier; alone it is --window_stats on (default: "
        + ", ".join(f"{'on' if on else 'off'} for {m}" for m, on in WINDOW_STATS_DEFAULT.items()) + ")")  # fmt: skip
    add(
        g,
        "--no_temporal",
        role=RECIPE,
        name=NamePart(5, "notemporal"),
        action="store_true",
        help="DualGAFNet: leave out the 1-D conv branch on the raw window (only the GASF/GADF images and window statistics)",
    )
    add(g, "--temporal", role=RECIPE, older_runs=TEMPORAL_BEFORE_THE_FLAG, choices=TEMPORAL_BRANCHES, default=TEMPORAL_DEFAULT,
        help="DualGAFNet: its 1-D conv branch on the raw window: resnet (ResNet1D's three residual blocks, widths d, 2d, 2d) "
        f"or small (two blocks of width d, the branch of checkpoints written before this flag); default {TEMPORAL_DEFAULT}")  # fmt: skip

    g = group("training")
    add(
        g,
        "--train_epochs",
        role=RECIPE,
        type=epochs_or_auto,
        default="auto",
        help=f"maximum epochs; auto: enough to pass about {AUTO_EPOCH_WINDOWS:,} training windows through the model "
        f"(12 on the built-in data), at least {AUTO_EPOCHS[0]} and at most {AUTO_EPOCHS[1]}",
    )
    add(
        g,
        "--batch_size",
        role=LAYOUT,
        name=NamePart(6, "bs{}"),
        type=size_or_auto,
        default=32,
        help="micro-batch size (samples per forward pass); auto (with --target_batch_size): the largest that fits the memory "
        "budget (CUDA: measured by a short probe; CPU: estimated), steps chosen to keep the target",
    )
    add(
        g,
        "--max_memory_fraction",
        role=RUN,
        type=_number(float, 0.0, 1.0, low_open=True, name="a number"),
        default=0.9,
        help="--batch_size auto: share of the GPU's memory (CPU: of the memory available now) that training may use",
    )
    add(
        g,
        "--max_memory_mb",
        role=RUN,
        type=positive_int(10**9),
        default=None,
        help="--batch_size auto: budget in MiB for what training adds to the weights and data (gradients, optimizer state, "
        "activations; an estimate), instead of --max_memory_fraction; on CUDA it replaces the probe",
    )
    add(
        g, "--learning_rate", role=RECIPE, name=NamePart(8, "lr{:g}"), type=positive_float(10.0), default=2e-3, help="initial learning rate"
    )
    add(g, "--optimizer", role=RECIPE, choices=("radam", "adamw", "sgd"), default="radam", help="optimizer (sgd uses momentum 0.9)")
    add(g, "--weight_decay", role=RECIPE, type=non_negative_float(1.0), default=1e-4, help="weight decay (decoupled for radam/adamw)")
    add(
        g,
        "--lr_scheduler",
        role=RECIPE,
        choices=("plateau", "cosine", "none"),
        default="cosine",
        help="plateau: ReduceLROnPlateau on the validation loss, once per epoch; cosine: warm-up then cosine decay, "
        "stepped once per optimizer update and sized from the real number of updates",
    )
    add(g, "--warmup_steps", role=RECIPE, type=non_negative_int(10**9), default=0, help="cosine: linear warm-up, in optimizer updates")
    add(g, "--min_lr", role=RECIPE, type=non_negative_float(10.0), default=0.0, help="cosine: learning rate at the end of the schedule")
    add(
        g,
        "--lr_factor",
        role=RECIPE,
        type=_number(float, 0.0, 1.0, low_open=True, name="a number"),
        default=0.5,
        help="plateau: LR multiplier",
    )
    add(
        g,
        "--lr_patience",
        role=RECIPE,
        type=non_negative_int(10_000),
        default=2,
        help="plateau: epochs without improvement before the LR drops",
    )
    add(
        g,
        "--patience",
        role=RECIPE,
        type=non_negative_int(100_000),
        default=8,
        help="early stopping: epochs without validation-loss improvement (0: off)",
    )
    add(
        g,
        "--monitor",
        role=RECIPE,
        choices=("loss", "macro_f1"),
        default="loss",
        help="validation measure for early stopping and best.pt (ReduceLROnPlateau always follows the loss)",
    )
    add(
        g,
        "--max_grad_norm",
        role=RECIPE,
        type=non_negative_float(),
        default=1.0,
        help="clip the gradient norm once per optimizer update, on the whole window's gradient (0: off)",
    )
    add(
        g,
        "--max_bad_windows",
        role=RUN,
        type=positive_int(10**6),
        default=5,
        help="abort (exit code 3) after this many consecutive accumulation windows with a non-finite loss or gradient; "
        "each such window is discarded without touching the weights",
    )
    add(g, "--use_amp", role=RECIPE, action="store_true", help="mixed precision: CUDA fp16 with GradScaler (or bf16), CPU bf16")
    add(g, "--amp_dtype", role=RECIPE, choices=("fp16", "bf16"), default="fp16", help="CUDA AMP dtype")
    add(
        g,
        "--compile",
        role=RUN,
        nargs="?",
        const="default",
        choices=("off", "default", "reduce-overhead", "max-autotune"),
        default="off",
        help="train with torch.compile (the flag alone: mode 'default'; reduce-overhead adds CUDA graphs). Shapes are kept "
        "static: the short last batch compiles once more. The first epoch pays the compilation; evaluation stays eager",
    )

    g = group("accumulation", "micro-batches summed into one optimizer update; effective batch = batch_size x steps x processes")
    add(
        g,
        "--gradient_accumulation_steps",
        role=LAYOUT,
        name=NamePart(7, "ga{}", lambda a: a.target_batch_size is None),
        type=positive_int(100_000),
        default=None,
        help="micro-batches per optimizer update (default 1; not together with --enable_auto_gradient_accumulation)",
    )
    add(
        g,
        "--enable_auto_gradient_accumulation",
        role=LAYOUT,
        action="store_true",
        help="choose the steps from --batch_size: < 4 -> 4 steps, 4..7 -> 2, >= 8 -> 1 (not with --gradient_accumulation_steps)",
    )
    add(
        g,
        "--target_batch_size",
        role=LAYOUT,
        name=NamePart(7, "tb{}"),
        type=positive_int(10**9),
        default=None,
        help="effective batch to aim for: steps = ceil(N / (batch_size x processes)), so 1, 2 or 4 processes train the "
        "same recipe (not with --gradient_accumulation_steps or --enable_auto_gradient_accumulation)",
    )
    add(
        g,
        "--cross_epoch_accumulation",
        role=RECIPE,
        action="store_true",
        help="let a window carry over the epoch end instead of flushing it there",
    )
    add(
        g,
        "--log_grad_noise",
        role=RUN,
        action="store_true",
        help="estimate the gradient noise scale B_simple from each window's micro-batch gradients (needs >= 2 steps; "
        "one process), log it per epoch and recommend an effective batch at the end; costs one copy of the gradients",
    )

    g = group(
        "processes",
        "data-parallel training: start with torchrun (e.g. torchrun --nproc_per_node 2 run.py ...); each process trains its "
        "share of every micro-batch and gradients are summed once per optimizer update",
    )
    add(
        g,
        "--dist_backend",
        role=RUN,
        choices=("auto", "gloo", "nccl"),
        default="auto",
        help="torch.distributed backend: auto is nccl on CUDA and gloo on the CPU",
    )
    add(
        g,
        "--dist_timeout",
        role=RUN,
        type=positive_float(86_400.0),
        default=600.0,
        help="seconds a process waits for the others in any collective before stopping with an error (exit code 4)",
    )

    g = group("loss", presets_help())
    add(
        g,
        "--loss_preset",
        role=RECIPE,
        name=NamePart(9, "{}"),
        choices=list(PRESETS),
        default="hvac_similar_optimized",
        help="loss preset (see above)",
    )
    add(
        g,
        "--class_weights",
        role=RECIPE,
        choices=("auto", "none", "balanced"),
        default="auto",
        help="balanced: n/(K*n_c) from training labels; auto: balanced when the preset asks for it or the training "
        "classes are imbalanced (largest > 1.5 x smallest), else none",
    )

    g = group("output")
    add(g, "--checkpoints", role=RUN, default="./checkpoints", help="folder for <run>/last.pt and best.pt")
    add(g, "--results", role=RUN, default="./results", help="folder for <run>/metrics.json, history.csv, plots, and summary.csv")
    add(
        g,
        "--overwrite",
        role=RUN,
        action="store_true",
        help="replace this run's earlier checkpoints and results (without it, a run whose folder holds a checkpoint is refused)",
    )
    add(
        g,
        "--normal_class",
        role=RUN,
        metavar="NAME",
        default=None,
        help="the fault-free class of the fault-detection report (false-alarm and detection rates); default: a class named "
        "normal (the 0 label of a --fault_inventory file)",
    )
    add(
        g,
        "--tensorboard",
        role=RUN,
        action="store_true",
        help="also write per-epoch scalars to <results>/<run>/tensorboard (needs: pip install tensorboard)",
    )
    add(
        g,
        "--resume",
        role=RUN,
        metavar="auto|PATH",
        default=None,
        help="continue training from a checkpoint, also from inside an accumulation window; auto: this run's last.pt "
        "if there is one, else start fresh",
    )
    add(
        g,
        "--save_every_updates",
        role=RUN,
        type=non_negative_int(10**9),
        default=0,
        help="also write last.pt every this many optimizer updates (0: only at epoch ends and on Ctrl-C/SIGTERM)",
    )
    add(
        g,
        "--progress",
        role=RUN,
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="auto: a tqdm bar on a terminal, whole lines in a log file",
    )
    g = group("quick checks", "for CI smoke runs and sweeps: see README, 'Smoke runs in CI'")
    add(g, "--fast_dev_run", role=RUN, type=batches_or_auto, nargs="?", const="auto", default=None, metavar="N",
        help="train N micro-batches (default: the accumulation steps, at least 2: a full window, and a flushed one when N is "
        "not a multiple of the steps) for one epoch (or --train_epochs), validate and test on N batches, write every output "
        "into a temporary folder (unless --results / --checkpoints are given), read them back and print 'smoke run passed'")  # fmt: skip
    add(g, "--limit_train_batches", role=RECIPE, older_runs=None, type=positive_int(10**9), default=None, metavar="N",
        help="train on the first N micro-batches of every epoch's order; the accumulation windows and the learning-rate "
        "schedule are sized from N")  # fmt: skip
    add(g, "--limit_val_batches", role=RECIPE, older_runs=None, type=positive_int(10**9), default=None, metavar="N",
        help=f"validate on N batches of {EVAL_BATCH_SIZE} windows (of the micro-batch with --batch_size auto), spread evenly over "
        "the validation split; the test stays whole")  # fmt: skip
    add(g, "--dry_run", role=RUN, action="store_true",
        help="build the data and the model, print the plan (data, model size and memory per micro-batch, loss, optimizer and "
        "schedule, accumulation, updates, run folders) and exit without training or writing anything")  # fmt: skip
    g = group(
        "use a trained model",
        "python run.py --predict --checkpoint PATH --data_path NEW.csv: the trained windowing, scaler and graph applied to new logs",
    )
    add(
        g,
        "--predict",
        role=RUN,
        action="store_true",
        help="apply --checkpoint to --data_path (no labels needed) and write predictions.csv; with labels, also the metrics",
    )
    add(g, "--checkpoint", role=RUN, metavar="PATH", default=None,
        help="--predict: a best.pt or last.pt written by this runner; several, comma-separated (A.pt,B.pt): an ensemble, "
        "their class probabilities averaged (same sensors, classes and window)")  # fmt: skip
    add(
        g,
        "--export",
        role=RUN,
        choices=("torchscript", "onnx"),
        default=None,
        help="after testing (also with --is_training 0), write <checkpoints>/<run>/model.ts|.onnx and a model.json card: raw "
        "sensor windows [B, T, C] in, class probabilities out, the scaler (and GAF / graph) inside; onnx needs pip install onnx onnxscript",
    )

    from utils import tsl

    tsl.add_flags(
        p,
        group(
            "Time-Series-Library names",
            "accepted so that TSL classification scripts run: translated into the flags above; TSL flags that do not apply "
            "here (--top_k, --features, --label_len, --pred_len, --embed, augmentation flags, ...) are accepted and named in one note",
        ),
        add,
        TSL,
    )
    return p


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None = None) -> list[str]:
    """Cross-flag checks and defaults that depend on other flags; returns notes to print
    (Time-Series-Library flags that were mapped or ignored)."""
    from exp.runtime import launched_world_size
    from models import DEFAULT_MODEL, model_format
    from utils import tsl
    from utils.outputs import safe_name

    notes = tsl.translate(parser, args, argv, launched_world_size())
    if args.model is None:  # own data: the model that did best on real AHU logs (benchmarks/README.md)
        args.model = DEFAULT_MODEL[args.data or ("Classification" if args.data_path else "DualGAF")]
    if args.data is None:
        args.data = model_format(args.model)
    if model_format(args.model) != args.data:
        parser.error(f"argument --model: {args.model} takes --data {model_format(args.model)}, not --data {args.data}")
    if args.model in ("DualGAFNet", "Transformer") and args.d_model % args.n_heads:
        parser.error(f"argument --n_heads: {args.n_heads} does not divide --d_model {args.d_model}")
    if args.model_id is None:
        args.model_id = safe_name(Path(args.data_path).stem) if args.data_path else "ahu"
    if args.stride is None and not args.predict:  # --predict: the checkpoint's stride
        args.stride = max(1, args.step // 2)
    if args.split_fold and args.split != "blocked":
        parser.error(f"argument --split_fold: folds deal the blocks of --split blocked, not --split {args.split}")
    if args.train_stride is not None and args.split == "random":
        parser.error("argument --train_stride: --split random deals windows at random, use --split blocked or chronological")
    if args.data_path is None:
        for flag in ("root_path", "time_col", "feature_cols", "fault_inventory", "duplicates", "max_gap"):
            if getattr(args, flag) not in (None, "."):
                parser.error(f"argument --{flag}: given without --data_path (the built-in simulator needs none)")
    if args.max_gap is not None and args.missing == "drop":
        parser.error("argument --max_gap: fills gaps with rows that --missing drop would drop again; use --missing ffill or interpolate")
    if args.sensor_roles is not None:
        args.derived_signals = "auto"
    if args.derived_signals is None:
        args.derived_signals = DERIVED_SIGNALS_DEFAULT.get(args.model, "off")
    if args.window_stats is None:
        args.window_stats = WINDOW_STATS_DEFAULT.get(args.model, False)
    if args.window_stats and args.model not in WINDOW_STATS_DEFAULT:
        parser.error(f"argument --window_stats: {args.model} has no statistics branch (only {', '.join(WINDOW_STATS_DEFAULT)})")
    if args.augment_jitter is None:
        args.augment_jitter = AUGMENT_JITTER_DEFAULT.get(args.model, 0.0)
    typed = tsl.typed_flags(argv)
    if args.no_temporal and "temporal" in typed:
        parser.error("argument --temporal: --no_temporal leaves the temporal branch out; give one or the other")
    asked = {"derived_signals", "sensor_roles"} & typed
    if args.derived_signals == "auto" and asked and args.data_path and not args.predict and Path(args.data_path).suffix.lower() == ".ts":
        parser.error(f"argument --{sorted(asked)[0]}: UEA files hold ready-cut samples without sensor names; use it with sensor logs")
    if args.resident_data == "on" and args.num_workers:
        parser.error(f"argument --resident_data: on cuts every batch on the device, so --num_workers {args.num_workers} would idle")
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
        parser.error(f"argument --dist_backend: nccl needs CUDA devices, not --device {args.device} (use --dist_backend gloo)")
    if args.target_batch_size is not None and (args.gradient_accumulation_steps is not None or args.enable_auto_gradient_accumulation):
        other = "--enable_auto_gradient_accumulation" if args.enable_auto_gradient_accumulation else "--gradient_accumulation_steps"
        parser.error(f"argument --target_batch_size: sets the steps itself; drop it or {other}")
    for flag in ("max_memory_fraction", "max_memory_mb"):
        if flag in typed and args.batch_size != "auto":
            parser.error(f"argument --{flag}: sets the memory budget of --batch_size auto, and this run has --batch_size {args.batch_size}")
    if args.predict and (args.checkpoint is None or args.data_path is None):
        parser.error("argument --predict: needs --checkpoint PATH (a best.pt) and --data_path NEW.csv")
    if args.predict:
        for flag in ("export", "tensorboard", "itr", "ensemble", "resume", "is_training"):
            if flag in typed:
                parser.error(f"argument --{flag}: does not apply to --predict (it applies --checkpoint to --data_path)")
        if launched_world_size() > 1:
            parser.error("argument --predict: runs on one process; start it with python, not torchrun")
    if args.fast_dev_run is not None:
        clashes = [flag for flag in ("resume", "predict", "dry_run", "export_data", "limit_train_batches", "limit_val_batches", "itr")
                   if flag in typed] + (["is_training"] if not args.is_training else [])  # fmt: skip
        if clashes:
            parser.error(f"argument --fast_dev_run: trains and tests one short run of its own; drop --{clashes[0]}")
        if "train_epochs" not in typed:
            args.train_epochs = 1
    if args.dry_run and (args.predict or args.export_data):
        parser.error(f"argument --dry_run: plans a training run; drop {'--predict' if args.predict else '--export_data'}")
    if args.checkpoint is not None and not args.predict:
        parser.error("argument --checkpoint: is read by --predict (to continue training use --resume PATH)")
    if args.overwrite and (args.resume is not None or not args.is_training or args.predict):
        other = "--resume continues it" if args.resume is not None else "it only applies to training"
        parser.error(f"argument --overwrite: starts the run afresh, but {other}")
    if args.ensemble and args.itr < 2:  # (with --predict, refused above)
        parser.error(f"argument --ensemble: averages the --itr repeats, and this run has --itr {args.itr}; give --itr 2 or more")
    if args.resume not in (None, "auto") and args.itr > 1:
        parser.error("argument --resume: a checkpoint path resumes one run; use --resume auto with --itr")
    if args.export_data is not None and not args.export_data.strip():
        parser.error("argument --export_data: empty file name")
    for flag in ("model_id", "des"):
        value = getattr(args, flag)
        if not value or not re.fullmatch(r"[\w.+=-]+", value) or value in (".", ".."):
            parser.error(f"argument --{flag}: {value!r} must be a non-empty name of letters, digits and . _ - + = (it names folders)")
    return notes


def accumulation_plan(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Micro-batch, steps and processes, decided once here and handed to the runner."""
    from exp.accumulation import plan_accumulation
    from exp.runtime import launched_world_size
    from utils.errors import UserError

    try:
        plan = plan_accumulation(
            args.batch_size, args.gradient_accumulation_steps, args.enable_auto_gradient_accumulation, args.target_batch_size,
            launched_world_size(),
        )  # fmt: skip
    except UserError as exc:
        parser.error(f"argument {exc}")
    if args.log_grad_noise and args.is_training and plan.sizing != "auto" and (plan.steps < 2 or plan.world_size > 1):
        parser.error(f"argument --log_grad_noise: compares the micro-batches of a window, so it needs >= 2 accumulation steps "
                     f"on one process (this run: {plan.steps} step(s), {plan.world_size} process(es))")  # fmt: skip
    return plan


# Recipe flags left out of the configuration hash: paths (the same file can be named from
# another folder; --model_id names the file by default, and the data fingerprint guards a resume).
NOT_HASHED = ("root_path", "data_path")
HASH_ORDER = 10.5  # the hash's place in the run name: after the seed, before --des


def config_hash(args: argparse.Namespace) -> str:
    """Six hex digits of the recipe flags that the readable name leaves out, where they differ
    from their defaults ('' when none does): runs that differ in --dropout, --norm, --optimizer,
    ... get folders of their own, while a new flag with a default leaves every name as it was.
    Stable across Python sessions (sha1 of sorted JSON)."""
    parser = build_parser()
    reference = parser.parse_args(["--step", str(args.step), "--model", args.model])  # defaults resolved as validate() does
    validate(parser, reference)
    unnamed = [dest for dest, flag in flag_table().items() if flag.role == RECIPE and flag.name is None and dest not in NOT_HASHED]
    changed = {dest: getattr(args, dest) for dest in unnamed if getattr(args, dest) != getattr(reference, dest)}
    if not changed:
        return ""
    return hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]


def run_name(args: argparse.Namespace, plan, ii: int) -> str:
    """Runs that differ in any name part never overwrite each other. With --target_batch_size
    the name holds the target, not the steps, so the same run continues on another number of
    processes; without it, a run of several processes says how many (its effective batch differs).
    Every other recipe flag goes into a short hash (``config_hash``)."""
    steps = plan.steps if plan.world_size == 1 else f"{plan.steps}_np{plan.world_size}"  # the resolved layout
    values = {**vars(args), "gradient_accumulation_steps": steps}
    parts = []
    for dest, flag in flag_table().items():
        if flag.name is None:
            continue
        shows = flag.name.shows(args) if flag.name.shows else values[dest] is not None and values[dest] is not False
        if shows:
            parts.append((flag.name.order, flag.name.fmt.format(values[dest])))
    digest = config_hash(args)
    if digest:
        parts.append((HASH_ORDER, f"h{digest}"))
    return "_".join([*(text for _, text in sorted(parts, key=lambda part: part[0])), str(ii)])


def check_run_folders(args: argparse.Namespace, settings: list[str], runtime) -> None:
    """A training run never replaces an earlier run's work unless asked (--resume, --overwrite).
    --resume auto continues a run's last.pt; without one it starts afresh, so the rule holds."""
    if not args.is_training or args.resume not in (None, "auto") or args.overwrite:
        return
    from utils.errors import UserError

    def earlier_run(setting: str) -> tuple[Path, str] | None:
        ckpt, results = Path(args.checkpoints) / setting, Path(args.results) / setting
        if args.resume == "auto" and (ckpt / "last.pt").is_file():
            return None  # continued, not replaced
        held = [(folder, name) for folder, names in ((ckpt, ("last.pt", "best.pt")), (results, ("metrics.json",)))
                for name in names if (folder / name).is_file()]  # fmt: skip
        return held[0] if held else None

    found = runtime.from_writer(lambda: next(filter(None, map(earlier_run, settings)), None))  # the writer's disk decides
    if found:
        raise UserError(
            f"run folder {found[0]} already holds {found[1]} of an earlier run: continue it with --resume auto, start "
            "another with --des NAME, or replace it with --overwrite"
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    notes = validate(parser, args, argv)
    plan = accumulation_plan(parser, args)

    from exp.exp import TrainingAborted
    from exp.runtime import PeerFailure, is_peer_failure, start_runtime
    from exp.smoke import SmokeRunFailed, temporary_outputs
    from exp.trainer import is_out_of_memory
    from utils import tsl
    from utils.errors import OutputError, UserError
    from utils.signals import Interrupted

    runtime, wait_s = None, 0.0  # how long the teardown waits for the other processes
    try:
        runtime = start_runtime(args)
        if not runtime.is_writer:  # one process prints; the others print errors only
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
            args.progress = "none"
        for note in notes:
            print(f"note: {note}", flush=True)
        with temporary_outputs(args, tsl.typed_flags(argv)) as scratch:  # --fast_dev_run
            code = _run(args, plan, runtime, scratch)
        wait_s = args.dist_timeout
        return code
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        wait_s = 10.0  # usually raised by every process at once; a lone one must not wait long
        return 2
    except (Interrupted, TrainingAborted, OutputError, PeerFailure, SmokeRunFailed) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        wait_s = 0.0 if isinstance(exc, PeerFailure) else args.dist_timeout  # the others agreed: they stop too
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last complete checkpoint stays
        print("run.py: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError, like the CPU allocator's error
        if is_out_of_memory(exc):
            print(out_of_memory_error(args, plan, exc), file=sys.stderr)
            return 2
        if runtime is None or not runtime.distributed or not is_peer_failure(exc):
            raise
        failure = PeerFailure(exc, args.dist_timeout)
        print(f"run.py: {failure}", file=sys.stderr)
        return failure.exit_code
    finally:
        if runtime is not None:
            runtime.close(wait_s)


def out_of_memory_error(args: argparse.Namespace, plan, exc: BaseException) -> str:
    """Out of memory outside a training micro-batch (those shrink and go on): what to change."""
    what = f"run.py: error: out of memory ({type(exc).__name__}) with micro-batches of --batch_size {args.batch_size}"
    if args.batch_size == "auto":
        return f"{what}; lower --max_memory_fraction or give a smaller --max_memory_mb"
    smaller = max(1, args.batch_size // 2)
    keep = (f"--batch_size {smaller} (--target_batch_size {plan.target} recomputes the steps)" if plan.target is not None
            else f"--batch_size {smaller} --gradient_accumulation_steps {2 * plan.steps}")  # fmt: skip
    return f"{what}; lower --batch_size and raise the accumulation steps to keep the effective batch (e.g. {keep})"


def _run(args: argparse.Namespace, plan, runtime, scratch: Path | None = None) -> int:
    """``scratch``: the temporary folder of a --fast_dev_run's outputs (removed afterwards), if any."""
    from data_provider.data_factory import build_data
    from data_provider.sources import export_simulated_csv
    from exp.exp import Exp
    from exp.export import check_available as check_export
    from exp.micro_batch import kept_on_resume
    from exp.smoke import check_outputs, dry_run_plan, smoke_line
    from utils import tracking, tsl
    from utils.errors import UserError
    from utils.fdd import find_normal_class
    from utils.outputs import write_json
    from utils.seed import make_deterministic, seed_everything

    if args.export_data:
        if runtime.is_writer:
            rows = export_simulated_csv(args, args.export_data)
            print(f"Wrote {rows} rows of simulated AHU data to {args.export_data}")
        return 0
    if args.deterministic:
        make_deterministic()
    if args.predict:
        from exp.predict import predict

        return predict(args)  # one process (refused under torchrun)
    tracking.check_available(args)
    check_export(args.export)
    repeats = [copy.copy(args) for _ in range(args.itr)]
    for ii, run_args in enumerate(repeats):
        run_args.seed = args.seed + ii
    settings = [run_name(run_args, plan, ii) for ii, run_args in enumerate(repeats)]
    try:
        check_run_folders(args, settings, runtime)
        refusal = None
    except UserError as exc:
        if not args.dry_run:
            raise
        refusal = str(exc)  # the plan says so
    if plan.note():
        print(plan.note(), flush=True)
    data = build_data(args)  # the same windows for every repetition
    tsl.check_dims(args, len(data.sensors), data.num_classes, data.source)
    find_normal_class(data.class_names, args.normal_class)  # a wrong --normal_class stops the run before it trains
    results, probabilities = [], []
    for run_args, setting in zip(repeats, settings):
        if not args.dry_run:
            print(f">>> {'training' if args.is_training else 'testing'} {setting}", flush=True)
        seed_everything(run_args.seed)
        exp = Exp(run_args, data, kept_on_resume(run_args, setting, plan, runtime), runtime)
        if args.dry_run:
            print(dry_run_plan(exp, setting, refusal), flush=True)
            continue
        if args.is_training:
            exp.train(setting)
        results.append(exp.test(setting))
        probabilities.append(exp.test_report["probs"])
        if args.export:
            exp.export(setting)
        if args.fast_dev_run is not None:
            checked = runtime.from_writer(lambda: check_outputs(exp, setting, results[-1]))  # noqa: B023 - called at once
            print(smoke_line(exp, checked, scratch), flush=True)
    if len(results) > 1:
        summary = repeat_summary(results)
        path = Path(args.results) / settings[0] / "repeats.json"
        runtime.write(path, lambda: write_json(path, summary))
        print(f"{summary['line']} -> {path}", flush=True)
    if args.ensemble and results and runtime.is_writer:
        from exp.ensemble import score_ensemble

        tested = exp.data  # the same test windows in every repeat
        score_ensemble(results, probabilities, exp.test_report["y_true"], tested.class_names,
                       find_normal_class(tested.class_names, args.normal_class), tested.window_bounds(tested.test),
                       Path(args.results) / settings[0])  # fmt: skip
    return 0


def repeat_summary(results: list[dict]) -> dict:
    """Mean and standard deviation (n - 1) of the test figures over --itr repeats."""
    import numpy as np

    keys = ("test_accuracy", "test_macro_f1", "test_loss", "false_alarm_rate", "detection_rate")
    summary = {"runs": [r["run"] for r in results], "seeds": [r["seed"] for r in results]}
    for key in keys:
        values = np.array([r[key] for r in results if r.get(key) is not None], dtype=float)
        if len(values) == len(results):
            summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "values": values.tolist()}
    acc, f1 = summary["test_accuracy"], summary["test_macro_f1"]
    summary["line"] = (
        f"Over {len(results)} repeats (seeds {results[0]['seed']}..{results[-1]['seed']}): accuracy {acc['mean']:.2%} +- "
        f"{acc['std']:.2%} | macro-F1 {f1['mean']:.4f} +- {f1['std']:.4f}"
    )
    return summary


def exit_process(code: int) -> None:
    """Leave with ``code``; after a peer failure (4) at once, since every file it wrote was already complete."""
    from exp.runtime import PeerFailure, leave_at_once

    if code == PeerFailure.exit_code:
        leave_at_once(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_process(main())
