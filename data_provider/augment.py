"""Augmentation of the training windows: time shifts inside their training block, jitter and
per-sensor scaling, drawn anew every epoch.

Every draw is a function of (seed, epoch, window number) alone, never of the order in which
batches are cut: micro-batches of b taken k at a time, one batch of b*k, several processes and
a run resumed mid-epoch all see exactly the same augmented windows, so accumulation stays exact.

* shift R: the window starts up to R rows earlier or later, never outside the rows of its own
  training block (a split boundary is never crossed: nothing leaks).
* jitter s: Gaussian noise of standard deviation s (in scaled units) on every value. The noise
  comes from a bank of at most ``BANK`` noise windows drawn per epoch; each window takes one at
  random, which keeps memory bounded on large data sets.
* scale s: every sensor of the window is multiplied by 1 + N(0, s^2) (around the scaled zero:
  the training mean, or the middle of the training range for GAF).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

BANK = 256  # noise windows drawn per epoch for jitter
STREAM = 0xA06  # keeps these draws apart from every other use of (seed, epoch)


class Augmentation:
    def __init__(self, shift: int, jitter: float, scale: float, seed: int, starts: np.ndarray, first: np.ndarray, last: np.ndarray):
        self.shift, self.jitter, self.scale, self.seed = shift, jitter, scale, seed
        self.starts, self.first, self.last = starts, first, last  # per window: its start and the room of its block
        self.device, self.epoch, self.draws = torch.device("cpu"), None, {}

    @property
    def room(self) -> bool:
        """Whether any window can move at all (ready-cut samples and --split random cannot)."""
        return bool(np.any(self.last > self.first))

    def to(self, device: torch.device) -> Augmentation:
        moved = copy.copy(self)
        moved.device, moved.epoch, moved.draws = device, None, {}
        return moved

    def set_epoch(self, epoch: int, length: int, channels: int, dtype: torch.dtype) -> None:
        """Draw the epoch's shifts, factors and noise (once per epoch, on the data's device)."""
        if self.epoch == epoch:
            return
        rng = np.random.default_rng([self.seed, epoch, STREAM])
        n = len(self.starts)
        moved = self.starts + rng.integers(-self.shift, self.shift + 1, size=n) if self.shift else self.starts
        factors = 1.0 + self.scale * rng.standard_normal((n, channels)) if self.scale else None
        bank = min(n, BANK)
        noise = self.jitter * rng.standard_normal((bank, length, channels)) if self.jitter else None
        pick = rng.integers(0, bank, size=n) if self.jitter else None
        as_tensor = lambda a, kind=dtype: None if a is None else torch.as_tensor(a, dtype=kind, device=self.device)  # noqa: E731
        self.draws = {
            "starts": as_tensor(np.clip(moved, self.first, self.last), torch.long),
            "factors": as_tensor(factors),
            "noise": as_tensor(noise),
            "pick": as_tensor(pick, torch.long),
        }
        self.epoch = epoch

    def describe(self) -> str:
        parts = [f"shift up to {self.shift} rows" if self.shift else "", f"jitter {self.jitter:g}" if self.jitter else "",
                 f"scale {self.scale:g}" if self.scale else ""]  # fmt: skip
        return ", ".join(p for p in parts if p)

    def window_starts(self, index: torch.Tensor) -> torch.Tensor:
        return self.draws["starts"][index]

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The windows ``x`` [B, T, C] of window numbers ``index``, scaled and jittered."""
        d = self.draws
        if d["factors"] is not None:
            x = x * d["factors"][index][:, None, :]
        if d["noise"] is not None:
            x = x + d["noise"][d["pick"][index]]
        return x
