"""UEA/UCR multivariate ``.ts`` files (the sktime text format), read without sktime.

``--root_path DIR --data_path NAME`` reads ``DIR/NAME_TRAIN.ts`` and ``DIR/NAME_TEST.ts``;
nothing is ever downloaded. Each line after ``@data`` is one sample: its dimensions separated
by ``:``, values by ``,``, the class label last; ``?`` marks a missing value, which is filled
by linear interpolation along the series (a dimension with no value at all becomes 0).

Series of unequal length are brought to the longest length L of both files:
* plain windows (``--data Classification``) are zero-padded at the end after scaling, with a
  padding mask that the models use to ignore the padding;
* GAF images and sensor graphs have no notion of padding, so their series are resampled to L
  points by linear interpolation instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserError


@dataclass
class SampleSet:
    series: list[np.ndarray]  # each [length, dims] float64
    labels: list[str]
    path: Path

    @property
    def dims(self) -> int:
        return self.series[0].shape[1]


def ts_paths(root: str, name: str) -> tuple[Path, Path]:
    base = Path(root) / name
    return base.with_name(f"{base.name}_TRAIN.ts"), base.with_name(f"{base.name}_TEST.ts")


def is_uea(root: str, name: str) -> bool:
    return ts_paths(root, name)[0].is_file()


def _fill(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN along the series; an empty dimension becomes 0."""
    out = values.copy()
    steps = np.arange(len(out))
    for d in range(out.shape[1]):
        known = ~np.isnan(out[:, d])
        out[:, d] = np.interp(steps, steps[known], out[known, d]) if known.any() else 0.0
    return out


def read_ts(path: Path) -> SampleSet:
    if not path.is_file():
        raise UserError(f"--data_path: UEA file {path} does not exist")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--data_path: cannot read {path} ({type(exc).__name__})") from None
    declared_dims, in_data = None, False
    series, labels = [], []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            tag, _, value = line.partition(" ")
            tag = tag.lower()
            if tag == "@timestamps" and value.strip().lower() == "true":
                raise UserError(f"{path} line {number}: time-stamped .ts series are not supported")
            if tag == "@dimensions":
                declared_dims = int(value)
            if tag == "@univariate" and value.strip().lower() == "true":
                declared_dims = 1
            in_data = tag == "@data"
            continue
        *dims, label = line.split(":")
        if not dims:
            raise UserError(f"{path} line {number}: no values before the class label")
        expected = declared_dims or (series[0].shape[1] if series else len(dims))
        if len(dims) != expected:
            raise UserError(f"{path} line {number}: {len(dims)} dimensions, expected {expected}")
        try:
            columns = [np.array([np.nan if v.strip() == "?" else float(v) for v in d.split(",")]) for d in dims]
        except ValueError:
            raise UserError(f"{path} line {number}: a value is not a number") from None
        length = max(len(c) for c in columns)
        padded = np.full((length, len(columns)), np.nan)
        for d, column in enumerate(columns):
            padded[: len(column), d] = column
        series.append(_fill(padded))
        labels.append(label.strip())
    if not series:
        raise UserError(f"{path}: no samples after @data")
    return SampleSet(series, labels, path)


def load_uea(root: str, name: str) -> tuple[SampleSet, SampleSet]:
    train_path, test_path = ts_paths(root, name)
    train, test = read_ts(train_path), read_ts(test_path)
    if train.dims != test.dims:
        raise UserError(f"{test_path}: {test.dims} dimensions, but {train_path} has {train.dims}")
    unknown = sorted(set(test.labels) - set(train.labels))
    if unknown:
        raise UserError(f"{test_path}: class '{unknown[0]}' does not occur in {train_path}")
    return train, test


def stack(series: list[np.ndarray], length: int, resample: bool) -> tuple[np.ndarray, np.ndarray]:
    """Samples -> [N, length, dims] values and a [N, length] mask of real (not padded) steps."""
    values = np.zeros((len(series), length, series[0].shape[1]))
    mask = np.zeros((len(series), length), dtype=bool)
    for i, s in enumerate(series):
        if resample and len(s) != length:
            grid = np.linspace(0, len(s) - 1, length)
            values[i] = np.stack([np.interp(grid, np.arange(len(s)), s[:, d]) for d in range(s.shape[1])], axis=1)
            mask[i] = True
        else:
            values[i, : len(s)] = s[:length]
            mask[i, : len(s)] = True
    return values, mask


def stratified_holdout(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Indices of a validation hold-out with ``share`` of every class (at least one sample of
    every class that has two or more)."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) >= 2:
            picked.extend(members[: max(1, round(share * len(members)))])
    return np.sort(np.asarray(picked, dtype=np.int64))
