"""``--batch_size auto``: the largest micro-batch that fits a memory budget, and the steps that
keep ``--target_batch_size``.

On CUDA the size is found by probes: forward and backward of the real model on real training
windows, reading the allocator's peak, plus the optimizer state that the first update adds,
within ``--max_memory_fraction`` of the device. Elsewhere (CPU, MPS) there is no allocator peak
to read, so the size comes from an estimate: the bytes autograd keeps for the backward, per
window (measured at two batch sizes), plus gradients and optimizer state, against
``--max_memory_mb`` (default: ``--max_memory_fraction`` of the memory available now). Probes and
estimates leave no trace (``leaves_no_trace``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserError

OPTIMIZER_STATES = {"radam": 2, "adamw": 2, "sgd": 1}  # tensors the size of the weights each optimizer keeps
ESTIMATE_WINDOWS = (2, 4)  # the two batch sizes whose difference gives the bytes per window
ESTIMATE_MARGIN = 2.5  # backward buffers and allocator slack over what autograd saves (CPU: 1.0-2.4x, benchmarks/README.md)
MiB = 2**20


@contextlib.contextmanager
def leaves_no_trace(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Inside: forward and backward passes that leave the run as it was (random state, buffers
    such as BatchNorm statistics, gradients), so a probed run trains as an unprobed one."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def windows(dataset, count: int, device: torch.device):
    """``count`` training windows (repeated when the split is smaller) on ``device``."""
    return dataset[np.arange(count) % len(dataset)].to(device)


def saved_bytes(model: torch.nn.Module, batch, autocast: Callable) -> int:
    """Bytes that autograd keeps for the backward of one forward pass (each storage once)."""
    storages: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(RuntimeError):  # a tensor without a plain storage (rare): not counted
            storage = tensor.untyped_storage()
            storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast():
        model(*batch.inputs())
    return sum(storages.values())


def trainable_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def largest_fitting(cap: int, guess: int, fits: Callable[[int], bool]) -> int:
    """The largest micro-batch in 1..cap for which ``fits`` holds (memory grows with the size,
    so it holds up to some size and never above), by bisection from ``guess``; 0 if none."""
    guess = min(max(guess, 1), cap)
    low, high = (guess, cap + 1) if fits(guess) else (0, guess)  # fits(low), not fits(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def for_target(largest: int, share: int | None) -> int:
    """The micro-batch to train with, at most ``largest``: a divisor of this process's share of
    the target (the effective batch is then exactly the target) unless that would more than
    halve the micro-batch. ``share`` is None when the target does not split evenly over the processes."""
    if share is None:
        return largest
    if largest >= share:
        return share
    divisor = max(d for d in range(1, largest + 1) if share % d == 0)
    return divisor if 2 * divisor >= largest else largest


def available_memory_bytes() -> int:
    """Memory a new allocation can get now: MemAvailable on Linux, else the physical memory."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class MicroBatchSizer:
    """Chooses the micro-batch for one process; ``choose`` returns it with a sentence that says how."""

    def __init__(self, model, dataset, device: torch.device, autocast: Callable, args, cap: int, world_size: int = 1):
        self.model, self.dataset, self.device, self.autocast, self.cap = model, dataset, device, autocast, cap
        self.fraction, self.budget_mb = args.max_memory_fraction, args.max_memory_mb
        # What training adds to the weights whatever the micro-batch: the gradients, the optimizer state and the
        # extra gradient copies (--log_grad_noise's; with several processes DDP's buckets and the flat all-reduce).
        weights, copies = trainable_bytes(model), int(args.log_grad_noise) + (2 if world_size > 1 else 0)
        self.after_first_update = weights * (OPTIMIZER_STATES[args.optimizer] + copies)  # not in a probe's peak
        self.state = weights + self.after_first_update

    def per_window_estimate(self) -> float:
        small, large = ESTIMATE_WINDOWS
        sizes = [saved_bytes(self.model, windows(self.dataset, n, self.device), self.autocast) for n in (small, large)]
        # What one more window adds; at least the average over the larger batch (a model whose saved
        # bytes do not grow with the batch would otherwise look free per window).
        return max((sizes[1] - sizes[0]) / (large - small), sizes[1] / large) * ESTIMATE_MARGIN

    def choose(self) -> tuple[int, str]:
        with leaves_no_trace(self.model, self.device):
            if self.device.type == "cuda" and self.budget_mb is None:
                return self._probe()
            return self._estimate()

    def _estimate(self) -> tuple[int, str]:
        if self.budget_mb is not None:
            budget, source = self.budget_mb * MiB, f"--max_memory_mb {self.budget_mb}"
        else:
            budget = int(self.fraction * available_memory_bytes())
            source = f"--max_memory_fraction {self.fraction:g} of the memory available"
        per_window = self.per_window_estimate()
        largest = min(self.cap, math.floor((budget - self.state) / per_window)) if budget > self.state else 0
        if largest < 1:
            raise UserError(
                f"--batch_size auto: one window needs about {(self.state + per_window) / MiB:.0f} MiB (weights' gradients and "
                f"optimizer state {self.state / MiB:.0f} MiB, {per_window / MiB:.1f} MiB per window), more than {source} "
                f"({budget / MiB:.0f} MiB)"
            )
        return largest, (
            f"estimated {per_window / MiB:.2f} MiB per window + {self.state / MiB:.1f} MiB of gradients and optimizer state "
            f"within {source} ({budget / MiB:.0f} MiB)"
        )

    def _probe(self) -> tuple[int, str]:
        from exp.trainer import is_out_of_memory

        total = torch.cuda.get_device_properties(self.device).total_memory
        budget = int(self.fraction * total)
        peaks: dict[int, int] = {}

        def fits(size: int) -> bool:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                batch = windows(self.dataset, size, self.device)
                with self.autocast():
                    logits = self.model(*batch.inputs())
                logits.float().sum().backward()
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                return False
            finally:
                self.model.zero_grad(set_to_none=True)
            peaks[size] = torch.cuda.max_memory_allocated(self.device) + self.after_first_update  # grads are in the peak already
            return peaks[size] <= budget

        guess = math.floor(max(budget - self.state, 0) / self.per_window_estimate())
        largest = largest_fitting(self.cap, guess, fits)
        torch.cuda.empty_cache()
        if largest < 1:
            raise UserError(
                f"--batch_size auto: a single window does not fit in --max_memory_fraction {self.fraction:g} of "
                f"{torch.cuda.get_device_name(self.device)} ({budget / MiB:.0f} MiB); shorten --step, narrow the model or raise "
                "the fraction"
            )
        return largest, (
            f"probed on {torch.cuda.get_device_name(self.device)}: peak {peaks[largest] / MiB:.0f} MiB within "
            f"--max_memory_fraction {self.fraction:g} ({budget / MiB:.0f} MiB)"
        )


