"""Per-channel scalers, always fitted on training rows only."""

from __future__ import annotations

import numpy as np

EPS = 1e-8


class StandardScaler:
    """Zero mean, unit variance per channel; a constant channel is only centred."""

    def fit(self, rows: np.ndarray) -> StandardScaler:
        self.mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        self.scale = np.where(std > EPS, std, 1.0)
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.scale

    def affine(self) -> dict[str, np.ndarray]:
        """``transform`` as (x - center) / width * gain + bias, the same float operations."""
        ones = np.ones_like(self.mean)
        return {"center": self.mean, "width": self.scale, "gain": ones, "bias": 0 * ones}


class MinMaxScaler:
    """Training range of each channel -> [-1, 1] (what Gramian angular fields need).

    Values outside the training range map outside [-1, 1]; the GAF clips them. A constant
    channel maps to 0.
    """

    def fit(self, rows: np.ndarray) -> MinMaxScaler:
        self.low = rows.min(axis=0)
        span = rows.max(axis=0) - self.low
        self.span = np.where(span > EPS, span, np.inf)  # constant channel: (x - low) / inf = 0
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return np.where(np.isinf(self.span), 0.0, 2.0 * (values - self.low) / self.span - 1.0)

    def affine(self) -> dict[str, np.ndarray]:
        """``transform`` as (x - center) / width * gain + bias: scaling by 2 is exact in binary
        floating point, so the result is bit for bit the same; a constant channel gets gain 0."""
        constant = np.isinf(self.span)
        return {"center": self.low, "width": np.where(constant, 1.0, self.span), "gain": np.where(constant, 0.0, 2.0),
                "bias": np.where(constant, 0.0, -1.0)}  # fmt: skip


SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def affine_tensors(scaler) -> dict:
    """The scaler's affine numbers as float64 tensors (what checkpoints and the Predictor hold)."""
    import torch

    return {key: torch.as_tensor(np.asarray(value, dtype=np.float64)) for key, value in scaler.affine().items()}


def unscale(scaler, scaled: np.ndarray) -> np.ndarray:
    """Back to sensor units; a constant channel (gain 0) gets its training value."""
    affine = scaler.affine()
    gain = np.where(affine["gain"] == 0, np.inf, affine["gain"])
    return (scaled - affine["bias"]) / gain * affine["width"] + affine["center"]
