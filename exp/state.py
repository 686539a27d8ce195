"""The training state and its checkpoints: ``TrainingState.state_dict()`` *is* the checkpoint.

The state has a replicated part (the same on every process: weights, optimizer, scheduler,
GradScaler, accumulation policy, early stopping, counters, history) and one part per process
(the partial gradients of an open accumulation window, the epoch's running statistics of its
share, its random-number states). The writer gathers every process's part into the one file;
on resume each process takes its own back.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np
import torch

from config.flags import flag_table, flags_with_role
from config.registry import NOT_DECLARED, RECIPE
from utils.checkpoint import atomic_save, load_checkpoint
from utils.errors import UserError
from utils.rng import capture_rng, restore_rng


class EpochMeter:
    """Running statistics of this process's share of the epoch in progress: sums kept on the device,
    filled once per accumulation window by ``OpenWindow.settle`` (no sync per micro-batch)."""

    def __init__(self, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.weight = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0
        self.micro_batches = 0  # done in this epoch, including skipped ones
        self.updates = 0
        self.seconds = 0.0  # of this epoch before the current process took over (resume)

    def totals(self) -> list[float]:
        """Loss, weight, correct and samples: summed over processes, they give the epoch's figures."""
        loss, weight, correct = torch.stack([self.loss, self.weight, self.correct.double()]).tolist()  # one sync
        return [loss, weight, correct, float(self.samples)]

    def mean_loss(self) -> float:
        """Mean per-sample loss so far (class-weighted mean when class weights are on)."""
        return mean_loss(self.totals())

    def accuracy(self) -> float:
        return accuracy(self.totals())

    def state_dict(self) -> dict:
        return {"loss": float(self.loss), "weight": float(self.weight), "correct": int(self.correct), "samples": self.samples,
                "micro_batches": self.micro_batches, "updates": self.updates, "seconds": self.seconds}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.loss.fill_(state["loss"])
        self.weight.fill_(state["weight"])
        self.correct.fill_(state["correct"])
        self.samples, self.micro_batches, self.updates = state["samples"], state["micro_batches"], state["updates"]
        self.seconds = state["seconds"]


class OpenWindow:
    """The open accumulation window's micro-batches, as the loop hands them over: each one's loss
    total (which also says whether it was finite), correct predictions and class weight, left on
    the device, with its stream position and sample count. Read once, at the window's update
    (or before a checkpoint): whether the window is applied, and what of it the epoch counts."""

    NONE = 2**62  # no non-finite loss

    def __init__(self):
        self._clear()

    def _clear(self) -> None:
        self.totals, self.corrects, self.weights, self.positions, self.samples = [], [], [], [], []

    def add(self, total: torch.Tensor, correct: torch.Tensor, weight: torch.Tensor | None, position: int, samples: int) -> None:
        self.totals.append(total)
        self.corrects.append(correct)
        self.weights.append(weight)
        self.positions.append(position)
        self.samples.append(samples)

    def settle(self, runtime, meter: EpochMeter) -> int | None:
        """The earliest stream position with a non-finite loss over every process (None: all finite);
        the micro-batches before it, on every process, go into ``meter``. Starts afresh."""
        totals = torch.stack(self.totals) if self.totals else None
        finite = torch.isfinite(totals).tolist() if totals is not None else []  # the one sync of the window
        local = self.positions[finite.index(False)] if False in finite else self.NONE
        (code,) = runtime.agree(self.NONE - local)  # agree takes the maximum: the earliest position anywhere
        first_bad = None if code == 0 else self.NONE - code
        keep = len(self.positions) if first_bad is None else bisect.bisect_left(self.positions, first_bad)  # positions ascend
        if keep:
            meter.loss += totals[:keep].double().sum()
            meter.correct += torch.stack(self.corrects[:keep]).sum()
            weights = self.weights[:keep]
            meter.weight += sum(self.samples[:keep]) if weights[0] is None else torch.stack(weights).double().sum()
            meter.samples += sum(self.samples[:keep])
        self._clear()
        return first_bad


def mean_loss(totals: list[float]) -> float:
    loss, weight, _, samples = totals
    return loss / weight if samples else math.nan


def accuracy(totals: list[float]) -> float:
    _, _, correct, samples = totals
    return correct / samples if samples else math.nan


