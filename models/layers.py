"""Shared building blocks, above all the ``--norm`` choice.

BatchNorm normalises with the statistics of the current micro-batch and updates its running
statistics once per micro-batch, so with gradient accumulation ``(b, GA=k)`` does not train
like ``(b*k, GA=1)``. LayerNorm, GroupNorm and no normalisation act on each sample alone and
keep accumulation exact; that is why they are offered and why the default is not ``batch``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NORMS = ("batch", "layer", "group", "none")


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def conv_norm(kind: str, channels: int, dims: int) -> nn.Module:
    """Normalisation for conv features [N, channels, *spatial] (dims = 1 or 2)."""
    if kind == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # over channels and positions of each sample
    if kind == "group":
        return nn.GroupNorm(_groups(channels), channels)
    return nn.Identity()


class FeatureNorm(nn.Module):
    """Normalisation for feature vectors [..., dim] (tokens, nodes, signals)."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        if kind == "batch":
            self.norm = nn.BatchNorm1d(dim)
        elif kind == "layer":
            self.norm = nn.LayerNorm(dim)
        elif kind == "group":
            self.norm = nn.GroupNorm(_groups(dim), dim)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.norm(x.reshape(-1, shape[-1])).reshape(shape)


def classifier_head(in_features: int, hidden: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes))


def window_statistics(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sensor level and shape of a window [B, T, C] -> [B, C, 5]: mean, std, min, max and
    last minus first (what a random forest on window statistics sees). ``mask`` [B, T]: the real
    steps of padded series; padding then counts in none of the five."""
    if mask is None:
        return torch.stack([x.mean(1), x.std(1, unbiased=False), x.amin(1), x.amax(1), x[:, -1] - x[:, 0]], dim=-1)
    mask = mask.bool()
    real = mask.unsqueeze(-1)  # [B, T, 1]
    count = real.sum(1).clamp(min=1)
    mean = (x * real).sum(1) / count
    std = ((((x - mean.unsqueeze(1)) * real) ** 2).sum(1) / count).sqrt()
    low, high = x.masked_fill(~real, float("inf")).amin(1), x.masked_fill(~real, float("-inf")).amax(1)
    steps = torch.arange(x.shape[1], device=x.device).expand_as(mask)
    first = steps.masked_fill(~mask, x.shape[1]).amin(1).clamp(max=x.shape[1] - 1)  # clamped: a series with no real step
    last = steps.masked_fill(~mask, -1).amax(1).clamp(min=0)
    rows = torch.arange(x.shape[0], device=x.device)
    return torch.stack([mean, std, low, high, x[rows, last] - x[rows, first]], dim=-1)


class StatisticsBranch(nn.Sequential):
    """The forest's view of a window as a feature vector: ``window_statistics`` of every sensor,
    flattened, through one linear layer. [B, T, C] (and the padding mask) -> [B, features].
    A Sequential so its weights keep the names ``0.weight``/``0.bias`` older checkpoints have."""

    def __init__(self, channels: int, features: int):
        super().__init__(nn.Linear(5 * channels, features), nn.GELU())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(window_statistics(x, mask).flatten(1))
