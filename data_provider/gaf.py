"""Gramian angular fields (Wang and Oates, 2015), computed in batches with torch.

For a series rescaled to [-1, 1] with angles phi = arccos(x):
    GASF_ij = cos(phi_i + phi_j) = x_i x_j - s_i s_j
    GADF_ij = sin(phi_i - phi_j) = s_i x_j - x_i s_j,      s = sqrt(1 - x^2)
Both fields share x and s, so one pass gives both; no arccos is needed. They are computed on
whatever device the batch is on, so memory grows with the batch, not with the data set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def paa(series: torch.Tensor, size: int) -> torch.Tensor:
    """Piecewise aggregate approximation of the last dimension down to ``size`` points.

    When ``size`` divides the length this is the exact segment mean; otherwise segments
    overlap by at most one point (``adaptive_avg_pool1d`` boundaries).
    """
    length = series.shape[-1]
    if size >= length:
        return series
    if length % size == 0:
        return series.reshape(*series.shape[:-1], size, length // size).mean(-1)
    flat = series.reshape(-1, 1, length)
    return F.adaptive_avg_pool1d(flat, size).reshape(*series.shape[:-1], size)


def dual_gaf(windows: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``windows`` [B, T, C] scaled to [-1, 1] -> (GASF, GADF), each [B, C, S, S]."""
    x = windows.transpose(1, 2)  # [B, C, T]
    if size is not None:
        x = paa(x, size)
    x = x.clamp(-1.0, 1.0)
    s = (1.0 - x * x).clamp(min=0.0).sqrt()
    xi, xj = x.unsqueeze(-1), x.unsqueeze(-2)
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    return xi * xj - si * sj, si * xj - xi * sj


def rescale_windows(windows: torch.Tensor) -> torch.Tensor:
    """Each window and channel to its own [-1, 1] (``--scale window``, pyts' default). It
    erases absolute levels: a damper stuck at 25 % and at 75 % give the same image. A constant
    channel maps to 0 (GASF -1, GADF 0)."""
    low = windows.amin(dim=1, keepdim=True)
    span = windows.amax(dim=1, keepdim=True) - low
    scaled = 2 * (windows - low) / span.clamp(min=1e-12) - 1
    return torch.where(span > 1e-12, scaled, torch.zeros_like(scaled))
