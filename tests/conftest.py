"""Shared helpers: build run.py arguments and small data sets quickly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from config.flags import build_parser
from config.validation import validate
from data_provider.data_factory import WindowDataset, build_data

ROOT = Path(__file__).resolve().parents[1]

# The device the suite runs on: the CPU unless TEST_DEVICE says otherwise (e.g. cuda on a GPU
# machine). Tests of CPU-only promises (bitwise resume, bf16 autocast on CPU) pin --device cpu.
TEST_DEVICE = os.environ.get("TEST_DEVICE", "cpu")

# A small, fast configuration: 1 simulated day per class, short windows, narrow models.
TINY = ["--sim_days", "1", "--step", "32", "--d_model", "16", "--n_heads", "2", "--gaf_size", "8", "--progress", "none",
        "--device", TEST_DEVICE]  # fmt: skip


def make_args(*flags: str, tmp: Path | None = None):
    parser = build_parser()
    extra = ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")] if tmp is not None else []
    args = parser.parse_args([*TINY, *flags, *extra])
    validate(parser, args)
    return args


def split_rows(split: dict, length: int) -> dict[str, set[int]]:
    """The rows each split's windows cover; asserts that no row is in two splits."""
    rows = {name: set(idx.rows(length).tolist()) for name, idx in split.items()}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    return rows


def subset(dataset: WindowDataset, n: int) -> WindowDataset:
    """n windows spread evenly over a split, so every class is in (a data set size we choose),
    without augmentation."""
    assert n < len(dataset), "a subset is smaller than its split"
    return dataset.spread(n)


@pytest.fixture
def tiny_data():
    """Build (and cache per test) the tiny data bundle for a format."""
    cache = {}

    def get(data_format: str, *flags: str):
        key = (data_format, flags)
        if key not in cache:
            cache[key] = build_data(make_args("--data", data_format, *flags))
        return cache[key]

    return get


def flat_params(model) -> np.ndarray:
    return np.concatenate([p.detach().double().cpu().numpy().ravel() for p in model.parameters()])
