"""A small model for tests/test_new_recipe_flag.py: a first convolution whose kernel size is the recipe
flag the test declares (``--stem_kernel``). Before the flag existed the kernel was 3, which is what
``getattr`` falls back to, so the same file serves the versions before and after the flag."""

from __future__ import annotations

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, args, dims):
        super().__init__()
        kernel = getattr(args, "stem_kernel", 3)
        self.stem = nn.Conv1d(dims.channels, args.d_model, kernel, padding=kernel // 2)
        self.head = nn.Linear(args.d_model, dims.classes)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(window.transpose(1, 2))).mean(-1))