def memory_estimate(model, dataset, device: torch.device, autocast: Callable, args, batch_size: int, world_size: int) -> str:
    """--dry_run: the memory one process needs to train micro-batches of ``batch_size``, from the
    estimate --batch_size auto uses off CUDA (autograd's saved bytes, measured on real windows)."""
    sizer = MicroBatchSizer(model, dataset, device, autocast, args, batch_size, world_size)
    with leaves_no_trace(model, device):
        per_window = sizer.per_window_estimate()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    total = weights + sizer.state + per_window * batch_size
    return (
        f"Memory: about {total / MiB:.1f} MiB per process for micro-batches of {batch_size} (estimate: {per_window / MiB:.2f} MiB "
        f"per window kept for the backward, weights {weights / MiB:.1f} MiB, their gradients and optimizer state "
        f"{sizer.state / MiB:.1f} MiB)"
    )


def sized_plan(plan, fits: int, how: str, log_grad_noise: bool = False):
    """The plan for a micro-batch of at most ``fits`` (the smallest any process measured) that
    keeps ``plan``'s target: a divisor of each process's share where ``for_target`` allows."""
    from exp.accumulation import plan_accumulation

    share = plan.target // plan.world_size if plan.target % plan.world_size == 0 else None
    size = for_target(fits, share)
    if size != fits:
        how += f"; {fits} would fit, {size} divides the target"
    sized = plan_accumulation(size, None, False, plan.target, plan.world_size, sizing=f"--batch_size auto, {how}")
    if log_grad_noise and sized.steps < 2:
        raise UserError(f"--log_grad_noise: --batch_size auto chose micro-batch {size}, the whole --target_batch_size "
                        f"{plan.target} in one step; it needs >= 2 accumulation steps, so give --batch_size yourself")  # fmt: skip
    return sized


def kept_on_resume(args, setting: str, plan, runtime):
    """``--batch_size auto`` with ``--resume``: the micro-batch that the run chose before, not a
    new measurement (the checkpoint counts micro-batches of that size; another machine may
    measure another). A checkpoint of another number of processes is measured afresh."""
    from exp.accumulation import plan_accumulation
    from utils.checkpoint import load_checkpoint

    if plan.sizing != "auto" or args.resume is None or not args.is_training:
        return plan
    path = Path(args.checkpoints) / setting / "last.pt" if args.resume == "auto" else Path(args.resume)
    layout = runtime.from_writer(lambda: load_checkpoint(path).get("layout") if path.is_file() else None)
    if layout is None or layout["world_size"] != plan.world_size:
        return plan
    return plan_accumulation(layout["batch_size"], None, False, plan.target, plan.world_size, sizing=f"--batch_size auto, kept from {path}")
