"""Several logs in one run: each file one *unit* (an air handler, a building's export).

``--data_path`` names one file, several comma-separated, a glob, or a folder (its CSV files, less the
``NAME-faults.csv`` inventories beside them). The units' tables are stacked into one, with a segment
break at every unit's first row, so no window crosses two files, and a unit index per row, so the
blocked split deals its blocks per unit and class and every unit reaches every split.
"""

from __future__ import annotations

import glob
from dataclasses import replace
from pathlib import Path

import numpy as np

from utils.errors import UserError

INVENTORY_SUFFIX = "-faults.csv"  # --fault_inventory auto: NAME-faults.csv beside NAME.csv
PATTERN_CHARACTERS = "*?["


def names_several(root: str, data_path: str) -> bool:
    """Whether ``--data_path`` is written as several logs (a list or a glob) rather than one path. A file that
    exists under that very name is one log, commas or brackets in its name or not."""
    written = "," in data_path or any(c in data_path for c in PATTERN_CHARACTERS)
    return written and not (Path(root) / data_path).is_file()


def default_name(root: str, data_path: str) -> str:
    """The run's default --model_id: the file's name, the first of a list and how many more (SZCAV+2), the
    folder of a glob, or a folder's own name."""
    if not names_several(root, data_path):
        return Path(data_path).stem or Path(root, data_path).resolve().name
    parts = [part.strip() for part in data_path.split(",") if part.strip()]
    first = Path(parts[0]) if parts else Path(data_path)
    if any(c in str(first) for c in PATTERN_CHARACTERS):
        first = first.parent
    name = first.stem or Path(root, first).resolve().name  # a glob in the root itself: the root's name
    return f"{name}+{len(parts) - 1}" if len(parts) > 1 else name


def unit_paths(root: str, data_path: str) -> list[Path]:
    """The log files ``--data_path`` names under ``--root_path``, in the order given (sorted within a glob or folder)."""
    if not names_several(root, data_path) and not (Path(root) / data_path).is_dir():
        return [Path(root) / data_path]  # one log (read_strings names what is wrong with it, if anything)
    paths: list[Path] = []
    for part in (part.strip() for part in data_path.split(",")):
        if not part:
            raise UserError(f"--data_path: an empty name in {data_path!r} (separate several files with commas)")
        full = Path(root) / part
        if any(c in part for c in PATTERN_CHARACTERS):
            pattern = str(Path(glob.escape(root)) / part)  # the root is a folder name, not a pattern
            found = [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_file() and not _inventory(Path(p))]
            if not found:
                raise UserError(f"--data_path: {part} matches no log file under {root}")
        elif full.is_dir():
            found = [p for p in sorted(full.iterdir()) if p.is_file() and not p.name.startswith(".")
                     and p.suffix.lower() in (".csv", ".parquet") and not _inventory(p)]  # fmt: skip
            if not found:
                raise UserError(f"--data_path: {full} is a folder with no .csv or .parquet log in it")
        else:
            found = [full]
        paths += found
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise UserError(f"--data_path: {twice[0]} is named twice")
    names = unit_names(root, paths)
    same = sorted({name for name in names if names.count(name) > 1})
    if same:  # a.csv and a.parquet: the same log twice, or two exports of one name
        raise UserError(f"--data_path: two logs are both unit {same[0]}; keep one of them")
    return paths


def unit_names(root: str, paths: list[Path]) -> list[str]:
    """Each unit's name: its path below --root_path, less the suffix (b1/AHU and b2/AHU stay apart)."""
    def name(path: Path) -> str:
        try:
            below = path.relative_to(root)
        except ValueError:
            below = path
        return str(below.with_suffix(""))

    return [name(path) for path in paths]


def _inventory(path: Path) -> bool:
    return path.name.endswith(INVENTORY_SUFFIX)


def inventory_of(path: Path, inventory: str | None, root: str, several: bool) -> Path | None:
    """The fault inventory of one unit: none, the one file named, or with ``auto`` NAME-faults.csv beside it."""
    if inventory is None:
        return None
    if inventory == "auto":
        beside = path.with_name(path.stem + INVENTORY_SUFFIX)
        if not beside.is_file():
            raise UserError(f"--fault_inventory auto: {path} has no inventory {beside.name} beside it")
        return beside
    if several:
        raise UserError(
            f"--fault_inventory {inventory}: one inventory for several logs; name each unit's inventory "
            f"NAME{INVENTORY_SUFFIX} beside its NAME.csv and give --fault_inventory auto"
        )
    return Path(root) / inventory


def stack_units(tables: list, paths: list[Path], names: list[str], root: str = ".") -> dict:
    """The fields of one table stacked from the units' tables (``data_provider.sources.Table``, one per path):
    the same sensor columns in each (put in the first unit's order), the same sampling interval; ``names``: the
    union of the units' classes, in the class order."""
    first = tables[0]
    for table, path in zip(tables[1:], paths[1:]):
        missing = [c for c in first.channels if c not in table.channels]
        extra = [c for c in table.channels if c not in first.channels]
        if missing or extra:
            what = "; ".join(part for part in (f"lacks {', '.join(missing)}" if missing else "",
                                                 f"has {', '.join(extra)} besides" if extra else "") if part)  # fmt: skip
            raise UserError(
                f"--data_path: {path} has other sensor columns than {paths[0]} ({what}); units are matched by column "
                "name: give the columns they share with --feature_cols"
            )
        here, there = _interval(table), _interval(first)
        if here != there:
            raise UserError(
                f"--data_path: {path} is sampled every {here} s and {paths[0]} every {there} s; the units of one run "
                "need one sampling interval (resample the logs to one)"
            )
    lookup = {name: i for i, name in enumerate(names)}
    lengths = [len(table.labels) for table in tables]
    starts = np.cumsum([0, *lengths[:-1]])
    breaks = np.concatenate([t.breaks for t in tables])
    breaks[starts] = True  # a unit starts a segment: windows never cross files
    order = [[table.channels.index(c) for c in first.channels] for table in tables]
    times = None if first.times is None else np.concatenate([t.times for t in tables])
    sampling = first.sampling
    if sampling is not None:
        counts = ("cut_gaps", "off_grid", "missing_rows", "filled_gaps", "filled_rows")
        sampling = replace(sampling, **{key: sum(getattr(t.sampling, key) for t in tables) for key in counts})
    return dict(
        values=np.concatenate([t.values[:, o] for t, o in zip(tables, order)]),
        labels=np.concatenate([np.array([lookup[t.class_names[i]] for i in t.labels], dtype=np.int64) for t in tables]),
        breaks=breaks,
        class_names=names,
        channels=list(first.channels),
        source=f"{len(tables)} units ({', '.join(p.name for p in paths)})",
        notes=[f"{path.name}: {note}" for table, path in zip(tables, paths) for note in table.notes],
        times=times,
        sampling=sampling,
        units=np.repeat(np.arange(len(tables)), lengths),
        unit_names=unit_names(root, paths),
    )


def _interval(table) -> float | None:
    return None if table.sampling is None else table.sampling.interval_s


def unit_summary(units: np.ndarray, unit_names: list[str], split: dict) -> str:
    """One line per unit for the start-up summary: its rows and its windows in each split."""
    lines = ["Units:"]
    for index, name in enumerate(unit_names):
        counts = " / ".join(f"{int((units[split[s].starts] == index).sum())} {s}" for s in ("train", "val", "test"))
        lines.append(f"  {name}: {int((units == index).sum()):,} rows -> {counts} windows")
    return "\n".join(lines)
