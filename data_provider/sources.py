"""Where a run's table comes from: the built-in simulator or a CSV sensor log.

Both give a ``Table``: sensor values [rows, channels], an integer label per row, where new
segments start regardless of the label (time gaps, dropped rows), the class and channel names.
Everything downstream is shared. (UEA ``.ts`` files hold ready-cut samples instead: see
``data_provider/uea.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_provider import simulator
from data_provider.csv_source import Sampling, read_sensor_csv, sniff_dialect
from data_provider.units import inventory_of, stack_units, unit_paths
from utils.checkpoint import atomic_write
from utils.errors import UserError
from utils.fdd import NORMAL_NAMES


@dataclass
class Table:
    values: np.ndarray  # [rows, channels] float64
    labels: np.ndarray  # [rows] int
    breaks: np.ndarray  # [rows] bool: a segment starts here whatever the label
    class_names: list[str]
    channels: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    times: np.ndarray | None = None  # [rows] datetime64[ns], when the table has a time column
    derived: list = field(default_factory=list)  # recipe of the derived channels at the end (data_provider/derived.py)
    sampling: Sampling | None = None  # how a CSV log's rows lie in time (None: simulator, no time column)
    units: np.ndarray | None = None  # [rows] the unit (log file) of each row, with several logs (data_provider/units.py)
    unit_names: list[str] = field(default_factory=list)


def with_derived_signals(table: Table, args) -> Table:
    """--derived_signals auto: the table with one more channel per relation its sensors allow."""
    import torch

    from data_provider.derived import SIGNALS, Derivation, derived_names, plan_signals

    if args.derived_signals == "off":
        return table
    recipe, missing = plan_signals(table.channels, table.values, args.sensor_roles)
    if not recipe:
        table.notes.append("--derived_signals auto: no sensor roles found among the columns, so no derived signals "
                           "(name them with --sensor_roles FILE)")  # fmt: skip
        return table
    if missing:
        table.notes.append(f"--derived_signals auto: {len(recipe)} of {len(SIGNALS)} derived signals; left out for lack of "
                           f"columns: {', '.join(missing)}")  # fmt: skip
    table.values = Derivation(recipe)(torch.tensor(table.values, dtype=torch.float64)).numpy()
    table.channels = [*table.channels, *derived_names(recipe)]
    table.derived = recipe
    return table


def simulated_frame(args):
    return simulator.simulate_ahu(days_per_class=args.sim_days, seed=args.sim_seed)


def class_order(names) -> list[str]:
    """Fault-free first, then the faults alphabetically."""
    unique = sorted(set(names))
    normal = [n for n in unique if n.strip().lower() in NORMAL_NAMES]
    return normal + [n for n in unique if n not in normal]


def load_table(args) -> Table:
    if not args.data_path:
        frame = simulated_frame(args)
        names = list(simulator.FAULTS)
        lookup = {name: i for i, name in enumerate(names)}
        return Table(
            values=frame[simulator.SENSORS].to_numpy(dtype=np.float64),
            labels=frame[simulator.LABEL_COLUMN].map(lookup).to_numpy(dtype=np.int64),
            breaks=np.zeros(len(frame), dtype=bool),
            class_names=names,
            channels=list(simulator.SENSORS),
            source=f"built-in AHU simulator ({args.sim_days} days per class, --sim_seed {args.sim_seed})",
            times=frame[simulator.TIME_COLUMN].to_numpy(dtype="datetime64[ns]"),
        )
    paths = unit_paths(args.root_path, args.data_path)
    several = len(paths) > 1
    tables = [load_csv(args, path, inventory_of(path, args.fault_inventory, args.root_path, several)) for path in paths]
    names = class_order([name for table in tables for name in table.class_names])
    if len(names) < 2:
        where = f"of {paths[0]}" if not several else f"of all {len(paths)} logs"
        raise UserError(f"--label_col: column '{args.label_col}' {where} holds one class only ({names[0]})")
    return Table(**stack_units(tables, paths, names, args.root_path)) if several else tables[0]


def load_csv(args, path: Path, inventory: Path | None) -> Table:
    """One CSV log as a table."""
    features = [c.strip() for c in args.feature_cols.split(",")] if args.feature_cols else None
    dialect = sniff_dialect(path, args.csv_sep, args.csv_decimal)
    csv = read_sensor_csv(path, args.time_col, args.label_col, features, inventory, args.missing, dialect=dialect,
                          duplicates=args.duplicates, max_gap_s=args.max_gap)  # fmt: skip
    names = class_order(csv.labels)
    lookup = {name: i for i, name in enumerate(names)}
    return Table(
        values=csv.values,
        labels=np.array([lookup[label] for label in csv.labels], dtype=np.int64),
        breaks=csv.breaks,
        class_names=names,
        channels=csv.channels,
        source=f"{path} ({dialect.describe()})",
        notes=csv.notes,
        times=csv.times,
        sampling=csv.sampling,
    )


def export_simulated_csv(args, path: str) -> int:
    """Write the simulated table as CSV (the layout real logs have); returns the row count."""
    frame = simulated_frame(args)
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--export_data: {path} is a folder, not a file name")
    try:
        atomic_write(target, lambda handle: frame.to_csv(handle, index=False, date_format="%Y-%m-%d %H:%M"))
    except OSError as exc:
        raise UserError(f"--export_data: cannot write {path} ({exc.strerror})") from None
    return len(frame)
