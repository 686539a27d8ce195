"""Reading a sensor log from CSV, as building-automation exports really are.

* The separator (comma, semicolon, tab) and the decimal mark (point or comma, as European
  spreadsheets write) are detected from the first lines; ``--csv_sep`` / ``--csv_decimal``
  override. Header names are stripped (exports carry trailing spaces).
* Times in mixed formats (``3/18/17``, ``3/18/2017 0:00``, ISO, with or without a zone) or as
  epoch seconds; rows out of order are sorted.
* Sampling: the interval is the median step between rows. A step of one interval joins two rows;
  a gap of whole intervals up to ``--max_gap`` is filled with grid rows that ``--missing``
  fills like empty cells; a longer gap, or a step off the grid, cuts the log there. What the
  gaps cost (stretches, rows) is reported.
* Repeated times: exact duplicate rows (two exports that overlap) are dropped with a note; rows
  that repeat a time with other values are refused unless ``--duplicates first|last|mean`` says
  how to keep one row per time (a repeated span of one hour is named as the daylight-saving
  hour of a local-time log).
* Empty cells and spreadsheet error strings (``#VALUE!``, ``#DIV/0!``, ...) and infinities in
  sensor columns are counted, reported, and then handled by ``--missing``:
  ``ffill`` (default) carries the last value forward inside its segment (the first rows of a
  segment take the first value); ``interpolate`` interpolates linearly inside its segment;
  ``drop`` drops the row, which cuts the segment there. A value a segment never has is filled
  with the column's median.
* ``--fault_inventory`` turns a binary ground truth (0 = fault-free) into one class per fault
  scenario by joining the inventory on the date: ``<fault type> / <fault intensity>``.

Every problem that stops the run names the file, the column and the first bad row (the
line number in the file, header = line 1).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from utils.errors import UserError

ERROR_STRINGS = re.compile(r"^#(VALUE!|DIV/0!|N/A|NAME\?|NULL!|NUM!|REF!|ERROR!?|SPILL!|CALC!)$", re.IGNORECASE)
EMPTY_WORDS = {"", "nan", "na", "n/a", "null", "none", "-", "?"}
TIME_NAMES = ("datetime", "timestamp", "time", "date")
NUMERIC_SHARE = 0.9  # a column is a sensor when this share of its non-empty cells are numbers
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}
SNIFF_LINES = 200  # lines read to detect the separator and the decimal mark
DECIMAL_COMMA = re.compile(r"^([-+]?\d*),(\d+(?:[eE][-+]?\d+)?)$")
DECIMAL_POINT = re.compile(r"^[-+]?\d*\.\d+(?:[eE][-+]?\d+)?$")
GRID_TOLERANCE = 0.1  # a step within 10 % of a whole number of intervals is on the grid (logger clocks jitter)
INTERVAL_TOLERANCE = 0.01  # relative difference of two median intervals still taken as the same
NORMAL = "normal"
UNLISTED_FAULT = "fault (not in inventory)"


@dataclass(frozen=True)
class Dialect:
    """How a CSV file writes its cells: separator and decimal mark."""

    sep: str = ","
    decimal: str = "."
    parquet: bool = False  # a Parquet file: typed columns, no separator or decimal mark to detect

    def describe(self) -> str:
        if self.parquet:
            return "Parquet"
        return f"{SEPARATORS[self.sep]}-separated, decimal {'comma' if self.decimal == ',' else 'point'}"


@dataclass
class CsvTable:
    values: np.ndarray  # [rows, channels] float64, missing values handled
    labels: list[str] | None  # class name per row (None: no label column, read for prediction)
    times: np.ndarray | None  # datetime64[ns] or None
    breaks: np.ndarray  # [rows] bool: a new segment starts here whatever the label
    channels: list[str]
    notes: list[str] = field(default_factory=list)
    sampling: Sampling | None = None  # None without a time column


def sniff_dialect(path: Path, sep: str | None = None, decimal: str | None = None) -> Dialect:
    """The separator whose split gives every one of the first lines the same number (> 1) of
    fields (the most fields if several do; else the comma), and the decimal comma when the
    numbers there are written with one (never with the comma as separator). A ``.parquet`` file has none."""
    if is_parquet(path):
        return Dialect(parquet=True)
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            lines = [line for _, line in zip(range(SNIFF_LINES), f) if line.strip()]
    except OSError:
        lines = []  # read_strings names the problem
    if sep is None:
        widths = {s: {len(row) for row in csv.reader(lines, delimiter=s)} for s in SEPARATORS}
        even = {s: w.pop() for s, w in widths.items() if len(w) == 1 and max(w) > 1}
        sep = max(even, key=even.get) if even else ","
    if decimal is None:
        cells = [cell.strip() for row in csv.reader(lines[1:], delimiter=sep) for cell in row]
        with_comma = sum(bool(DECIMAL_COMMA.match(c)) for c in cells)
        decimal = "," if sep != "," and with_comma > sum(bool(DECIMAL_POINT.match(c)) for c in cells) else "."
    if sep == decimal:
        raise UserError("--csv_decimal: a decimal comma needs another separator than the comma (--csv_sep semicolon or tab)")
    return Dialect(sep, decimal)


def line_of(row: int) -> int:
    """File line of a data row (0-based) when the header is line 1."""
    return row + 2


def read_strings(path: Path, flag: str, dialect: Dialect | None = None) -> pd.DataFrame:
    """Every cell as a stripped string (decimal commas turned into points); ``dialect``:
    detected when not given."""
    if not path.exists():
        raise UserError(f"{flag}: file {path} does not exist")
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a folder, not a CSV file")
    if is_parquet(path):
        return read_parquet_strings(path, flag)
    dialect = dialect or sniff_dialect(path)
    try:
        frame = pd.read_csv(path, sep=dialect.sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except PermissionError:
        raise UserError(f"{flag}: file {path} is not readable (permission denied)") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{flag}: file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{flag}: cannot read {path} as CSV ({first})") from None
    header = [str(c).strip() for c in pd.read_csv(path, sep=dialect.sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]]
    if len(header) == 1:  # every line in one column: the separator is not the one read with
        others = [f"--csv_sep {name}" for s, name in SEPARATORS.items() if s != dialect.sep and s in header[0]]
        hint = f"it looks {others[0].split()[-1]}-separated: pass {others[0]}" if others else "name the separator with --csv_sep"
        raise UserError(f"{flag}: {path} reads as one column ({header[0][:60]!r}) when split at the {SEPARATORS[dialect.sep]}; {hint}")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:  # pandas would silently rename the second one
        raise UserError(f"{flag}: {path} has the column '{duplicated[0]}' twice")
    frame.columns = header
    if frame.empty:
        raise UserError(f"{flag}: {path} has a header but no data rows")
    frame = frame.apply(lambda col: col.str.strip())
    if dialect.decimal == ",":
        frame = frame.apply(lambda col: col.str.replace(DECIMAL_COMMA, r"\1.\2", regex=True))
    return frame


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def read_parquet_strings(path: Path, flag: str) -> pd.DataFrame:
    """A Parquet log as the same strings a CSV gives (pyarrow reads it): numbers written out in full
    (they read back to the same bits), times as ISO text, missing values as empty cells, so every
    check and rule of the CSV path applies unchanged."""
    try:
        import pyarrow.parquet  # noqa: F401 - pandas reads Parquet through it
    except ImportError:
        raise UserError(f"{flag}: reading {path} needs pyarrow (pip install pyarrow), or give the log as CSV") from None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors (ArrowInvalid, OSError) name no common base with pandas'
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{flag}: cannot read {path} as Parquet ({first})") from None
    if frame.empty:
        raise UserError(f"{flag}: {path} has columns but no data rows")
    if not isinstance(frame.index, pd.RangeIndex):  # e.g. the time saved as the index: a column like the others
        frame = frame.reset_index()
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda col: col.astype(str).where(col.notna(), "").str.strip())


def parse_times(cells: pd.Series, path: Path, column: str) -> np.ndarray:
    """Strings -> datetime64[ns]; epoch seconds when every cell is a number."""
    numbers = pd.to_numeric(cells, errors="coerce")
    if numbers.notna().all():
        times = pd.to_datetime(numbers, unit="s", errors="coerce")
    else:
        with np.errstate(all="ignore"):
            times = pd.to_datetime(cells, format="mixed", errors="coerce", utc=True).dt.tz_localize(None)
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        raise UserError(
            f"{path}: column '{column}' line {line_of(bad[0])}: cannot read {cells.iloc[bad[0]]!r} as a time ({len(bad)} such cells)"
        )
    return times.to_numpy(dtype="datetime64[ns]")


def classify_cells(cells: pd.Series) -> tuple[pd.Series, dict[str, int], int]:
    """Numeric values (NaN where missing), counts of each kind of missing cell, and the row of
    the first cell that is text rather than missing."""
    lowered = cells.str.lower()
    empty = lowered.isin(EMPTY_WORDS)
    error = cells.str.match(ERROR_STRINGS)
    numbers = pd.to_numeric(cells.where(~(empty | error)), errors="coerce")
    infinite = np.isinf(numbers)
    text = numbers.isna() & ~empty & ~error
    counts = {"empty": int(empty.sum()), "error": int(error.sum()), "text": int(text.sum()), "infinite": int(infinite.sum())}
    first_text = int(np.flatnonzero(text.to_numpy())[0]) if counts["text"] else -1
    return numbers.mask(infinite), counts, first_text


def apply_inventory(truth: pd.Series, times: np.ndarray | None, inventory: Path, path: Path, label_col: str) -> tuple[list[str], list[str]]:
    """Binary ground truth + fault inventory -> a class name per row, and notes."""
    table = read_strings(inventory, "--fault_inventory")
    if times is None:
        raise UserError(f"--fault_inventory: {path} needs a time column to join the inventory by date (--time_col)")
    flags = pd.to_numeric(truth, errors="coerce")
    bad = np.flatnonzero(flags.isna().to_numpy())
    if len(bad):
        raise UserError(f"{path}: column '{label_col}' line {line_of(bad[0])}: {truth.iloc[bad[0]]!r} is not a 0/1 ground truth")
    lower = {c.lower(): c for c in table.columns}
    type_col = next((lower[c] for c in lower if "type" in c), None)
    level_col = next((lower[c] for c in lower if "intensity" in c or "severity" in c), None)
    date_col = next((lower[c] for c in lower if "time" in c or "date" in c), None)
    for name, col in (("fault type", type_col), ("fault intensity", level_col), ("date", date_col)):
        if col is None:
            raise UserError(f"--fault_inventory: {inventory} has no '{name}' column (columns: {', '.join(table.columns)})")
    days = pd.Series(parse_times(table[date_col], inventory, date_col)).dt.normalize()
    repeated = days[days.duplicated()]
    if len(repeated):
        raise UserError(f"--fault_inventory: {inventory} line {line_of(repeated.index[0])}: a second fault on {repeated.iloc[0].date()}")
    names = (table[type_col].str.split().str.join(" ") + " / " + table[level_col].str.split().str.join(" ")).tolist()
    by_day = dict(zip(days, names))
    row_days = pd.Series(times).dt.normalize()
    faulted = (flags != 0).to_numpy()
    labels = np.where(faulted, row_days.map(by_day).fillna(UNLISTED_FAULT).to_numpy(), NORMAL).tolist()
    notes = []
    faulted_days = set(row_days[faulted])
    unused = sorted(str(day.date()) for day in by_day if day not in faulted_days)
    if unused:
        notes.append(f"inventory dates with no faulted rows (ignored): {', '.join(unused)}")
    if UNLISTED_FAULT in labels:
        notes.append(f"faulted rows on dates missing from the inventory keep the class '{UNLISTED_FAULT}'")
    return labels, notes


def steps_s(times: np.ndarray) -> np.ndarray:
    """Seconds from each row to the next, whatever the unit of the datetime64 array."""
    return np.diff(times.astype("datetime64[ns]").astype(np.int64)) / 1e9


def sampling_interval(times: np.ndarray | None) -> float | None:
    """Median seconds between rows, or None without a time column."""
    if times is None or len(times) < 2:
        return None
    return float(np.median(steps_s(times)))


def duration(seconds: float) -> str:
    """Seconds as a person writes them: 60 -> '1 min', 90 -> '90 s', 7200 -> '2 h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def check_interval(here_s: float | None, trained_s: float | None, path) -> None:
    """A log must be sampled as the model's training data was (a window is so many rows)."""
    if here_s is not None and trained_s is not None and abs(here_s - trained_s) > INTERVAL_TOLERANCE * trained_s:
        raise UserError(
            f"--data_path: {path} is sampled every {here_s:g} s, the model was trained on data sampled every {trained_s:g} s; "
            "resample the log to the training interval first"
        )


