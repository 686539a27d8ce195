"""Data formats (the ``--data`` registry) and the one function that builds a run's data.

table (simulator or CSV) -> segments -> leak-free blocked split -> scaler fitted on training
rows -> format-specific fitting (e.g. the sensor graph) -> three ``WindowDataset`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_provider.batches import DualGAFBatch, GraphBatch, WindowBatch
from data_provider.graph import correlation_adjacency
from data_provider.sampler import EpochBatchSampler
from data_provider.scaling import SCALERS
from data_provider.sources import load_table
from data_provider.windows import SPLITS, blocked_split, find_segments
from utils.errors import UserError
from utils.signals import ignore_stop_signals


# ------------------------------------------------------------------ formats
class PlainFormat:
    """Plain multivariate windows [B, T, C] for sequence models."""

    name, scaler = "Classification", "standard"

    def __init__(self, args):
        pass

    def fit(self, train_rows: np.ndarray) -> None:
        pass

    def make_batch(self, x: torch.Tensor, labels: torch.Tensor) -> WindowBatch:
        return WindowBatch(x, labels)

    def describe(self) -> str:
        return "plain windows [B, T, C], z-scored with training statistics"


class DualGAFFormat(PlainFormat):
    """GASF + GADF images per sensor, made per batch on the device."""

    name, scaler = "DualGAF", "minmax"

    def __init__(self, args):
        self.image_size = min(args.gaf_size, args.step)
        self.step = args.step

    def make_batch(self, x, labels):
        return DualGAFBatch(x, labels, self.image_size)

    def describe(self):
        s = self.image_size
        paa = f" (PAA {self.step} -> {s} points)" if s < self.step else ""
        return f"GASF + GADF images [B, C, {s}, {s}] made per batch{paa}; training min/max -> [-1, 1]"


class GraphFormat(PlainFormat):
    """One node per sensor holding its window; edges from training-set correlations."""

    name, scaler = "GNN", "standard"

    def __init__(self, args):
        self.threshold = args.graph_threshold
        self.adjacency = None

    def fit(self, train_rows):
        self.adjacency = correlation_adjacency(train_rows, self.threshold)

    def make_batch(self, x, labels):
        return GraphBatch(x, labels, self.adjacency)

    def describe(self):
        n = self.adjacency.shape[0]
        edges = int((self.adjacency > 0).sum()) - n
        return f"sensor graph: {n} nodes [B, N, T], {edges // 2} edges with |corr| >= {self.threshold} on training rows"


FORMATS = {f.name: f for f in (PlainFormat, DualGAFFormat, GraphFormat)}


# ----------------------------------------------------------------- datasets
class WindowDataset(Dataset):
    """Windows of one split. Indexed with an array of window indices, it returns a whole
    batch object at once (one gather instead of a Python loop per sample)."""

    def __init__(self, values: torch.Tensor, starts: np.ndarray, labels: np.ndarray, length: int, fmt):
        self.values, self.starts, self.labels, self.fmt = values, starts, labels, fmt
        self.offsets = torch.arange(length)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        index = np.atleast_1d(np.asarray(index))
        rows = torch.as_tensor(self.starts[index])[:, None] + self.offsets
        return self.fmt.make_batch(self.values[rows], torch.as_tensor(self.labels[index], dtype=torch.long))


@dataclass
class DataBundle:
    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    class_names: list[str]
    channels: list[str]
    fmt: PlainFormat
    source: str
    seq_len: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        counts = " / ".join(f"{len(getattr(self, s))} {s}" for s in SPLITS)
        return (
            f"Data: {self.source} | {len(self.channels)} sensors, {self.num_classes} classes, "
            f"windows of {self.seq_len}: {counts}\nFormat {self.fmt.name}: {self.fmt.describe()}"
        )


def build_data(args) -> DataBundle:
    table = load_table(args)
    labels = table.labels
    segments = find_segments(labels, table.times)
    split = blocked_split(segments, args.step, args.stride, args.split_block)
    for name in SPLITS:
        if not len(split[name].starts):
            raise UserError(
                f"--step {args.step} / --stride {args.stride} / --split_block {args.split_block}: the {name} split gets no "
                "windows (the segments are too short for that many blocks); use smaller values or more data"
            )
    missing = sorted(set(range(len(table.class_names))) - set(split["train"].labels.tolist()))
    if missing:
        names = ", ".join(table.class_names[i] for i in missing)
        raise UserError(f"--step {args.step}: class(es) {names} get no training window; use a smaller --step")

    fmt = FORMATS[args.data](args)
    train_rows = table.values[split["train"].rows(args.step)]
    scaler = SCALERS[fmt.scaler]().fit(train_rows)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    scaled = scaler.transform(table.values)
    fmt.fit(scaler.transform(train_rows))
    values = torch.as_tensor(scaled, dtype=dtype)
    datasets = {name: WindowDataset(values, split[name].starts, split[name].labels, args.step, fmt) for name in SPLITS}
    return DataBundle(**datasets, class_names=table.class_names, channels=table.channels, fmt=fmt, source=table.source, seq_len=args.step)


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed)
    return DataLoader(
        dataset,
        batch_size=None,  # the sampler yields whole batches of indices
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,  # worker seeds come from here, never from the global RNG
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )
