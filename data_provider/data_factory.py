"""Data formats (the ``--data`` registry) and the one function that builds a run's data.

table (simulator or CSV) -> segments -> leak-free blocked split -> scaler fitted on training
rows -> format-specific fitting (e.g. the sensor graph) -> three ``WindowDataset`` objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_provider.augment import Augmentation
from data_provider.batches import DualGAFBatch, GraphBatch, WindowBatch
from data_provider.graph import correlation_adjacency
from data_provider.sampler import EpochBatchSampler
from data_provider.scaling import SCALERS
from data_provider.sources import class_order, load_table, with_derived_signals
from data_provider.uea import is_uea, load_uea, stack, stratified_holdout, ts_paths
from data_provider.units import names_several, unit_summary
from data_provider.windows import (
    BLOCK_PATTERN,
    SPLITS,
    WindowIndex,
    blocked_split,
    chronological_split,
    find_segments,
    random_split,
    window_bounds,
)
from utils.errors import UserError
from utils.signals import ignore_stop_signals


# ------------------------------------------------------------------ formats
class PlainFormat:
    """Plain multivariate windows [B, T, C] for sequence models (+ a padding mask when the
    series have unequal lengths)."""

    name, scaler, pads = "Classification", "standard", True

    def __init__(self, args, length: int):
        pass

    def fit(self, train_rows: np.ndarray) -> None:
        pass

    def on(self, device: torch.device) -> PlainFormat:
        """This format with its own tensors on ``device`` (none but the sensor graph's)."""
        return self

    def make_batch(self, x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> WindowBatch:
        return WindowBatch(x, labels, mask=mask)

    def describe(self) -> str:
        return "plain windows [B, T, C], z-scored with training statistics"


class DualGAFFormat(PlainFormat):
    """GASF + GADF images per sensor, made per batch on the device."""

    name, scaler, pads = "DualGAF", "minmax", False

    def __init__(self, args, length: int):
        self.image_size = min(args.gaf_size, length)
        self.step = length
        self.per_window = args.scale == "window"

    def make_batch(self, x, labels, mask=None):
        return DualGAFBatch(x, labels, self.image_size, self.per_window)

    def describe(self):
        s = self.image_size
        paa = f" (PAA {self.step} -> {s} points)" if s < self.step else ""
        scale = "each window's own min/max" if self.per_window else "training min/max"
        return f"GASF + GADF images [B, C, {s}, {s}] made per batch{paa}; {scale} -> [-1, 1]"


class GraphFormat(PlainFormat):
    """One node per sensor holding its window; edges from training-set correlations."""

    name, scaler, pads = "GNN", "standard", False

    def __init__(self, args, length: int):
        self.threshold = args.graph_threshold
        self.adjacency = None

    def fit(self, train_rows):
        self.adjacency = correlation_adjacency(train_rows, self.threshold)

    def on(self, device):
        moved = copy.copy(self)
        moved.adjacency = self.adjacency.to(device)
        return moved

    def make_batch(self, x, labels, mask=None):
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

    def __init__(self, values: torch.Tensor, starts: np.ndarray, labels: np.ndarray, length: int, fmt, valid=None):
        self.values, self.starts, self.labels, self.fmt = values, starts, labels, fmt
        self.valid = valid  # [rows] bool: False on padding (unequal-length series), or None
        self.augment = None  # training split only: an Augmentation (data_provider/augment.py), drawn per epoch
        self.offsets = torch.arange(length)
        # The same starts and labels as tensors, on the device of ``values`` (see ``to``).
        self.start_rows, self.label_ids = torch.as_tensor(starts), torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        """``index``: window numbers (a number, a numpy array, or a tensor on the device of ``values``)."""
        if not isinstance(index, torch.Tensor):
            index = torch.as_tensor(np.atleast_1d(np.asarray(index)))
        augment = self.augment if self.augment is not None and self.augment.epoch is not None else None  # drawn for an epoch
        starts = self.start_rows[index] if augment is None else augment.window_starts(index)
        rows = starts[:, None] + self.offsets
        mask = None if self.valid is None else self.valid[rows]
        x = self.values[rows] if augment is None else augment(self.values[rows], index)
        return self.fmt.make_batch(x, self.label_ids[index], mask)

    def spread(self, count: int) -> WindowDataset:
        """``count`` windows spread evenly over the split, in order, so every class keeps its
        share (evaluation limits); the split itself when it has no more."""
        if count >= len(self):
            return self
        pick = np.linspace(0, len(self) - 1, count).round().astype(np.int64)
        thinned = copy.copy(self)
        thinned.starts, thinned.labels = self.starts[pick], self.labels[pick]
        thinned.start_rows, thinned.label_ids = self.start_rows[pick], self.label_ids[pick]
        thinned.augment = None
        return thinned

    def set_epoch(self, epoch: int) -> None:
        """Windows as augmented in ``epoch`` (nothing to do without augmentation)."""
        if self.augment is not None:
            self.augment.set_epoch(epoch, len(self.offsets), self.values.shape[1], self.values.dtype)

    def to(self, device: torch.device, memo: dict | None = None) -> WindowDataset:
        """A copy whose tensors (and the format's, such as the sensor graph) live on ``device``;
        ``memo`` (id -> copy) lets splits that share a table share its one copy."""
        memo = {} if memo is None else memo
        moved = copy.copy(self)
        for name in ("values", "valid", "offsets", "start_rows", "label_ids"):
            value = getattr(self, name)
            if value is not None:
                if id(value) not in memo:  # the splits are alive meanwhile: ids are not reused
                    memo[id(value)] = value.to(device)
                setattr(moved, name, memo[id(value)])
        moved.fmt = self.fmt.on(device)
        moved.augment = None if self.augment is None else self.augment.to(device)
        return moved


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
    scaler: object = None  # fitted on the training rows; what a trained model needs to see new data the same way
    times: np.ndarray | None = None  # [rows] datetime64[ns] of the table's rows (None: UEA samples, no time column)
    ready_cut: bool = False  # UEA: every window is one sample of the file, not cut from a table
    derived: list = field(default_factory=list)  # recipe of the derived channels after the sensors (data_provider/derived.py)
    units: np.ndarray | None = None  # [rows] the unit (log file) of each row of the table, with several logs
    unit_names: list[str] = field(default_factory=list)

    @property
    def sensors(self) -> list[str]:
        """The channels a log must have: every channel but the derived ones."""
        return self.channels[: len(self.channels) - len(self.derived)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def window_bounds(self, split: WindowDataset) -> tuple[list, list]:
        """Where a split's windows start and end: times (or row numbers) of the table; ready-cut
        UEA samples are numbered as in their file."""
        if self.ready_cut:
            number = list(range(len(split)))
            return number, number
        return window_bounds(self.times, split.starts, self.seq_len)

    def window_units(self, split: WindowDataset) -> list[str] | None:
        """The unit (log file) of each of a split's windows, with several logs; None with one."""
        if self.units is None:
            return None
        return [self.unit_names[unit] for unit in self.units[split.starts]]

    def evaluated_on(self, val_windows: int | None, test_windows: int | None) -> DataBundle:
        """The bundle with validation and test limited to that many windows each (None: all)."""
        return replace(self, val=self.val if val_windows is None else self.val.spread(val_windows),
                       test=self.test if test_windows is None else self.test.spread(test_windows))  # fmt: skip

    def splits_on(self, device: torch.device) -> tuple[WindowDataset, WindowDataset, WindowDataset]:
        """The train, validation and test splits on ``device``, sharing one copy of the table."""
        memo: dict = {}
        return tuple(getattr(self, name).to(device, memo) for name in SPLITS)

    def summary(self) -> str:
        counts = " / ".join(f"{len(getattr(self, s))} {s}" for s in SPLITS)
        return (
            f"Data: {self.source} | {len(self.channels)} sensors, {self.num_classes} classes, "
            f"windows of {self.seq_len}: {counts}\nFormat {self.fmt.name}: {self.fmt.describe()}"
        )


def split_windows(args, segments, units: np.ndarray | None = None) -> dict:
    if args.split == "chronological":
        return chronological_split(segments, args.step, args.stride, train_stride=args.train_stride)
    if args.split == "random":
        print("warning: --split random deals overlapping windows to different splits, so test rows are also seen in "
              "training: scores come out too high", flush=True)  # fmt: skip
        return random_split(segments, args.step, args.stride, args.seed)
    return blocked_split(segments, args.step, args.stride, args.split_block, args.split_fold, train_stride=args.train_stride,
                         units=units)  # fmt: skip


def check_coverage(split: dict, class_names: list[str], args) -> None:
    """Every class needs windows in train, validation and test."""
    for label, name in enumerate(class_names):
        counts = {s: int((split[s].labels == label).sum()) for s in SPLITS}
        if min(counts.values()) == 0:
            shown = ", ".join(f"{n} {s}" for s, n in counts.items())
            hint = (f"the blocked split needs {len(BLOCK_PATTERN)} blocks of --split_block {args.split_block} windows per class"
                    if args.split == "blocked" else f"--split {args.split} cannot give it every split")  # fmt: skip
            raise UserError(
                f"class '{name}' has too few windows ({shown}) with --step {args.step} --stride {args.stride}: {hint}; "
                "use a smaller --step, --stride or --split_block, or more data"
            )


def build_uea(args) -> DataBundle:
    """Ready-cut UEA samples: the TEST file tests, a stratified 20 % of TRAIN validates."""
    if args.train_stride is not None:
        raise UserError(f"--train_stride: {args.data_path} holds ready-cut UEA samples; the flag applies to windows cut from a table")
    train_set, test_set = load_uea(args.root_path, args.data_path)
    names = class_order(train_set.labels + test_set.labels)
    lookup = {name: i for i, name in enumerate(names)}
    length = max(len(s) for s in train_set.series + test_set.series)
    fmt = FORMATS[args.data](args, length)
    x_all, m_all = stack(train_set.series, length, resample=not fmt.pads)
    x_test, m_test = stack(test_set.series, length, resample=not fmt.pads)
    y_all = np.array([lookup[label] for label in train_set.labels])
    y_test = np.array([lookup[label] for label in test_set.labels])
    val = stratified_holdout(y_all, 0.2, args.seed)
    train = np.setdiff1d(np.arange(len(y_all)), val)
    parts = {"train": (x_all[train], m_all[train], y_all[train]), "val": (x_all[val], m_all[val], y_all[val]),
             "test": (x_test, m_test, y_test)}  # fmt: skip
    if not len(val):
        raise UserError(f"{train_set.path}: too few samples per class to hold out a validation set")
    scaler = SCALERS[fmt.scaler]().fit(parts["train"][0][parts["train"][1]])
    fmt.fit(scaler.transform(parts["train"][0][parts["train"][1]]))
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    x = np.concatenate([p[0] for p in parts.values()])
    m = np.concatenate([p[1] for p in parts.values()])
    values = torch.as_tensor(np.where(m[..., None], scaler.transform(x), 0.0).reshape(-1, x.shape[-1]), dtype=dtype)
    valid = None if m.all() else torch.as_tensor(m.reshape(-1))
    datasets, offset = {}, 0
    for name, (*_, ys) in parts.items():
        starts = (offset + np.arange(len(ys))) * length
        datasets[name] = WindowDataset(values, starts, ys, length, fmt, valid)
        offset += len(ys)
    train = datasets["train"]
    train.augment = augmentation(args, WindowIndex(train.starts, train.labels))  # ready-cut: jitter and scale, no room to shift
    channels = [f"dim_{d}" for d in range(train_set.dims)]
    lengths = {len(s) for s in train_set.series + test_set.series}
    unequal = "" if len(lengths) == 1 else ", unequal lengths " + ("padded and masked" if fmt.pads else "resampled")
    source = f"UEA {args.data_path} ({train_set.path.name} + {test_set.path.name}, length {length}{unequal})"
    return DataBundle(
        **datasets, class_names=names, channels=channels, fmt=fmt, source=source, seq_len=length, scaler=scaler, ready_cut=True
    )


def check_channels(train_rows: np.ndarray, channels: list[str], source: str) -> None:
    """Every sensor constant over the training rows leaves nothing to learn; one is just noted."""
    constant = [name for name, spread in zip(channels, np.ptp(train_rows, axis=0)) if spread == 0]
    if len(constant) == len(channels):
        raise UserError(f"{source}: every sensor column is constant over the training rows ({', '.join(channels)})")
    if constant:
        print(f"note: constant over the training rows (carry no information): {', '.join(constant)}", flush=True)


def augmentation(args, train: WindowIndex) -> Augmentation | None:
    """The training windows' augmentation asked for by the --augment_* flags, or None."""
    if not (args.augment_shift or args.augment_jitter or args.augment_scale):
        return None
    augment = Augmentation(args.augment_shift, args.augment_jitter, args.augment_scale, args.seed, train.starts, train.first, train.last)
    if args.augment_shift and not augment.room:
        print(f"note: --augment_shift {args.augment_shift}: no training window can move (--split {args.split} leaves no room)", flush=True)
    print(f"Augmentation of the training windows: {augment.describe()}", flush=True)
    return augment


def build_data(args) -> DataBundle:
    if args.data_path and is_uea(args.root_path, args.data_path):
        return build_uea(args)
    one_name = args.data_path and not names_several(args.root_path, args.data_path)
    if one_name and not Path(args.data_path).suffix and not (Path(args.root_path) / args.data_path).exists():
        train_ts = ts_paths(args.root_path, args.data_path)[0]
        raise UserError(f"--data_path: neither the file {Path(args.root_path) / args.data_path} nor the UEA file {train_ts} exists")
    table = with_derived_signals(load_table(args), args)
    for note in table.notes:
        print(f"note: {note}", flush=True)
    if table.sampling is not None:
        print(f"Sampling: {table.sampling.describe(table.breaks, args.step, args.missing)}", flush=True)
    segments = find_segments(table.labels, table.breaks)
    longest = max(segments, key=lambda seg: seg.end - seg.start)
    if longest.end - longest.start < args.step:
        raise UserError(
            f"--step {args.step} is longer than every segment (the longest has {longest.end - longest.start} rows, "
            f"class '{table.class_names[longest.label]}'); use a smaller --step"
        )
    split = split_windows(args, segments, table.units)
    check_coverage(split, table.class_names, args)
    if table.unit_names:
        print(unit_summary(table.units, table.unit_names, split), flush=True)

    fmt = FORMATS[args.data](args, args.step)
    train_rows = table.values[split["train"].rows(args.step)]
    check_channels(train_rows, table.channels, table.source)
    scaler = SCALERS[fmt.scaler]().fit(train_rows)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    fmt.fit(scaler.transform(train_rows))
    values = torch.as_tensor(scaler.transform(table.values), dtype=dtype)
    datasets = {name: WindowDataset(values, split[name].starts, split[name].labels, args.step, fmt) for name in SPLITS}
    datasets["train"].augment = augmentation(args, split["train"])
    return DataBundle(**datasets, class_names=table.class_names, channels=table.channels, fmt=fmt, source=table.source,
                      seq_len=args.step, scaler=scaler, times=table.times, derived=table.derived, units=table.units,
                      unit_names=table.unit_names)  # fmt: skip


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
    resident: bool = False,
    limit: int | None = None,
):
    """Training batches in the seed-and-epoch order; ``batch_size`` is the global micro-batch,
    of which this process gets its share; ``limit``: the first that many batches of each epoch.
    ``resident``: every batch is cut where the split lives (see ``ResidentLoader``;
    ``DataBundle.splits_on`` puts the splits on the device)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, rank, world_size, on_epoch=dataset.set_epoch, limit=limit)
    if resident:
        return ResidentLoader(dataset, sampler)
    return _loader(dataset, sampler, num_workers, pin_memory, generator)


def make_eval_loader(dataset: WindowDataset, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                     pin_memory: bool = False, resident: bool = False):  # fmt: skip
    """This process's contiguous shard of an evaluation split, in order: gathered in rank
    order, the shards give every window exactly once."""
    shard = np.array_split(np.arange(len(dataset)), world_size)[rank]
    batches = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
    if resident:
        return ResidentLoader(dataset, batches)
    # A private generator: starting a pass must not draw from the global RNG (dropout masks).
    return _loader(dataset, batches, num_workers, pin_memory, torch.Generator().manual_seed(0))


def _loader(dataset, sampler, num_workers, pin_memory, generator) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=None,  # the sampler yields whole batches of indices
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers end with each pass: none outlive a run or leak across --itr
        generator=generator,  # worker seeds come from here, never from the global RNG
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )


class ResidentLoader:
    """The loader of a split that lives on the training device (these data sets are megabytes).

    Each pass copies its whole order of window numbers to the split's device at once and cuts
    every batch there: no DataLoader, no worker, no copy and no host sync per batch. The batches
    are exactly the DataLoader's (same sampler)."""

    def __init__(self, dataset: WindowDataset, sampler):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        batches = list(self.sampler)
        if not batches:
            return
        order = torch.as_tensor(np.concatenate(batches)).to(self.dataset.values.device, non_blocking=True)
        for index in order.split([len(b) for b in batches]):
            yield self.dataset[index]
