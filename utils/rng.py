"""Random-number-generator states in a form ``torch.load(weights_only=True)`` accepts."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng(loader_generator: torch.Generator | None = None, cuda: bool = False) -> dict:
    """All RNG states; the CUDA ones only when the run uses CUDA (reading them starts CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }  # fmt: skip


def restore_rng(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Restore what ``capture_rng`` took; the state must have been loaded onto the CPU."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"])
