"""Sensor graph for the GNN format: edges between strongly correlated sensors."""

from __future__ import annotations

import numpy as np
import torch


def correlation_adjacency(rows: np.ndarray, threshold: float) -> torch.Tensor:
    """Symmetric-normalised adjacency D^-1/2 (A + I) D^-1/2 with A_ij = 1 where
    |corr(sensor i, sensor j)| >= threshold on the given (training) rows. A constant sensor
    correlates with nothing and keeps only its self-loop."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(rows, rowvar=False)
    corr = np.nan_to_num(np.atleast_2d(corr), nan=0.0)
    adjacency = (np.abs(corr) >= threshold).astype(np.float64)
    np.fill_diagonal(adjacency, 1.0)
    inv_sqrt = 1.0 / np.sqrt(adjacency.sum(axis=1))
    return torch.as_tensor(adjacency * inv_sqrt[:, None] * inv_sqrt[None, :], dtype=torch.float32)
