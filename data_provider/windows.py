"""Cutting a labelled table into windows, and a leak-free split of those windows.

A *segment* is a maximal run of rows with one label and no gap in time. Windows are cut
inside segments only. ``blocked_split`` cuts every segment into blocks of ``block_windows``
windows and deals the blocks out in a repeating pattern (train, train, train, val, test),
counted per class so every class reaches every split. Windows never cross a block edge, so
no sample row appears in two splits even with overlapping windows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
BLOCK_PATTERN = ("train", "train", "train", "val", "test")


@dataclass(frozen=True)
class Segment:
    start: int  # first row
    end: int  # one past the last row
    label: int


def find_segments(labels: np.ndarray, times: np.ndarray | None = None) -> list[Segment]:
    """Maximal runs of equal labels; a time gap larger than 1.5x the usual interval also cuts."""
    labels = np.asarray(labels)
    cut = labels[1:] != labels[:-1]
    if times is not None and len(times) > 2:
        gaps = np.diff(np.asarray(times).astype("datetime64[ns]").astype(np.int64))
        cut |= gaps > 1.5 * np.median(gaps)
    edges = np.concatenate(([0], np.flatnonzero(cut) + 1, [len(labels)]))
    return [Segment(int(a), int(b), int(labels[a])) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class WindowIndex:
    """Window start rows and labels of one split."""

    starts: np.ndarray
    labels: np.ndarray

    def rows(self, length: int) -> np.ndarray:
        """Every row covered by at least one window (for fitting scalers on this split)."""
        if not len(self.starts):
            return np.zeros(0, dtype=np.int64)
        edges = np.zeros(int(self.starts.max()) + length + 1, dtype=np.int64)
        np.add.at(edges, self.starts, 1)
        np.add.at(edges, self.starts + length, -1)
        return np.flatnonzero(np.cumsum(edges) > 0)


def blocked_split(segments: list[Segment], length: int, stride: int, block_windows: int, pattern=BLOCK_PATTERN) -> dict[str, WindowIndex]:
    block_rows = length + (block_windows - 1) * stride
    blocks_seen: dict[int, int] = defaultdict(int)
    starts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for seg in segments:
        pos = seg.start
        while seg.end - pos >= length:
            block_end = min(pos + block_rows, seg.end)
            split = pattern[blocks_seen[seg.label] % len(pattern)]
            blocks_seen[seg.label] += 1
            block_starts = np.arange(pos, block_end - length + 1, stride)
            starts[split].append(block_starts)
            labels[split].append(np.full(len(block_starts), seg.label))
            pos = block_end
    return {
        name: WindowIndex(
            np.concatenate(starts[name]) if starts[name] else np.zeros(0, dtype=np.int64),
            np.concatenate(labels[name]) if labels[name] else np.zeros(0, dtype=np.int64),
        )
        for name in SPLITS
    }
