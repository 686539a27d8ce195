"""The gradient-accumulation policy, and nothing else.

Training is one stream of micro-batches: epoch 0 batch 0, epoch 0 batch 1, ... The policy
cuts that stream into *windows* of up to ``steps`` micro-batches whose gradients are summed
before one optimizer update.

* Default ("flush"): a window never crosses an epoch end, so the last window of an epoch is
  short when the epoch's batch count is not a multiple of ``steps``.
* ``cross_epoch``: windows run on across epoch ends; only the last window of the whole run
  can be short, and an epoch with fewer micro-batches than ``steps`` still trains.

Each micro-batch loss is divided by its window's *normaliser*: the total sample count (or
total class weight) of every micro-batch in the window. Summed over the window this is
exactly the large-batch mean, whatever the micro-batch sizes. The normaliser is known before
the first backward because the sample order is fixed by seed and epoch alone: the caller
hands in a function giving the per-micro-batch totals of any epoch.

Pure Python, no torch, so it is unit-tested without a model. With several processes the
stream is one of *global* micro-batches (every process's share of one micro-step together):
the normaliser is the window's total over all processes, still known without communication.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from utils.errors import UserError

# --enable_auto_gradient_accumulation: micro-batch size below the bound -> that many steps.
AUTO_RULE = ((4, 4), (8, 2))


def auto_steps(batch_size: int) -> int:
    """Documented rule: batch_size < 4 -> 4 steps, 4..7 -> 2, >= 8 -> 1."""
    for bound, steps in AUTO_RULE:
        if batch_size < bound:
            return steps
    return 1


@dataclass(frozen=True)
class AccumulationPlan:
    """Micro-batch, steps and processes, resolved once (run.py) and handed to the loop."""

    batch_size: int  # micro-batch per process
    steps: int
    world_size: int
    mode: str  # manual, auto or target
    target: int | None = None  # --target_batch_size
    sizing: str = "--batch_size"  # how the micro-batch was chosen; "auto" until --batch_size auto has chosen it

    @property
    def global_micro_batch(self) -> int:
        """Samples of one micro-step over all processes."""
        return self.batch_size * self.world_size

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.steps * self.world_size

    def note(self) -> str | None:
        """Why the effective batch differs from --target_batch_size, if it does."""
        if self.target is None or self.effective_batch_size == self.target:
            return None
        return (
            f"note: effective batch {self.effective_batch_size}, not --target_batch_size {self.target}: the target is not a "
            f"multiple of micro-batch {self.batch_size} x {self.world_size} process(es) = {self.global_micro_batch}, so the "
            f"steps were rounded up to {self.steps}"
        )


def plan_accumulation(
    batch_size: int | str, steps: int | None, auto: bool, target: int | None, world_size: int = 1, sizing: str = "--batch_size"
) -> AccumulationPlan:
    """The one place where the accumulation steps are decided (run.py refuses conflicting flags).

    ``--target_batch_size N``: steps = ceil(N / (batch_size x processes)), so the same target
    gives the same effective batch on 1, 2 or 4 processes wherever N allows it. ``--batch_size
    auto`` gives a provisional plan (micro-batch: this process's whole share of the target) that
    the runner replaces once it has measured what fits (``exp/micro_batch.py``)."""
    if batch_size == "auto":
        if target is None:
            raise UserError("--batch_size auto: needs --target_batch_size N, the effective batch that the chosen micro-batch keeps")
        return plan_accumulation(max(1, target // world_size), None, False, target, world_size, sizing="auto")
    if target is not None:
        per_step = batch_size * world_size
        if target < per_step:
            raise UserError(
                f"--target_batch_size {target} is smaller than one micro-batch per process (--batch_size {batch_size} x "
                f"{world_size} process(es) = {per_step}); lower --batch_size or raise the target"
            )
        return AccumulationPlan(batch_size, math.ceil(target / per_step), world_size, "target", target, sizing)
    if auto and steps is None:
        return AccumulationPlan(batch_size, auto_steps(batch_size), world_size, "auto")
    return AccumulationPlan(batch_size, steps or 1, world_size, "manual")


def smaller_micro_batch(batch_size: int) -> int | None:
    """Out-of-memory recovery: the largest micro-batch that divides ``batch_size`` (half of an
    even one), so every old micro-batch is a whole number of new ones and each window keeps its
    samples; None at 1."""
    return next((d for d in range(batch_size // 2, 0, -1) if batch_size % d == 0), None)


def shrunk(plan: AccumulationPlan, batch_size: int) -> AccumulationPlan:
    """The same effective batch with micro-batches of ``batch_size`` (a divisor of the plan's)."""
    return replace(plan, batch_size=batch_size, steps=plan.steps * (plan.batch_size // batch_size))


@dataclass(frozen=True)
class MicroStep:
    """What the loop needs to know about the micro-batch it is about to process."""

    epoch: int
    batch: int  # index of the micro-batch inside its epoch
    position: int  # 0-based place inside the window
    window_length: int  # micro-batches in this window
    normaliser: float  # total samples (or class weight) of the whole window

    @property
    def is_update(self) -> bool:
        """The last micro-batch of a window: sync gradients and step the optimizer."""
        return self.position == self.window_length - 1


class AccumulationPolicy:
    def __init__(
        self,
        steps: int,
        batch_weights: Callable[[int], Sequence[float]],
        num_epochs: int,
        cross_epoch: bool = False,
    ):
        if steps < 1:
            raise ValueError(f"accumulation steps must be >= 1, got {steps}")
        self.steps = steps
        self.cross_epoch = cross_epoch
        self.num_epochs = num_epochs
        self._batch_weights = batch_weights
        self._cache: dict[int, Sequence[float]] = {}
        # Position of the next micro-batch in the stream.
        self.epoch = 0
        self.batch = 0
        # The open window: its planned length and normaliser, and what has been taken of it.
        self.length = 0
        self.normaliser = 0.0
        self.position = 0
        self.taken = 0.0
        self.windows_done = 0

    # ----------------------------------------------------------------- stream
    def weights(self, epoch: int) -> Sequence[float]:
        if epoch not in self._cache:
            if len(self._cache) >= 2:  # only the current and the next epoch are ever needed
                self._cache.pop(min(self._cache))
            self._cache[epoch] = list(self._batch_weights(epoch))
            if not self._cache[epoch]:
                raise ValueError(f"epoch {epoch} has no micro-batches")
        return self._cache[epoch]

    @property
    def batches_per_epoch(self) -> int:
        return len(self.weights(self.epoch))

    @property
    def pending(self) -> bool:
        """A window is open: some of its micro-batches were back-propagated, no update yet."""
        return self.position > 0

    def next(self) -> MicroStep:
        """Describe the next micro-batch of the stream and move past it."""
        if self.epoch >= self.num_epochs:
            raise RuntimeError("the training stream is exhausted")
        if self.position == 0:
            upcoming = self._upcoming()
            self.length, self.normaliser, self.taken = len(upcoming), float(sum(upcoming)), 0.0
        step = MicroStep(self.epoch, self.batch, self.position, self.length, self.normaliser)
        self.taken += self.weights(self.epoch)[self.batch]
        self.position += 1
        if self.position == self.length:
            self.position = 0
            self.windows_done += 1
        self.batch += 1
        if self.batch == len(self.weights(self.epoch)):
            self.epoch, self.batch = self.epoch + 1, 0
        return step

    def _upcoming(self) -> list[float]:
        """Per-micro-batch totals of the window that starts at the current position."""
        out: list[float] = []
        epoch, batch = self.epoch, self.batch
        while len(out) < self.steps and epoch < self.num_epochs:
            weights = self.weights(epoch)
            take = min(self.steps - len(out), len(weights) - batch)
            out.extend(weights[batch : batch + take])
            batch += take
            if batch < len(weights) or not self.cross_epoch:
                break
            epoch, batch = epoch + 1, 0
        return out

    def cut(self) -> float:
        """Close the open window early (training stopped inside it, e.g. early stopping with
        cross-epoch accumulation). Returns the factor that turns the gradients accumulated so
        far, divided by the planned normaliser, into the mean over what was really seen."""
        if not self.pending:
            return 1.0
        factor = self.normaliser / self.taken
        self.position, self.length, self.normaliser, self.taken = 0, 0, 0.0, 0.0
        self.windows_done += 1
        return factor

    def restart_window(self, step: MicroStep, factor: int) -> None:
        """Out-of-memory recovery at ``step``: go back to the first micro-batch of its window,
        counted in micro-batches ``factor`` times smaller (``resize`` sets the new steps). Only a
        window that began in ``step``'s epoch can be redone (the caller refuses the others)."""
        if step.is_update:  # next() had already closed the window
            self.windows_done -= 1
        self.epoch, self.batch = step.epoch, (step.batch - step.position) * factor
        self.position, self.length, self.normaliser, self.taken = 0, 0, 0.0, 0.0

    def resize(self, steps: int) -> None:
        """Windows of ``steps`` micro-batches from now on, cut anew from the sampler's batches."""
        self.steps = steps
        self._cache.clear()

    # --------------------------------------------------------------- planning
    def updates_in_epoch(self, epoch: int) -> int:
        """Windows that end inside ``epoch`` (an optimizer update each)."""
        n, k = len(self.weights(epoch)), self.steps
        if not self.cross_epoch:
            return math.ceil(n / k)
        before, through = epoch * n, (epoch + 1) * n  # batch counts are the same every epoch
        last = epoch == self.num_epochs - 1
        return (math.ceil(through / k) if last else through // k) - before // k

    def planned_updates(self) -> int:
        """Optimizer updates over the whole run: for sizing per-update LR schedules."""
        n, k = self.batches_per_epoch, self.steps
        if self.cross_epoch:
            return math.ceil(n * self.num_epochs / k)
        return math.ceil(n / k) * self.num_epochs

    def describe(self, batch_size: int, world_size: int = 1) -> str:
        """``batch_size`` is the micro-batch of one process."""
        n = self.batches_per_epoch
        effective = batch_size * self.steps * world_size
        if self.cross_epoch:
            per_epoch = f"{n / self.steps:.2f} optimizer updates/epoch on average (windows cross epochs)"
        else:
            tail = n % self.steps
            per_epoch = f"{self.updates_in_epoch(self.epoch)} optimizer updates/epoch"
            if tail:
                per_epoch += f" (last window: {tail} micro-batch{'es' if tail > 1 else ''}, flushed)"
        ranks = f" x {world_size} processes" if world_size > 1 else ""
        return (
            f"micro-batch {batch_size} x {self.steps} accumulation steps{ranks} = effective batch "
            f"{effective} | {n} micro-batches/epoch -> {per_epoch}"
        )

    # ------------------------------------------------------------ checkpoints
    _STATE = ("steps", "cross_epoch", "epoch", "batch", "length", "normaliser", "position", "taken", "windows_done")

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        """Continue a checkpointed stream. Other steps are accepted only at an epoch boundary
        with no open window (a resume with another micro-batch layout, same effective batch)."""
        if state["cross_epoch"] != self.cross_epoch:
            raise ValueError(f"checkpoint was written with cross_epoch={state['cross_epoch']!r}, this run uses {self.cross_epoch!r}")
        if state["steps"] != self.steps and (state["position"] or state["batch"]):
            raise ValueError(f"checkpoint was written inside an epoch with steps={state['steps']}, this run uses {self.steps}")
        for name in self._STATE:
            if name != "steps":
                setattr(self, name, state[name])
