"""The training loop, top to bottom: epochs -> micro-batches -> windows -> optimizer updates.

One loop serves every data format (``model(*batch.inputs())``) and any number of processes:
``exp/accumulation.py`` says what each micro-batch loss is divided by and when the optimizer
updates; the runtime keeps every backward local (``no_sync``), all-reduces a window's
gradients once, after its last micro-batch, and makes every decision the same on all
processes. On one process the runtime does nothing.

After every micro-batch the processes agree, in one small collective, on a stop signal and on
whether any of them ran out of memory: then all of them redo the window with smaller
micro-batches (``Exp._shrink_micro_batch``), keeping the effective batch.

Training can stop at any micro-batch (Ctrl-C, SIGTERM on any process, ``--save_every_updates``)
and resume from ``last.pt``: the checkpoint holds each process's partial gradients of the open
window, the policy's position, the RNG states and the epoch's running statistics.
"""

from __future__ import annotations

import contextlib
import time

import torch

from exp.accumulation import MicroStep
from exp.grad_noise import GradNoiseScale
from exp.state import OpenWindow, accuracy, mean_loss
from utils.progress import EpochProgress
from utils.signals import Interrupted, StopRequest


class TrainingAborted(Exception):
    """Training cannot go on (the loss stayed non-finite); exit code 3."""

    exit_code = 3


