"""Learning-rate schedules.

``plateau`` (ReduceLROnPlateau) steps once per epoch on the validation loss. ``cosine`` steps
once per *optimizer update*: a linear warm-up over ``--warmup_steps`` updates, then a cosine
decay to ``--min_lr`` sized from the number of updates the accumulation policy will really
make (ceil per epoch when the last window is flushed; across epochs when windows carry over).
An update that AMP skipped does not advance it.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(update: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier for the ``update``-th optimizer update (0-based)."""
    if update < warmup:
        return (update + 1) / warmup
    progress = min((update - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(args, optimizer: torch.optim.Optimizer, total_updates: int):
    """(scheduler or None, True if it steps per optimizer update)."""
    if args.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=args.lr_factor, patience=args.lr_patience), False
    if args.lr_scheduler == "cosine":
        min_ratio = args.min_lr / args.learning_rate

        def factor(update: int) -> float:
            return warmup_cosine_factor(update, args.warmup_steps, total_updates, min_ratio)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    return None, False
