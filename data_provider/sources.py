"""Where a run's table comes from: the built-in simulator, or a CSV file in the same layout.

Both give a ``Table``: sensor values [rows, channels], an integer label per row, timestamps,
the class names and the channel names. Everything downstream is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_provider import simulator
from utils.errors import UserError


@dataclass
class Table:
    values: np.ndarray  # [rows, channels] float64
    labels: np.ndarray  # [rows] int
    times: np.ndarray | None
    class_names: list[str]
    channels: list[str]
    source: str


def simulated_frame(args) -> pd.DataFrame:
    return simulator.simulate_ahu(days_per_class=args.sim_days, seed=args.sim_seed)


def load_table(args) -> Table:
    if not args.data_path:
        frame = simulated_frame(args)
        source = f"built-in AHU simulator ({args.sim_days} days per class, --sim_seed {args.sim_seed})"
        return _table_from_frame(frame, simulator.TIME_COLUMN, simulator.LABEL_COLUMN, simulator.SENSORS, source, list(simulator.FAULTS))
    path = Path(args.root_path) / args.data_path
    frame = read_csv(path)
    features = [c.strip() for c in args.feature_cols.split(",")] if args.feature_cols else None
    return _table_from_frame(frame, args.time_col, args.label_col, features, str(path), None)


def read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"--data_path: file {path} does not exist")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"--data_path: cannot read {path} as CSV ({type(exc).__name__})") from None
    frame.columns = [str(c).strip() for c in frame.columns]  # real exports carry trailing spaces
    return frame


def _table_from_frame(frame, time_col, label_col, features, source, class_names) -> Table:
    if label_col not in frame.columns:
        raise UserError(f"--label_col: column '{label_col}' not found in {source} (columns: {', '.join(frame.columns)})")
    times = None
    if time_col and time_col in frame.columns:
        times = pd.to_datetime(frame[time_col], errors="coerce", format="mixed").to_numpy()
    if features is None:
        skip = {label_col, time_col}
        features = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    unknown = [c for c in features if c not in frame.columns]
    if unknown:
        raise UserError(f"--feature_cols: column(s) {', '.join(unknown)} not found in {source}")
    if not features:
        raise UserError(f"{source}: no numeric sensor columns besides '{label_col}'")
    values = frame[features].apply(pd.to_numeric, errors="coerce").ffill().bfill()
    empty = [c for c in features if values[c].isna().all()]
    if empty:
        raise UserError(f"{source}: column '{empty[0]}' has no numeric value")
    raw_labels = frame[label_col].astype(str).str.strip()
    names = class_names or sorted(raw_labels.unique())
    lookup = {name: i for i, name in enumerate(names)}
    if len(names) < 2:
        raise UserError(f"--label_col: column '{label_col}' of {source} holds one class only ({names[0]})")
    return Table(
        values=values.to_numpy(dtype=np.float64),
        labels=raw_labels.map(lookup).to_numpy(dtype=np.int64),
        times=times,
        class_names=list(names),
        channels=list(features),
        source=source,
    )


def export_simulated_csv(args, path: str) -> int:
    """Write the simulated table as CSV (the layout real logs have); returns the row count."""
    frame = simulated_frame(args)
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--export_data: {path} is a folder, not a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        frame.to_csv(tmp, index=False, date_format="%Y-%m-%d %H:%M")
        tmp.replace(target)
    except OSError as exc:
        raise UserError(f"--export_data: cannot write {path} ({exc.strerror})") from None
    return len(frame)
