"""Defaults that are numbers of their own rather than one flag's default."""

from __future__ import annotations

import math

SEEDS_HEADLINE = "--model DualGAFNet --data DualGAF --step 96"

# --train_epochs auto: a length in windows seen, not in epochs, so a large data set is not
# trained for 30 long epochs and a small one still gets enough updates (benchmarks/README.md,
# "Default run": 12 epochs on the built-in data, 30 on the small LBNL files).
AUTO_EPOCH_WINDOWS = 16_000
AUTO_EPOCHS = (3, 30)

# Evaluation batch size: changes no result, only speed and memory (--limit_val_batches counts these).
EVAL_BATCH_SIZE = 256


def auto_epochs(train_windows: int) -> int:
    low, high = AUTO_EPOCHS
    return min(high, max(low, math.ceil(AUTO_EPOCH_WINDOWS / max(train_windows, 1))))