class MicroBatchOutOfMemory(Exception):
    """A micro-batch's forward or backward ran out of memory; ``step`` is where, ``rank`` the
    process that did (with several, the highest)."""

    def __init__(self, step: MicroStep, error: BaseException | None, rank: int):
        error = error or torch.OutOfMemoryError(f"process {rank} ran out of memory")
        super().__init__(str(error))
        self.step, self.error, self.rank = step, error, rank


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS raise OutOfMemoryError; the CPU allocator a RuntimeError that says so."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (type(exc) is RuntimeError and "can't allocate memory" in str(exc))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in ``dtype`` (--use_amp), or nothing."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class Trainer:
    def __init__(self, *, args, plan, runtime, model, criterion, optimizer, scheduler, scheduler_per_update, scaler, amp_dtype,
                 policy, train_loader, state, checkpoints, validate, ckpt_dir, write_history, shrink=None):  # fmt: skip
        self.args, self.plan, self.runtime = args, plan, runtime
        self.model = model  # DDP-wrapped with several processes
        self.criterion, self.optimizer, self.scaler, self.amp_dtype = criterion, optimizer, scaler, amp_dtype
        self.scheduler, self.scheduler_per_update = scheduler, scheduler_per_update
        self.policy, self.train_loader, self.state, self.checkpoints = policy, train_loader, state, checkpoints
        self.validate = validate  # () -> validation report, the same on every process
        self.ckpt_dir, self.write_history = ckpt_dir, write_history
        # (the MicroStep that ran out of memory) -> None: smaller micro-batches, the same windows; raises when it cannot
        self.shrink = shrink
        self.noise = GradNoiseScale() if args.log_grad_noise else None  # --log_grad_noise
        self.device = state.device
        self.stop = StopRequest()
        self.save_due = False
        self.last_window = 0
        self.window = OpenWindow()
        self._window_start = None  # (random state, buffers) when the open window began here
        self._run_clock: float | None = None
        self._epoch_clock: float | None = None

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------ the loop
    def fit(self) -> None:
        self._run_clock = time.time() - self.state.train_seconds
        with self.stop:
            while not self.state.finished:
                self.run_epoch()
        self.state.train_seconds = self._elapsed()
        if self.noise is not None:
            print(self.noise.recommendation(self.plan.batch_size), flush=True)

    def run_epoch(self) -> None:
        a, s, epoch = self.args, self.state, self.state.epoch
        self.train_epoch(epoch)
        totals = self.runtime.sum(s.meter.totals())  # the epoch over every process's share
        val = self.validate()
        # Lower is better for early stopping and best.pt: the loss, or minus the macro-F1.
        early_stopping = self.state.components["early_stopping"]
        improved = early_stopping.step(val["loss"] if a.monitor == "loss" else -val["macro_f1"], epoch)
        if self.scheduler is not None and not self.scheduler_per_update:
            self.scheduler.step(val["loss"])
        stopping_early = early_stopping.should_stop and epoch + 1 < a.train_epochs
        s.finished = stopping_early or epoch + 1 == a.train_epochs
        if s.finished:
            self._close_last_window()
        row = {
            "epoch": epoch + 1,
            "train_loss": mean_loss(totals),
            "train_acc": accuracy(totals),
            "val_loss": val["loss"],
            "val_acc": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": self.lr(),
            "updates": s.meter.updates,
            "total_updates": s.updates,
            "micro_batches": s.meter.micro_batches,
            "batch_size": self.plan.batch_size,
            "effective_batch_size": self.plan.effective_batch_size,
            "accumulation_steps": self.plan.steps,
            "processes": self.plan.world_size,
            "seconds": self._epoch_seconds(),
        }
        if self.noise is not None:
            row["grad_noise_scale"] = self.noise.b_simple
        s.history.append(row)
        s.new_epoch(epoch + 1)
        self._epoch_clock = None
        s.train_seconds = self._elapsed()
        if improved:  # best.pt first: a crash in between never leaves last.pt pointing at a newer best
            self.checkpoints.save(self.ckpt_dir / "best.pt")
        self.checkpoints.save(self.ckpt_dir / "last.pt")
        self.write_history(s.history)
        print(self._epoch_line(row, improved), flush=True)
        if stopping_early:
            print(f"Early stopping: validation loss did not improve for {a.patience} epochs", flush=True)
        signum = self._agreed_stop()
        if signum:
            raise Interrupted(signum, str(self.ckpt_dir / "last.pt"))

    def train_epoch(self, epoch: int) -> None:
        """Train the micro-batches of ``epoch`` not done yet (all of them unless resuming). Out of
        memory in a micro-batch: the window is redone from its start with smaller micro-batches."""
        while True:
            try:
                return self._train_epoch(epoch)
            except MicroBatchOutOfMemory as oom:
                if self.shrink is None:
                    raise oom.error from None
                failed, rank = oom.step, oom.rank  # out of the except block first: its traceback holds the failed step's tensors
            self._forget_window(failed)
            self.shrink(failed, rank)

    def _forget_window(self, step: MicroStep) -> None:
        """Drop what the open window left (its gradients may be partial: the backward stopped
        midway) so that it can run again from its first micro-batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self._window_start is not None:  # dropout draws and BatchNorm statistics as the window found them
            rng, cuda_rng, buffers = self._window_start
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
        self.window = OpenWindow()
        self.state.window_bad = None
        if self.noise is not None:
            self.noise.forget_window()
        self.state.meter.seconds = self._epoch_seconds()

    def _train_epoch(self, epoch: int) -> None:
        a, s = self.args, self.state
        if epoch != s.epoch:  # a new epoch (run_epoch moves on itself; direct callers may not)
            s.new_epoch(epoch)
            self._epoch_clock = None
        sampler = self.train_loader.sampler
        done, batches = s.meter.micro_batches, sampler.batches_per_epoch
        expected = (epoch, done) if done < batches else (epoch + 1, 0)  # the policy is at the next micro-batch
        if (self.policy.epoch, self.policy.batch) != expected:  # a bug, never a user mistake
            raise RuntimeError(f"accumulation policy at {(self.policy.epoch, self.policy.batch)}, loop expects {expected}")
        self.model.train()
        self.criterion.set_epoch(epoch, a.train_epochs)
        sampler.set_epoch(epoch, skip=done)
        self._epoch_clock = time.time() - s.meter.seconds
        desc = f"Epoch {epoch + 1}/{a.train_epochs} [GA:{self.plan.steps}]"
        progress = EpochProgress(batches, desc, a.progress, initial=done)
        try:
            for batch in self.train_loader:
                step = self.policy.next()
                signum = self._micro_step(batch.to(self.device, non_blocking=True), step)
                s.meter.micro_batches += 1
                progress.update(lambda step=step: self._postfix(step))
                if self.save_due or signum:
                    self.save_due = False
                    self._save_last()
                    if signum:
                        raise Interrupted(signum, str(self.ckpt_dir / "last.pt"))
        finally:
            progress.close()
        if self.policy.pending:  # a window open across the epoch end: this epoch's part counts in this epoch
            self._settle_window()
        if self.policy.pending and not a.cross_epoch_accumulation:
            raise RuntimeError("accumulation window left open at the end of an epoch")  # cannot happen: policy bug

    def _micro_step(self, batch, step: MicroStep) -> int:
        """Forward and backward of one micro-batch, then the update if it ends its window.
        Returns the stop signal that some process received (0: none)."""
        s, rt = self.state, self.runtime
        if step.position == 0:
            self._window_start = self._random_state_and_buffers()
        out_of_memory = None
        try:
            with rt.local_backward(self.model):
                self._forward_backward(batch, step)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            out_of_memory = exc
        # One small collective: every process learns of a stop signal or an out-of-memory anywhere.
        signum, short_of_memory = rt.agree(self.stop.signum or 0, (rt.rank + 1) * (out_of_memory is not None))
        if short_of_memory:
            raise MicroBatchOutOfMemory(step, out_of_memory, short_of_memory - 1)
        if step.is_update:
            self.last_window = step.window_length
            rt.average_gradients(self.model.parameters())
            self._settle_window()
            if s.window_bad is None:
                self._update()
            else:
                self._discard_window()
        return signum

    def _forward_backward(self, batch, step: MicroStep) -> None:
        s = self.state
        with self.autocast():
            logits = self.model(*batch.inputs())
            losses, weights = self.criterion(logits, batch.labels)
        total = losses.sum() if weights is None else (losses * weights).sum()
        # A process whose share of this micro-batch is empty runs a stand-in sample with weight 0.
        share = 0 if self.train_loader.sampler.placeholder(step.epoch, step.batch) else 1
        # The window's normaliser over all processes, not this micro-batch's size: summed over the
        # window (and over processes: average_gradients averages, hence x world size) this is exactly the
        # large-batch mean.
        self.scaler.scale(total * (share * self.plan.world_size / step.normaliser)).backward()
        if self.noise is not None:  # this micro-batch's own mean gradient: what the backward added, rescaled
            own = self.policy.weights(step.epoch)[step.batch]
            self.noise.after_backward(self._params_with_grads(), step.normaliser / own / self.scaler.get_scale(), batch.num_samples)
        # Whether the loss was finite is learnt at the update, once per window (no host sync per micro-batch):
        # a bad window is discarded whole, and the rest of it still runs, into gradients that are dropped,
        # so a bad window changes nothing else, not even the random stream of dropout.
        if share and s.window_bad is None:  # known bad (restored from a mid-window checkpoint): nothing to count
            correct = (logits.detach().argmax(-1) == batch.labels).sum()
            weight = None if weights is None else weights.detach().sum()
            self.window.add(total.detach(), correct, weight, self._stream_position(step), batch.num_samples)

    def _stream_position(self, step: MicroStep) -> int:
        return step.epoch * self.train_loader.sampler.batches_per_epoch + step.batch

    def _settle_window(self) -> None:
        """Learn (one sync, agreed by every process) whether a loss of the open window was non-finite,
        and count its micro-batches before the first such loss into the epoch's statistics."""
        first_bad = self.window.settle(self.runtime, self.state.meter)
        if first_bad is not None and self.state.window_bad is None:
            epoch, batch = divmod(first_bad, self.train_loader.sampler.batches_per_epoch)
            self.state.window_bad = f"non-finite loss in epoch {epoch + 1}, micro-batch {batch + 1}"

    def _update(self, correction: float = 1.0) -> None:
        """One optimizer update per window: unscale -> (correct) -> clip -> step -> scaler update
        -> zero grads -> per-update scheduler. The gradients are the same on every process here
        (all-reduced), so every decision below is too. Weights never see a non-finite gradient."""
        s = self.state
        self.scaler.unscale_(self.optimizer)
        params = self._params_with_grads()
        grads = [p.grad for p in params]
        if self.noise is not None and correction == 1.0:
            self.noise.at_update(params)
        if correction != 1.0:
            torch._foreach_mul_(grads, correction)
        norm = torch.nn.utils.get_total_norm(grads)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            s.window_bad = "non-finite gradient"
            self._discard_window()
            return
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.args.max_grad_norm, norm)
        scale_before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skipped by the scaler when it found inf/nan
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
            s.skipped_updates += 1  # no update happened: neither the counter nor the LR moves
            return
        s.updates += 1
        s.meter.updates += 1
        s.consecutive_bad_windows = 0
        if self.scheduler is not None and self.scheduler_per_update:
            self.scheduler.step()
        if self.args.save_every_updates and s.updates % self.args.save_every_updates == 0:
            self.save_due = True

    def _random_state_and_buffers(self) -> tuple:
        """What a window that runs out of memory must give back before it is redone: the random
        state (dropout) and the buffers (BatchNorm running statistics). Models without buffers
        cost one 5 KB copy per window."""
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda_rng, [b.clone() for b in self.model.buffers()]

    def _params_with_grads(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.grad is not None]

    def _discard_window(self) -> None:
        s = self.state
        self.optimizer.zero_grad(set_to_none=True)
        if self.noise is not None:
            self.noise.forget_window()
        reason, s.window_bad = s.window_bad, None
        s.bad_windows += 1
        s.consecutive_bad_windows += 1
        print(f"warning: {reason}: accumulation window discarded, weights unchanged ({s.bad_windows} so far)", flush=True)
        if s.consecutive_bad_windows >= self.args.max_bad_windows:
            raise TrainingAborted(
                f"training stopped: {s.consecutive_bad_windows} consecutive accumulation windows had a non-finite loss or "
                f"gradient (last: {reason}); lower --learning_rate, check the data, or raise --max_bad_windows"
            )

    def _close_last_window(self) -> None:
        """End of training: a window still open (early stopping inside a cross-epoch window)
        is applied, scaled to the samples it really saw, or discarded if it went bad."""
        if self.policy.pending:  # train_epoch settled its figures at the epoch's end
            seen, correction = self.policy.position, self.policy.cut()
            if self.state.window_bad is not None:
                self._discard_window()
            else:
                self.runtime.average_gradients(self.model.parameters())  # its last micro-batch never came
                self._update(correction)
                print(f"Flushed the open accumulation window ({seen} micro-batches), scaled to its own samples", flush=True)
        elif self.args.cross_epoch_accumulation and 0 < self.last_window < self.plan.steps:
            print(f"Final accumulation window: {self.last_window} of {self.plan.steps} micro-batches, scaled to its own samples",
                  flush=True)  # fmt: skip

    # -------------------------------------------------------------- helpers
    def _agreed_stop(self) -> int:
        """The signal any process received (0 if none): all stop at the same point."""
        (signum,) = self.runtime.agree(self.stop.signum or 0)
        return signum

    def _save_last(self) -> None:
        if self.policy.pending:  # the checkpoint records whether the open window already went bad
            self._settle_window()
        self.state.train_seconds = self._elapsed()
        self.state.meter.seconds = self._epoch_seconds()
        self.checkpoints.save(self.ckpt_dir / "last.pt")

    def _elapsed(self) -> float:
        """Seconds of training so far, earlier processes of a resumed run included."""
        return time.time() - self._run_clock if self._run_clock is not None else self.state.train_seconds

    def _epoch_seconds(self) -> float:
        return time.time() - self._epoch_clock if self._epoch_clock is not None else self.state.meter.seconds

    def _postfix(self, step: MicroStep) -> str:
        """Mean per-sample loss and accuracy so far (the writer's share), the place inside the
        window, updates done."""
        m = self.state.meter
        return f"Loss={m.mean_loss():.4f}, Acc={m.accuracy():.2%}, GA={step.position + 1}/{step.window_length}, Upd={self.state.updates}"

    def _epoch_line(self, row: dict, improved: bool) -> str:
        return (
            f"Epoch {row['epoch']}/{self.args.train_epochs} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} macro-F1 {row['val_macro_f1']:.4f}"
            f" | lr {row['lr']:.2e} | updates {row['updates']} (total {row['total_updates']})"
            + (f" | B_simple {row['grad_noise_scale']:.0f}" if row.get("grad_noise_scale") is not None else "")
            + f" | {row['seconds']:.1f}s{' *best' if improved else ''}"
        )
