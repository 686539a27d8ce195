"""Batch objects: the one small interface the training loop sees for every data format.

``batch.to(device)``, ``model(*batch.inputs())``, ``batch.labels`` and ``batch.num_samples``.
The loop never asks which format it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from data_provider.gaf import dual_gaf, rescale_windows


@dataclass
class WindowBatch:
    """Plain windows for sequence models: ``model(x)`` with x [B, T, C], or ``model(x, mask)``
    with a [B, T] mask (True on real steps) when series of unequal length were padded."""

    x: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor | None = field(default=None, kw_only=True)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def inputs(self) -> tuple:
        return (self.x,) if self.mask is None else (self.x, self.mask)

    def _map_tensors(self, fn) -> WindowBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{name: fn(v) for name, v in values.items() if isinstance(v, torch.Tensor)})

    def to(self, device, non_blocking: bool = False) -> WindowBatch:
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> WindowBatch:  # called by DataLoader(pin_memory=True)
        return self._map_tensors(lambda t: t.pin_memory())


@dataclass
class DualGAFBatch(WindowBatch):
    """Windows whose GASF and GADF images are made on the batch's device at use time:
    ``model(gasf, gadf, window)``, images [B, C, S, S] and the raw window [B, T, C]."""

    image_size: int
    per_window: bool = False  # --scale window: rescale every window to its own [-1, 1] first

    def inputs(self) -> tuple:
        series = rescale_windows(self.x) if self.per_window else self.x
        return (*dual_gaf(series, self.image_size), self.x)


@dataclass
class GraphBatch(WindowBatch):
    """Sensor graph: ``model(nodes, adjacency)``, nodes [B, N, T] (one node per sensor with
    its window), adjacency [N, N] shared by the batch."""

    adjacency: torch.Tensor

    def inputs(self) -> tuple:
        return (self.x.transpose(1, 2), self.adjacency.to(self.x.dtype))
