"""Result files of a run: metrics.json, history.csv, and one row per run in summary.csv."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from pathlib import Path

from utils.checkpoint import atomic_write
from utils.errors import OutputError, UserError


def ensure_dir(path: Path, flag: str) -> Path:
    """Create an output folder, or fail with the flag's name when it cannot be written."""
    check_creatable(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag}: cannot create folder {path} ({exc.strerror})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag}: folder {path} is not writable")
    return path


def check_creatable(path: Path, flag: str) -> None:
    """Fail as ``ensure_dir`` would, without creating anything: the nearest existing folder on
    the way must be a writable folder. Checking every output first leaves no folder behind."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag}: {path} exists and is not a folder" if existing == path else
                        f"{flag}: cannot create folder {path} ({existing} is a file)")  # fmt: skip
    if not os.access(existing, os.W_OK):
        raise UserError(f"{flag}: folder {existing} is not writable")


@contextlib.contextmanager
def writing(path: Path):
    """Turn a failed write (disk full, permission lost) into an OutputError naming the file."""
    try:
        yield
    except OSError as exc:
        raise OutputError(path, exc) from None


def _atomic_write_text(path: Path, text: str) -> None:
    with writing(path):
        atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: dict) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_history(path: Path, rows: list[dict]) -> None:
    """One line per epoch; the columns are the keys of the rows the loop builds (one source)."""
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_fmt(row.get(col, "")) for col in columns))
    _atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value) -> str:
    if value is None:  # e.g. a rate with nothing to count: an empty cell, not the text 'None'
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def safe_name(text: str) -> str:
    """A file or folder name part: anything but letters, digits and . _ - + = becomes _."""
    return re.sub(r"[^\w.+=-]", "_", text)


def append_summary(path: Path, row: dict) -> None:
    """Append one run to summary.csv. An existing file keeps its column order; columns it lacks
    (a summary of an older version) are added at the end, the old rows left empty there."""
    fieldnames = list(row)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), None) or []
        fieldnames = header + [name for name in row if name not in header]
        if fieldnames != header:  # rewrite the file once with the wider header (atomically)
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            _atomic_write_text(path, _csv_text(fieldnames, rows))
    with writing(path), open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(v) for k, v in row.items()})


def _csv_text(fieldnames: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
