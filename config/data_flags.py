"""The flags of the ``data`` group of ``--help``: where the sensor logs come from, how they are read,
windowed, split and augmented, and how each batch format sees them (config/flags.py declares the rest)."""

from __future__ import annotations

from config import tsl
from config.registry import FlagGroup, NamePart
from config.types import (
    decimal_mark,
    duration_seconds,
    float_in,
    int_in,
    non_negative_float,
    non_negative_int,
    positive_int,
    separator,
)
from data_provider.data_factory import FORMATS
from data_provider.windows import BLOCK_PATTERN
from models import MODELS, models_where


def _models_with(flag: str, value=None) -> list[str]:
    """The models whose spec declares a default of their own for ``flag`` (that default: ``value``)."""
    return models_where(lambda spec: flag in spec.defaults and value in (None, spec.defaults[flag]))


def data(g: FlagGroup) -> None:
    g.recipe(
        "--data",
        name=NamePart(2, "{}"),
        choices=(*FORMATS, tsl.UEA),
        default=None,
        help="batch format: plain windows, dual GASF+GADF images, or a sensor graph; default: the --model's format. "
        "UEA (as in Time-Series-Library): --root_path DIR --model_id NAME reads DIR/NAME_TRAIN.ts + NAME_TEST.ts "
        "in --model's format",
    )
    g.recipe("--root_path", default=".", help="folder of --data_path")
    g.recipe(
        "--data_path",
        default=None,
        help="CSV file under --root_path, or a UEA pair NAME (NAME_TRAIN.ts / NAME_TEST.ts); without it the "
        "built-in AHU simulator is used",
    )
    g.recipe(
        "--time_col",
        default=None,
        help="CSV: timestamp column; gaps cut segments, unsorted rows are sorted "
        "(default: a column named Datetime, Timestamp, Time or Date, if any)",
    )
    g.recipe(
        "--label_col", default="label", help="CSV: class label column (with --fault_inventory: the 0/1 ground truth)"
    )
    g.recipe(
        "--feature_cols", default=None, help="CSV: comma-separated sensor columns (default: every other numeric column)"
    )
    g.recipe(
        "--fault_inventory",
        metavar="CSV",
        default=None,
        help="CSV under --root_path with fault type, fault intensity and date columns: rows whose 0/1 label is 1 "
        "get the class '<type> / <intensity>' of their date, rows with 0 the class 'normal'",
    )
    g.recipe(
        "--missing",
        choices=("ffill", "interpolate", "drop"),
        default="ffill",
        help="empty cells, spreadsheet errors (#VALUE!) and infinities in sensor columns: carry the last value "
        "forward / interpolate linearly (both inside their segment) / drop the row (cutting the segment)",
    )
    g.run(
        "--csv_sep",
        type=separator,
        default=None,
        metavar="SEP",
        help="CSV: column separator, comma, semicolon or tab (default: detected from the first lines)",
    )
    g.run(
        "--csv_decimal",
        type=decimal_mark,
        default=None,
        metavar="MARK",
        help="CSV: decimal mark of the numbers, point or comma (default: detected; a comma needs --csv_sep "
        "semicolon or tab)",
    )
    g.recipe(
        "--duplicates",
        choices=("first", "last", "mean"),
        default=None,
        help="CSV: rows that repeat a time with other values (overlapping exports, the daylight-saving hour of "
        "local time) are refused unless this says which to keep: the first, the last, or the mean of their sensor "
        "values; rows identical in every cell are always dropped, with a note",
    )
    g.recipe(
        "--max_gap",
        older_runs=None,
        type=duration_seconds,
        default=None,
        metavar="DURATION",
        help="CSV: the longest gap between two rows (5min, 90s, 1h) that is filled with rows on the sampling grid, "
        "which --missing ffill or interpolate then fills like empty cells; a longer gap, or a step off the grid, "
        "cuts the log (default: one sampling interval, nothing filled)",
    )
    g.recipe(
        "--derived_signals",
        older_runs="off",
        choices=("auto", "off"),
        default=None,
        per_model="off",
        help=f"default: auto for {' and '.join(_models_with('derived_signals', 'auto'))}, off for the other "
        "models (measured on the real AHU files, see benchmarks/README.md); auto: add channels for the relations "
        "HVAC fault rules check (outdoor-air fraction from temperatures against the damper, mixed air outside "
        "outdoor/return air, supply-air set-point error, heating and cooling at once, duct-pressure error), from "
        "sensor roles found in the column names or --sensor_roles",
    )
    g.recipe(
        "--sensor_roles",
        older_runs=None,
        metavar="FILE",
        default=None,
        help='JSON file naming the columns of the sensor roles, e.g. {"mixed_air_temp": "MAT", '
        '"outdoor_air_damper": "OA_DMP"} (roles: see README); implies --derived_signals auto',
    )
    g.recipe(
        "--split",
        choices=("blocked", "chronological", "random"),
        default="blocked",
        help="blocked: blocks of --split_block windows dealt train,train,train,val,test per class; chronological: "
        "first 60/20/20 %% of each segment; random: leaks overlapping windows across splits (warned)",
    )
    g.recipe("--step", name=NamePart(3, "sl{}"), type=int_in(2, 100_000), default=96, help="window length in samples")
    g.recipe(
        "--stride", type=positive_int(100_000), default=None, help="window stride in samples (default: half of --step)"
    )
    g.recipe(
        "--train_stride",
        name=NamePart(4, "ts{}"),
        type=positive_int(100_000),
        default=None,
        help="stride of the training windows only, inside the training blocks: denser training windows are extra "
        "shifted views of the same rows; validation and test keep --stride (default: --stride; not with --split "
        "random, nor for UEA .ts files, whose samples come ready-cut)",
    )
    g.recipe(
        "--split_block",
        type=positive_int(100_000),
        default=4,
        help="leak-free split: each segment is cut into blocks of this many windows, dealt train,train,train,val,test",
    )
    last_fold = len(BLOCK_PATTERN) - 1
    g.recipe(
        "--split_fold",
        older_runs=0,
        type=int_in(0, last_fold),
        default=0,
        metavar="K",
        help=f"blocked cross-validation: deal the pattern K blocks on, so other blocks validate and test "
        f"(0-{last_fold}; the folds together test every block once)",
    )
    g.recipe(
        "--augment_shift",
        older_runs=0,
        type=non_negative_int(100_000),
        default=0,
        metavar="ROWS",
        help="augment the training windows: each epoch, move every window up to this many rows earlier or later, "
        "inside its own training block (0: off)",
    )
    jitter = [f"{MODELS[m].defaults['augment_jitter']:g} for {m}" for m in _models_with("augment_jitter")]
    g.recipe(
        "--augment_jitter",
        older_runs=0.0,
        type=float_in(0.0, 10.0),
        default=None,
        per_model=0.0,
        metavar="STD",
        help="augment the training windows: Gaussian noise of this standard deviation (scaled units) on every "
        f"value, drawn each epoch; 0: off (default: {', '.join(jitter)}, 0 for the other models, as measured on "
        "the real AHU files)",
    )
    g.recipe(
        "--augment_scale",
        older_runs=0.0,
        type=float_in(0.0, 10.0),
        default=0.0,
        metavar="STD",
        help="augment the training windows: multiply each sensor of a window by 1 + N(0, STD^2), drawn each "
        "epoch (0: off)",
    )
    g.recipe("--sim_days", type=int_in(1, 365), default=12, help="simulator: days per class")
    g.recipe(
        "--sim_seed", type=non_negative_int(2**31 - 1), default=0, help="simulator: seed of the simulated building"
    )
    g.run(
        "--export_data",
        metavar="CSV",
        default=None,
        saved=False,
        help="write the simulated table to this CSV file (the layout real logs have) and exit",
    )
    g.recipe(
        "--scale",
        choices=("global", "window"),
        default="global",
        help="DualGAF: map each sensor to [-1, 1] with its training-set range (keeps levels apart: a damper stuck "
        "at 25 %% vs 75 %%) or with each window's own range (shape only)",
    )
    g.recipe(
        "--gaf_size",
        type=int_in(2, 1024),
        default=32,
        help="DualGAF: image size; windows longer than this are shortened by PAA",
    )
    g.recipe(
        "--graph_threshold",
        type=non_negative_float(1.0),
        default=0.3,
        help="GNN: edge where |corr| >= this on training rows",
    )
    g.run("--num_workers", type=non_negative_int(64), default=0, help="DataLoader worker processes")
    g.run(
        "--resident_data",
        choices=("auto", "on", "off"),
        default="auto",
        help="keep every window of the data set on the training device and cut the batches there: no DataLoader, no "
        "copy per batch, the same batches (auto: on unless --num_workers > 0)",
    )