@dataclass(frozen=True)
class Sampling:
    """How the rows of a log lie in time: the median step, and what its gaps did."""

    interval_s: float
    max_gap_s: float
    cut_gaps: int = 0  # gaps of whole intervals longer than --max_gap (or across a label change)
    off_grid: int = 0  # steps that are not a whole number of intervals
    missing_rows: int = 0  # grid rows absent in the on-grid gaps that cut
    filled_gaps: int = 0  # gaps up to --max_gap, filled with grid rows
    filled_rows: int = 0

    def describe(self, breaks: np.ndarray, window: int, missing: str) -> str:
        """One line for the start-up summary; ``breaks``: the final table's, so the stretches
        also count the cuts of --missing drop."""
        text = f"every {duration(self.interval_s)} (median step)"
        if self.filled_gaps:
            text += (f"; {counted(self.filled_gaps, 'gap')} up to --max_gap {duration(self.max_gap_s)} filled with "
                     f"{counted(self.filled_rows, 'row')} by --missing {missing}")  # fmt: skip
        causes = [counted(n, what) + why for n, what, why in ((self.cut_gaps, "gap", f" longer than {duration(self.max_gap_s)}"),
                                                               (self.off_grid, "step", " off the grid")) if n]  # fmt: skip
        if causes:
            text += f"; {' and '.join(causes)} cut the log ({counted(self.missing_rows, 'row')} missing)"
        edges = np.flatnonzero(breaks[1:]) + 1
        lengths = np.diff(np.concatenate(([0], edges, [len(breaks)])))
        if len(lengths) == 1:
            return text + ("" if self.filled_gaps else ", no gaps")
        short = lengths[lengths < window]
        text += f"; {counted(len(lengths), 'stretch')} without a gap"
        if len(short):
            return text + f", {len(short)} of them shorter than a window of {window} rows: {counted(int(short.sum()), 'row')} unused"
        return text + f", each at least a window of {window} rows long"