class TrainingState:
    """Counters, history and the stateful parts of training, saved and restored as one."""

    # Plain values saved under their own names; together with the components they are the checkpoint.
    COUNTERS = ("epoch", "finished", "updates", "skipped_updates", "bad_windows", "consecutive_bad_windows", "window_bad",
                "train_seconds", "history")  # fmt: skip

    def __init__(self, model: torch.nn.Module, device: torch.device, **components):
        self.model, self.device = model, device
        self.components = components  # name -> object with state_dict()/load_state_dict(), or None
        self.epoch = 0  # epoch in progress (= epochs completed at an epoch boundary)
        self.finished = False
        self.updates = 0
        self.skipped_updates = 0  # AMP found inf/nan and skipped the step
        self.bad_windows = 0  # windows discarded for a non-finite loss or gradient
        self.consecutive_bad_windows = 0
        self.window_bad: str | None = None  # why the open window will be discarded (agreed by every process)
        self.train_seconds = 0.0
        self.history: list[dict] = []
        self.meter = EpochMeter(device)

    def keys(self) -> tuple[str, ...]:
        """What a resumable checkpoint holds (derived, so the save and the restore never drift)."""
        return ("model", *self.components, *self.COUNTERS, "processes")

    def new_epoch(self, epoch: int) -> None:
        self.epoch, self.meter = epoch, EpochMeter(self.device)

    def process_state(self, loader_generator: torch.Generator | None) -> dict:
        """This process's own part: partial gradients of the open window, running statistics, RNG."""
        grads = [None if p.grad is None else p.grad.detach().cpu().clone() for p in self.model.parameters()]
        return {
            "grads": grads if any(g is not None for g in grads) else None,
            "meter": self.meter.state_dict(),
            "rng": capture_rng(loader_generator, cuda=self.device.type == "cuda"),
        }

    def state_dict(self, processes: list[dict]) -> dict:
        components = {name: None if part is None else part.state_dict() for name, part in self.components.items()}
        counters = {name: getattr(self, name) for name in self.COUNTERS}
        return {"model": self.model.state_dict(), **components, **counters, "processes": processes}

    def load_state_dict(self, state: dict, rank: int, world_size: int, loader_generator: torch.Generator | None) -> bool:
        """Restore everything. This process takes its own part back when the number of processes
        is unchanged and returns True; after an epoch-boundary resume on another number of
        processes there are no partial gradients, and it takes the first process's RNG states
        (the caller gives it a seed of its own)."""
        for name, part in self.components.items():
            if part is not None:
                part.load_state_dict(state[name])
        for name in self.COUNTERS:
            setattr(self, name, state[name])
        processes = state["processes"]
        own = len(processes) == world_size
        mine = processes[rank] if own else processes[0]
        restore_rng(mine["rng"], loader_generator)
        if own:
            self.meter.load_state_dict(mine["meter"])
            if mine["grads"] is not None:
                for p, g in zip(self.model.parameters(), mine["grads"]):
                    p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype)
        return own


class Checkpoints:
    """Writes the state (gathered from every process, written by one) and reads it back."""

    def __init__(self, state: TrainingState, runtime, loader_generator, meta: dict):
        self.state, self.runtime, self.loader_generator = state, runtime, loader_generator
        self.meta = meta  # what the file also says about the run: classes, channels, data, args, layout

    def save(self, path: Path) -> None:
        everyone = self.runtime.gather_to_writer(self.state.process_state(self.loader_generator))
        self.runtime.write(path, lambda: atomic_save({**self.state.state_dict(everyone), **self.meta}, path))

    def read(self, path: Path) -> dict:
        """A checkpoint read by the writer and handed to every process (no shared disk needed)."""
        return self.runtime.from_writer(lambda: load_checkpoint(path))


def check_model(state: dict, path: Path, model_name: str, class_names: list[str]) -> None:
    saved = state.get("args", {})
    if saved.get("model") != model_name:
        raise UserError(f"checkpoint {path} holds a {saved.get('model')} model, not {model_name}")
    if state.get("class_names") != list(class_names):
        raise UserError(
            f"checkpoint {path} was trained on other classes ({len(state.get('class_names') or [])} vs {len(class_names)} here)"
        )


