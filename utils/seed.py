"""Seeding everything the runner controls."""

import os
import random
import warnings

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_deterministic() -> None:
    """PyTorch's deterministic algorithms (``--deterministic``). An op with no deterministic
    implementation on this device warns once, naming itself, instead of stopping the run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    warnings.filterwarnings("once", message=".*does not have a deterministic implementation.*")
