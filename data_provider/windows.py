"""Cutting a labelled table into windows, and splitting the windows.

A *segment* is a maximal run of rows with one label and no gap in time. Windows are cut
inside segments only.

* ``blocked`` (default): every segment is cut into blocks of ``block_windows`` windows, dealt
  out in a repeating pattern (train, train, train, val, test) counted per class, so every
  class reaches every split. Windows never cross a block edge: no sample row is in two splits.
  Fold ``k`` deals the pattern ``k`` blocks on: over the 5 folds every block of the pattern
  is tested once (blocked cross-validation).
* ``chronological``: the first 60 % of every segment's rows train, the next 20 % validate, the
  last 20 % test; windows never cross those cuts either.
* ``random``: windows are dealt 60/20/20 at random within each class. Overlapping windows then
  share rows across splits, which flatters the scores: only for comparison with papers that do it.

``train_stride`` (blocked and chronological) cuts the training windows more densely than the
validation and test windows, inside the same training rows: more, shifted views of the training
data without moving any split boundary, so nothing leaks and the scored windows stay the same.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
BLOCK_PATTERN = ("train", "train", "train", "val", "test")


@dataclass(frozen=True)
class Segment:
    start: int  # first row
    end: int  # one past the last row
    label: int


def find_segments(labels: np.ndarray, breaks: np.ndarray | None = None) -> list[Segment]:
    """Maximal runs of equal labels; ``breaks`` marks rows that start a new segment anyway
    (a time gap, a dropped row)."""
    labels = np.asarray(labels)
    cut = labels[1:] != labels[:-1]
    if breaks is not None:
        cut |= np.asarray(breaks, dtype=bool)[1:]
    edges = np.concatenate(([0], np.flatnonzero(cut) + 1, [len(labels)]))
    return [Segment(int(a), int(b), int(labels[a])) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class WindowIndex:
    """Window start rows and labels of one split, and for each window the range its start may
    move in without leaving its block (``first`` to ``last``; the start itself where nothing may)."""

    starts: np.ndarray
    labels: np.ndarray
    first: np.ndarray | None = None
    last: np.ndarray | None = None

    def __post_init__(self):
        self.first = self.starts if self.first is None else self.first
        self.last = self.starts if self.last is None else self.last

    def rows(self, length: int) -> np.ndarray:
        """Every row covered by at least one window (for fitting scalers on this split)."""
        if not len(self.starts):
            return np.zeros(0, dtype=np.int64)
        edges = np.zeros(int(self.starts.max()) + length + 1, dtype=np.int64)
        np.add.at(edges, self.starts, 1)
        np.add.at(edges, self.starts + length, -1)
        return np.flatnonzero(np.cumsum(edges) > 0)


def window_starts(start: int, end: int, length: int, stride: int) -> np.ndarray:
    """First rows of the windows of ``length`` rows every ``stride`` rows inside rows [start, end)."""
    return np.arange(start, end - length + 1, stride)


def _stride(split: str, stride: int, train_stride: int | None) -> int:
    return train_stride if split == "train" and train_stride else stride


def _collect(parts: dict[str, list[tuple]]) -> dict[str, WindowIndex]:
    """``parts[split]``: (starts, label, block), block = (first, last) start a window of the block
    may have, or None where windows may not move."""
    join = lambda arrays: np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)  # noqa: E731
    out = {}
    for name in SPLITS:
        starts, labels, first, last = [], [], [], []
        for s, label, block in parts[name]:
            starts.append(s)
            labels.append(np.full(len(s), label))
            first.append(s if block is None else np.full(len(s), block[0]))
            last.append(s if block is None else np.full(len(s), block[1]))
        out[name] = WindowIndex(join(starts), join(labels), join(first), join(last))
    return out


def blocked_split(
    segments: list[Segment], length: int, stride: int, block_windows: int, fold: int = 0, train_stride: int | None = None,
    units: np.ndarray | None = None,
) -> dict[str, WindowIndex]:
    """Blocks of ``block_windows`` windows dealt train,train,train,val,test per class, and per unit where ``units``
    gives each row's unit (several logs): every unit reaches every split, as one log alone would."""
    pattern = BLOCK_PATTERN[fold:] + BLOCK_PATTERN[:fold]
    block_rows = length + (block_windows - 1) * stride  # block edges follow --stride, whatever the training windows' stride
    blocks_seen: dict[tuple[int, int], int] = defaultdict(int)
    parts: dict[str, list] = {name: [] for name in SPLITS}
    for seg in segments:
        pos = seg.start
        while seg.end - pos >= length:
            block_end = min(pos + block_rows, seg.end)
            dealt = (0 if units is None else int(units[seg.start]), seg.label)
            name = pattern[blocks_seen[dealt] % len(pattern)]
            starts = window_starts(pos, block_end, length, _stride(name, stride, train_stride))
            parts[name].append((starts, seg.label, (pos, block_end - length)))
            blocks_seen[dealt] += 1
            pos = block_end
    return _collect(parts)


def chronological_split(
    segments: list[Segment], length: int, stride: int, shares=(0.6, 0.2), train_stride: int | None = None
) -> dict[str, WindowIndex]:
    parts: dict[str, list] = {name: [] for name in SPLITS}
    for seg in segments:
        rows = seg.end - seg.start
        cut1 = seg.start + round(shares[0] * rows)
        cut2 = seg.start + round((shares[0] + shares[1]) * rows)
        for name, (a, b) in zip(SPLITS, ((seg.start, cut1), (cut1, cut2), (cut2, seg.end))):
            parts[name].append((window_starts(a, b, length, _stride(name, stride, train_stride)), seg.label, (a, b - length)))
    return _collect(parts)


def random_split(segments: list[Segment], length: int, stride: int, seed: int, shares=(0.6, 0.2)) -> dict[str, WindowIndex]:
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[np.ndarray]] = defaultdict(list)
    for seg in segments:
        by_class[seg.label].append(window_starts(seg.start, seg.end, length, stride))
    parts: dict[str, list] = {name: [] for name in SPLITS}
    for label, chunks in sorted(by_class.items()):
        starts = rng.permutation(np.concatenate(chunks))
        n_train, n_val = round(shares[0] * len(starts)), round(shares[1] * len(starts))
        for name, piece in zip(SPLITS, np.split(starts, [n_train, n_train + n_val])):
            parts[name].append((np.sort(piece), label, None))  # overlapping windows: no block to move in
    return _collect(parts)


def window_bounds(times: np.ndarray | None, starts: np.ndarray, length: int) -> tuple[list, list]:
    """First and last row of every window, as times when the table has them, else row numbers."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = starts + length - 1
    if times is None:
        return starts.tolist(), ends.tolist()
    as_text = pd.Series(times).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    return as_text[starts].tolist(), as_text[ends].tolist()