def check_resumable(state: dict, path: Path, args, plan, fingerprint: str, keys: tuple[str, ...]) -> None:
    """Refuse, naming the flag, a checkpoint that this run cannot continue exactly."""
    missing = [key for key in (*keys, "layout") if key not in state]
    if missing:
        raise UserError(f"--resume: {path} lacks {', '.join(missing)}: it is not a resumable checkpoint of this version")
    for flag, entry, then, now, predates in recipe_flags(state["args"], args):
        if predates and then is NOT_DECLARED:
            raise UserError(f"--resume: {path} was written by an older version without --{flag}; start a new run")
        if then == now:
            continue
        if predates:
            how = f"leave --{flag} out" if entry.absent(then) else f"pass {entry.spell(then)}"
            raise UserError(f"--resume: {path} was written by an older version without --{flag}: {how} to continue it, or start a new run")
        raise UserError(f"--resume: {path} was written with {entry.spell(then)}, this run has {entry.spell(now)}")
    if state.get("data_fingerprint") != fingerprint:
        raise UserError(f"--resume: {path} was trained on other windows than this run's data ({state.get('data_source')})")
    check_layout(state, path, plan)


def recipe_flags(saved: dict, args):
    """Every recipe flag as (name, its flag-table entry, its value in a checkpoint's args ``saved``,
    its value in this run, whether the checkpoint predates the flag). For a flag the checkpoint
    predates, the value is the one runs had before the flag existed (its ``older_runs``)."""
    for flag in flags_with_role(RECIPE):
        entry = flag_table()[flag]
        yield flag, entry, saved.get(flag, entry.older_runs), getattr(args, flag), flag not in saved


def recipe_differences(saved: dict, args) -> list[str]:
    """The recipe flags a checkpoint's args (``saved``) hold otherwise than this run, spelled as
    typed: ``--temporal small there, --temporal resnet here``."""
    return [f"{entry.spell(then)} there, {entry.spell(now)} here"
            for _, entry, then, now, _ in recipe_flags(saved, args) if then is not NOT_DECLARED and then != now]  # fmt: skip


def layout_of(plan) -> dict:
    return {"batch_size": plan.batch_size, "steps": plan.steps, "world_size": plan.world_size,
            "effective_batch_size": plan.effective_batch_size}  # fmt: skip


def describe_layout(layout: dict) -> str:
    return (f"micro-batch {layout['batch_size']} x {layout['steps']} steps x {layout['world_size']} process(es) "
            f"= effective batch {layout['effective_batch_size']}")  # fmt: skip


def check_layout(state: dict, path: Path, plan) -> None:
    """The effective batch must be kept. Inside an epoch (also after its last micro-batch, before
    its validation) the micro-batch layout must be the same too: the stream position counts
    global micro-batches. At an epoch boundary the steps may be recomputed for another
    micro-batch or number of processes, except with cross-epoch windows, which depend on the
    layout."""
    saved, now, policy = state["layout"], layout_of(plan), state["accumulation"]
    inside_epoch = policy["batch"] != 0 or policy["position"] != 0 or any(p["meter"]["micro_batches"] for p in state["processes"])
    same = all(saved[k] == now[k] for k in ("batch_size", "steps", "world_size"))
    if not same and (inside_epoch or policy["cross_epoch"]):
        where = "inside an epoch" if inside_epoch else "with --cross_epoch_accumulation (windows run across epochs)"
        raise UserError(
            f"--resume: {path} was written {where} with {describe_layout(saved)}; this run has {describe_layout(now)}: "
            "resume it with the same --batch_size, steps and number of processes"
            + (", or from an epoch-boundary checkpoint" if inside_epoch and not policy["cross_epoch"] else "")
        )
    if saved["effective_batch_size"] != now["effective_batch_size"]:
        effective, per_step = saved["effective_batch_size"], plan.batch_size * plan.world_size
        if effective % per_step == 0:
            keep = f"--target_batch_size {effective} keeps it with --batch_size {plan.batch_size} on {plan.world_size} process(es)"
        else:
            keep = (f"{effective} is not a multiple of --batch_size {plan.batch_size} x {plan.world_size} process(es); "
                    f"pick a --batch_size that divides {effective} / {plan.world_size}")  # fmt: skip
        raise UserError(
            f"--resume: {path} was trained with {describe_layout(saved)}; this run has {describe_layout(now)}: keep the "
            f"effective batch ({keep}; name the checkpoint with --resume PATH if the run name changes)"
        )


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """A seed of its own for every process (dropout masks must not repeat across processes)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])