def counted(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('ch') else 's'}"


def lay_on_grid(times: np.ndarray, labels: np.ndarray, interval: float, max_gap_s: float | None, path: Path):
    """Where each row goes on the regular grid of ``interval`` seconds (the median step; rows
    inserted in the gaps up to ``max_gap_s`` seconds, default: none), which grid rows start a new
    stretch, and the counts for the summary."""
    steps = steps_s(times)
    max_gap = interval if max_gap_s is None else max_gap_s
    if max_gap < interval:
        raise UserError(f"--max_gap {duration(max_gap)} is shorter than the sampling interval of {path} ({duration(interval)})")
    whole = np.rint(steps / interval)
    on_grid = (whole >= 1) & (np.abs(steps - whole * interval) <= GRID_TOLERANCE * interval)
    fill = on_grid & (whole > 1) & (steps <= max_gap + GRID_TOLERANCE * interval) & (labels[1:] == labels[:-1])
    cut = ~on_grid | ((whole > 1) & ~fill)
    positions = np.concatenate(([0], np.cumsum(np.where(fill, whole, 1)))).astype(np.int64)
    breaks = np.zeros(positions[-1] + 1, dtype=bool)
    breaks[positions[1:][cut]] = True
    sampling = Sampling(interval, max_gap, cut_gaps=int((cut & on_grid).sum()), off_grid=int((~on_grid).sum()),
                        missing_rows=int((whole[cut & on_grid] - 1).sum()), filled_gaps=int(fill.sum()),
                        filled_rows=int((whole[fill] - 1).sum()))  # fmt: skip
    return positions, breaks, sampling


def spread_on_grid(values: pd.DataFrame, labels: np.ndarray, times: np.ndarray, positions: np.ndarray, interval_s: float):
    """The rows at their grid positions; the grid rows between them are empty (NaN) sensor
    values with the label of the row before and the times of the grid."""
    rows = np.arange(positions[-1] + 1)
    before = np.searchsorted(positions, rows, side="right") - 1
    offset = ((rows - positions[before]) * round(interval_s * 1e9)).astype("timedelta64[ns]")
    return values.set_axis(positions).reindex(rows).reset_index(drop=True), labels[before], times[before] + offset


def drop_exact_duplicates(frame: pd.DataFrame, times: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """Rows identical in every cell (overlapping exports) are dropped, with a note."""
    copies = frame.duplicated().to_numpy()
    if not copies.any():
        return frame, times, []
    where = f"at {pd.Timestamp(times[copies][0])}" if times is not None else f"on line {line_of(np.flatnonzero(copies)[0])}"
    keep = ~copies
    return (frame[keep].reset_index(drop=True), None if times is None else times[keep],
            [f"{counted(int(copies.sum()), 'exact duplicate row')} dropped (the first {where})"])  # fmt: skip


def check_repeated_times(times: np.ndarray, rule: str | None, path: Path) -> list[str]:
    """Rows that repeat a time with other values: refused without a ``--duplicates`` rule."""
    repeats = pd.Series(times).duplicated().to_numpy()
    if not repeats.any():
        return []
    first, count = pd.Timestamp(times[repeats][0]), int(repeats.sum())
    verb = "repeats" if count == 1 else "repeat"
    rows = f"{counted(count, 'row')} {verb} the time of an earlier row with other values (the first at {first})"
    if rule is not None:
        return [f"{rows}: --duplicates {rule}"]
    span = pd.Timedelta(times[repeats].max() - times[repeats].min())
    hour = (span >= pd.Timedelta(minutes=45)) and (span <= pd.Timedelta(hours=1))
    cause = "; the repeated times span one hour, as when daylight saving time ends in a log kept in local time" if hour else ""
    raise UserError(f"--data_path: {path}: {rows}{cause}; pass --duplicates first|last|mean to keep one row per time")


def one_row_per_time(values: pd.DataFrame, labels: np.ndarray, times: np.ndarray, rule: str):
    """The first or last row of each repeated time, or the mean of its sensor values (label of the first)."""
    if rule == "mean":
        _, first, group = np.unique(times, return_index=True, return_inverse=True)  # times are sorted: groups in order
        return values.groupby(group).mean().reset_index(drop=True), labels[first], times[first]
    keep = ~pd.Series(times).duplicated(keep=rule).to_numpy()
    return values[keep].reset_index(drop=True), labels[keep], times[keep]


def fill_missing(values: pd.DataFrame, segment: np.ndarray, rule: str) -> pd.DataFrame:
    grouped = values.groupby(segment, sort=False)
    if rule == "interpolate":
        filled = grouped.transform(lambda s: s.interpolate(limit_direction="both"))
    else:
        filled = grouped.transform(lambda s: s.ffill().bfill())
    return filled.fillna(values.median())  # a value the whole segment lacks


def read_sensor_csv(
    path: Path,
    time_col: str | None,
    label_col: str,
    feature_cols: list[str] | None,
    inventory: Path | None,
    missing: str,
    labels_required: bool = True,
    dialect: Dialect | None = None,
    duplicates: str | None = None,
    max_gap_s: float | None = None,
    trained_interval_s: float | None = None,
) -> CsvTable:
    """``trained_interval_s``: the sampling interval a model was trained on (refused when the
    log's differs, before its gaps are judged on another grid)."""
    frame = read_strings(path, "--data_path", dialect)
    notes: list[str] = []
    has_labels = label_col in frame.columns
    if not has_labels and labels_required:
        raise UserError(f"--label_col: column '{label_col}' not found in {path} (columns: {', '.join(frame.columns)})")
    if time_col is not None and time_col not in frame.columns:
        raise UserError(f"--time_col: column '{time_col}' not found in {path} (columns: {', '.join(frame.columns)})")
    if time_col is None:
        time_col = next((c for c in frame.columns if c.lower() in TIME_NAMES), None)
    times = None
    if time_col is not None:
        times = parse_times(frame[time_col], path, time_col)
        if (np.diff(times.astype(np.int64)) < 0).any():
            order = np.argsort(times, kind="stable")
            frame, times = frame.iloc[order].reset_index(drop=True), times[order]
            notes.append(f"rows sorted by '{time_col}'")
    frame, times, dropped_notes = drop_exact_duplicates(frame, times)
    notes += dropped_notes
    if times is not None:
        notes += check_repeated_times(times, duplicates, path)

    if has_labels:
        labels = frame[label_col]
        empty_label = np.flatnonzero(labels.str.lower().isin(EMPTY_WORDS).to_numpy())
        if len(empty_label):
            raise UserError(f"{path}: column '{label_col}' line {line_of(empty_label[0])}: empty label ({len(empty_label)} such rows)")
        if inventory is not None:
            label_list, inventory_notes = apply_inventory(labels, times, inventory, path, label_col)
            notes += inventory_notes
        else:
            label_list = labels.tolist()
    else:
        label_list = [""] * len(frame)  # one segment per time gap

    candidates = feature_cols or [c for c in frame.columns if c not in (label_col, time_col)]
    if feature_cols:
        repeated = sorted({c for c in feature_cols if feature_cols.count(c) > 1})
        unknown = [c for c in feature_cols if c not in frame.columns]
        if repeated:
            raise UserError(f"--feature_cols: column '{repeated[0]}' is listed twice")
        if unknown:
            raise UserError(f"--feature_cols: column '{unknown[0]}' not found in {path} (columns: {', '.join(frame.columns)})")
        if label_col in feature_cols or (time_col and time_col in feature_cols):
            raise UserError("--feature_cols: the label and time columns cannot be sensor columns")
    columns, dropped, report = {}, [], []
    for name in candidates:
        numbers, counts, first_text = classify_cells(frame[name])
        filled_cells = len(frame) - counts["empty"] - counts["error"]
        if counts["text"] and counts["text"] > (1 - NUMERIC_SHARE) * filled_cells:  # a text column, not a sensor
            if feature_cols:
                row = first_text
                raise UserError(f"{path}: column '{name}' line {line_of(row)}: {frame[name].iloc[row]!r} is not a number")
            dropped.append(name)
            continue
        if numbers.notna().sum() == 0:
            raise UserError(f"{path}: column '{name}' has no numeric value (drop it, or list the sensors with --feature_cols)")
        columns[name] = numbers
        kinds = [f"{n} {kind}" for kind, n in counts.items() if n]
        if kinds:
            report.append(f"{name}: {', '.join(kinds)}")
    if dropped:
        notes.append(f"non-numeric columns left out: {', '.join(dropped)}")
    if not columns:
        raise UserError(f"{path}: no numeric sensor columns besides '{label_col}'")
    values = pd.DataFrame(columns)
    label_arr = np.asarray(label_list, dtype=object)
    if times is not None and duplicates is not None:
        values, label_arr, times = one_row_per_time(values, label_arr, times, duplicates)

    if report:  # counted before the gaps add rows to fill
        cells = int(values.isna().sum().sum())
        notes.append(f"{cells} missing or unreadable sensor cells ({'; '.join(report)}), handled by --missing {missing}")
    sampling, breaks = None, np.zeros(len(values), dtype=bool)
    if times is not None and len(times) > 1:
        interval = sampling_interval(times)
        check_interval(interval, trained_interval_s, path)
        positions, breaks, sampling = lay_on_grid(times, label_arr, interval, max_gap_s, path)
        if sampling.filled_rows:
            values, label_arr, times = spread_on_grid(values, label_arr, times, positions, sampling.interval_s)
    change = np.concatenate(([True], label_arr[1:] != label_arr[:-1])) | breaks
    if values.isna().to_numpy().any():  # missing cells, and the grid rows of the gaps up to --max_gap
        if missing == "drop":
            keep = values.notna().all(axis=1).to_numpy()
            kept_rows = np.flatnonzero(keep)
            gap = np.ones(len(kept_rows), dtype=bool)
            gap[1:] = np.diff(kept_rows) > 1  # a dropped row cuts the segment
            values = values[keep].reset_index(drop=True)
            label_arr, times = label_arr[keep], None if times is None else times[keep]
            breaks = gap | change[keep]
            change = breaks
        else:
            values = fill_missing(values, np.cumsum(change), missing)
    if len(values) < 2:
        raise UserError(f"{path}: only {len(values)} usable row(s)")
    return CsvTable(values.to_numpy(dtype=np.float64), label_arr.tolist() if has_labels else None, times, breaks, list(columns), notes,
                    sampling)  # fmt: skip
