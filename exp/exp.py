"""Exp: builds data, model, loss, optimizer and scheduler; ``train()``, ``vali()``, ``test()``.

One train loop serves every data format: a batch object gives ``model(*batch.inputs())``,
the loss gives per-sample values, and ``exp/accumulation.py`` says what each micro-batch is
divided by and when the optimizer updates. The loop never branches on the format.

Training can stop at any micro-batch (Ctrl-C, SIGTERM, ``--save_every_updates``) and resume
from ``last.pt`` to the same bits on CPU: the checkpoint holds the partial gradients of the
open accumulation window, the policy's position, the RNG states and the epoch's running
statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_provider.data_factory import DataBundle, build_data, make_loader
from exp.accumulation import AccumulationPolicy, MicroStep, resolve_steps
from models import InputDims, build_model
from utils.checkpoint import atomic_save, load_checkpoint
from utils.early_stopping import EarlyStopping
from utils.errors import UserError
from utils.losses import build_loss, fault_family
from utils.metrics import classification_report
from utils.outputs import append_summary, ensure_dir, write_history, write_json, writing
from utils.progress import EpochProgress
from utils.rng import capture_rng, restore_rng
from utils.schedulers import build_scheduler
from utils.signals import Interrupted, StopRequest

EVAL_BATCH_SIZE = 256  # evaluation batch size changes no result, only speed and memory

# Flags that shape the stream of micro-batches, the model or the loss: a resumed run must match.
RESUME_MUST_MATCH = (
    "model", "data", "root_path", "data_path", "time_col", "label_col", "feature_cols", "step", "stride", "train_stride", "split_block",
    "sim_days", "sim_seed", "batch_size", "seed", "train_epochs", "loss_preset", "class_weights", "optimizer",
    "learning_rate", "weight_decay", "lr_scheduler", "lr_factor", "lr_patience", "warmup_steps", "min_lr", "patience",
    "max_grad_norm", "use_amp", "amp_dtype", "dtype", "d_model", "n_heads", "e_layers", "patch_len", "dropout", "norm",
    "fusion", "gaf_size", "graph_threshold", "cross_epoch_accumulation", "monitor", "scale", "window_stats", "split", "missing",
    "fault_inventory", "no_temporal",
)  # fmt: skip
# What a resumable checkpoint must hold (older or foreign files are refused by name).
RESUME_KEYS = (
    "optimizer", "scheduler", "scaler", "epoch", "finished", "meter", "grads", "window_bad", "accumulation", "rng",
    "updates", "skipped_updates", "bad_windows", "consecutive_bad_windows", "train_seconds", "early_stopping", "history",
)  # fmt: skip


class TrainingAborted(Exception):
    """Training cannot go on (the loss stayed non-finite); exit code 3."""

    exit_code = 3


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available on this machine (use --device cpu)")
    return torch.device(name)


class EpochMeter:
    """Running statistics of the epoch in progress, kept on the device (no sync per micro-batch)."""

    def __init__(self, device):
        self.device = device
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.weight = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0
        self.micro_batches = 0  # done in this epoch, including skipped ones
        self.updates = 0
        self.seconds = 0.0  # before the current process took over (resume)

    def add(self, losses, weights, logits, labels) -> None:
        losses = losses.detach().double()
        if weights is None:
            self.loss += losses.sum()
            self.weight += losses.numel()
        else:
            self.loss += (losses * weights.double()).sum()
            self.weight += weights.double().sum()
        self.correct += (logits.detach().argmax(-1) == labels).sum()
        self.samples += labels.numel()

    def mean_loss(self) -> float:
        """Mean per-sample loss (class-weighted mean when class weights are on)."""
        return float(self.loss / self.weight) if self.samples else math.nan

    def accuracy(self) -> float:
        return float(self.correct) / self.samples if self.samples else math.nan

    def state_dict(self) -> dict:
        return {
            "loss": float(self.loss), "weight": float(self.weight), "correct": int(self.correct), "samples": self.samples,
            "micro_batches": self.micro_batches, "updates": self.updates, "seconds": self.seconds,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.loss.fill_(state["loss"])
        self.weight.fill_(state["weight"])
        self.correct.fill_(state["correct"])
        self.samples, self.micro_batches, self.updates = state["samples"], state["micro_batches"], state["updates"]
        self.seconds = state["seconds"]


class Exp:
    def __init__(self, args, data: DataBundle | None = None):
        self.args = args
        self.device = resolve_device(args.device)
        self.dtype = torch.float64 if args.dtype == "float64" else torch.float32
        self.data = data if data is not None else build_data(args)
        dims = InputDims(len(self.data.channels), self.data.seq_len, self.data.num_classes)
        self.model = build_model(args.model, args, dims).to(device=self.device, dtype=self.dtype)
        self.criterion = build_loss(
            args.loss_preset,
            self.data.num_classes,
            self.data.train.labels,
            args.class_weights,
            [fault_family(name) for name in self.data.class_names],
        ).to(self.device)

        pin = self.device.type == "cuda"
        # Private generators: creating a loader iterator must not draw from the global RNG
        # (that would shift dropout masks between a run and its resumed copy).
        self.loader_generator = torch.Generator().manual_seed(args.seed)
        self.train_loader = make_loader(self.data.train, args.batch_size, True, args.seed, args.num_workers, pin, self.loader_generator)
        self.val_loader, self.test_loader = (
            make_loader(split, EVAL_BATCH_SIZE, False, args.seed, args.num_workers, pin, torch.Generator().manual_seed(args.seed))
            for split in (self.data.val, self.data.test)
        )

        self.steps, self.steps_mode = resolve_steps(
            args.batch_size, args.gradient_accumulation_steps, args.enable_auto_gradient_accumulation
        )
        sampler, labels = self.train_loader.sampler, self.data.train.labels
        self.policy = AccumulationPolicy(
            self.steps,
            lambda epoch: [self.criterion.weight_total(labels[b]) for b in sampler.batches(epoch)],
            args.train_epochs,
            cross_epoch=args.cross_epoch_accumulation,
        )
        self.optimizer = self._build_optimizer()
        self.scheduler, self.scheduler_per_update = build_scheduler(args, self.optimizer, self.policy.planned_updates())
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.early_stopping = EarlyStopping(args.patience)

        # Training state (all of it goes into checkpoints).
        self.history: list[dict] = []
        self.epoch = 0  # epoch in progress
        self.meter = EpochMeter(self.device)
        self.finished = False
        self.updates = 0
        self.skipped_updates = 0  # AMP found inf/nan and skipped the step
        self.bad_windows = 0  # windows discarded for a non-finite loss or gradient
        self.consecutive_bad = 0
        self.window_bad: str | None = None  # why the open window will be discarded
        self.train_seconds = 0.0
        self.save_due = False
        self.stop = StopRequest()
        self.last_window = 0
        self._run_clock: float | None = None
        self._epoch_clock: float | None = None

    # ------------------------------------------------------------------ setup
    def _build_optimizer(self) -> torch.optim.Optimizer:
        a, params = self.args, self.model.parameters()
        if a.optimizer == "radam":
            return torch.optim.RAdam(params, lr=a.learning_rate, weight_decay=a.weight_decay, decoupled_weight_decay=True)
        if a.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=a.weight_decay)
        return torch.optim.SGD(params, lr=a.learning_rate, momentum=0.9, weight_decay=a.weight_decay)

    def _amp_dtype(self):
        if not self.args.use_amp:
            return None
        if self.device.type == "cpu" or self.args.amp_dtype == "bf16":
            return torch.bfloat16
        return torch.float16

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def describe(self) -> str:
        a, p = self.args, self.criterion.preset
        params = sum(t.numel() for t in self.model.parameters())
        weights = "balanced class weights" if self.criterion.class_weights_np is not None else "no class weights"
        schedule = a.lr_scheduler
        if a.lr_scheduler == "cosine":
            schedule += f" over {self.policy.planned_updates()} updates, {a.warmup_steps} warm-up"
        return "\n".join(
            [
                self.data.summary(),
                f"Model {a.model}: {params:,} parameters, --norm {a.norm}, --dropout {a.dropout}, "
                f"device {self.device}, {self.dtype}" + (f", AMP {self.amp_dtype}" if self.amp_dtype else ""),
                f"Loss preset {p.name}: {p.summary} [{p.parameters()}], {weights}",
                f"Optimizer {a.optimizer} lr {a.learning_rate:g}, scheduler {schedule}, "
                f"clip {a.max_grad_norm if a.max_grad_norm > 0 else 'off'}, early stopping patience {a.patience}",
                f"Accumulation ({self.steps_mode}): {self.policy.describe(a.batch_size)}",
            ]
        )

    # ------------------------------------------------------------ train loop
    def train(self, setting: str) -> dict:
        a = self.args
        self.ckpt_dir = ensure_dir(Path(a.checkpoints) / setting, "--checkpoints")
        self.results_dir = ensure_dir(Path(a.results) / setting, "--results")
        resumed_from = self._resume() if a.resume else None
        print(self.describe(), flush=True)
        if resumed_from:
            print(self._resume_line(resumed_from), flush=True)
        self._run_clock = time.time() - self.train_seconds
        with self.stop:
            while not self.finished:
                self._run_epoch()
        self.train_seconds = self._elapsed()
        from utils.plots import plot_training_curves

        if self.history:
            with writing(self.results_dir / "training_curves.png"):
                plot_training_curves(self.history, self.results_dir / "training_curves.png")
        return {"epochs": len(self.history), "updates": self.updates, "seconds": self.train_seconds}

    def _elapsed(self) -> float:
        """Seconds of training so far, earlier processes of a resumed run included."""
        return time.time() - self._run_clock if self._run_clock is not None else self.train_seconds

    def _epoch_seconds(self) -> float:
        return time.time() - self._epoch_clock if self._epoch_clock is not None else self.meter.seconds

    def _run_epoch(self) -> None:
        a, epoch = self.args, self.epoch
        self.train_epoch(epoch)
        val = self.vali(self.val_loader)
        # Lower is better for early stopping and best.pt: the loss, or minus the macro-F1.
        improved = self.early_stopping.step(val["loss"] if a.monitor == "loss" else -val["macro_f1"], epoch)
        if self.scheduler is not None and not self.scheduler_per_update:
            self.scheduler.step(val["loss"])
        stopping_early = self.early_stopping.should_stop and epoch + 1 < a.train_epochs
        self.finished = stopping_early or epoch + 1 == a.train_epochs
        if self.finished:
            self._close_last_window()
        row = {
            "epoch": epoch + 1,
            "train_loss": self.meter.mean_loss(),
            "train_acc": self.meter.accuracy(),
            "val_loss": val["loss"],
            "val_acc": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": self.lr(),
            "updates": self.meter.updates,
            "total_updates": self.updates,
            "micro_batches": self.meter.micro_batches,
            "effective_batch_size": a.batch_size * self.steps,
            "accumulation_steps": self.steps,
            "seconds": self._epoch_seconds(),
        }
        self.history.append(row)
        self.epoch, self.meter, self._epoch_clock = epoch + 1, EpochMeter(self.device), None
        self.train_seconds = self._elapsed()
        if improved:  # best.pt first: a crash in between never leaves last.pt pointing at a newer best
            self._save(self.ckpt_dir / "best.pt")
        self._save(self.ckpt_dir / "last.pt")
        write_history(self.results_dir / "history.csv", self.history)
        print(self._epoch_line(row, improved), flush=True)
        if stopping_early:
            print(f"Early stopping: validation loss did not improve for {a.patience} epochs", flush=True)
        if self.stop.requested:
            raise Interrupted(self.stop.signum, str(self.ckpt_dir / "last.pt"))

    def _close_last_window(self) -> None:
        """End of training: a window still open (early stopping inside a cross-epoch window)
        is applied, scaled to the samples it really saw, or discarded if it went bad."""
        if self.policy.pending:
            seen, correction = self.policy.position, self.policy.cut()
            if self.window_bad is not None:
                self._discard_window()
            else:
                self._update(correction)
                print(f"Flushed the open accumulation window ({seen} micro-batches), scaled to its own samples", flush=True)
        elif self.args.cross_epoch_accumulation and 0 < self.last_window < self.steps:
            print(f"Final accumulation window: {self.last_window} of {self.steps} micro-batches, scaled to its own samples", flush=True)

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """Train the micro-batches of ``epoch`` not done yet (all of them unless resuming)."""
        a = self.args
        if epoch != self.epoch:  # a new epoch (train() moves on itself; direct callers may not)
            self.epoch, self.meter, self._epoch_clock = epoch, EpochMeter(self.device), None
        done, batches = self.meter.micro_batches, self.train_loader.sampler.batches_per_epoch
        expected = (epoch, done) if done < batches else (epoch + 1, 0)  # the policy is at the next micro-batch
        if (self.policy.epoch, self.policy.batch) != expected:  # a bug, never a user mistake
            raise RuntimeError(f"accumulation policy at {(self.policy.epoch, self.policy.batch)}, loop expects {expected}")
        self.model.train()
        self.criterion.set_epoch(epoch, a.train_epochs)
        sampler = self.train_loader.sampler
        sampler.set_epoch(epoch, skip=self.meter.micro_batches)
        self._epoch_clock = time.time() - self.meter.seconds
        desc = f"Epoch {epoch + 1}/{a.train_epochs} [GA:{self.steps}]"
        progress = EpochProgress(sampler.batches_per_epoch, desc, a.progress, initial=self.meter.micro_batches)
        for batch in self.train_loader:
            step = self.policy.next()
            self._micro_step(batch.to(self.device, non_blocking=True), step)
            self.meter.micro_batches += 1
            progress.update(lambda step=step: self._postfix(step))
            if self.save_due or self.stop.requested:
                self.save_due = False
                self.train_seconds = self._elapsed()
                self._save(self.ckpt_dir / "last.pt")
                if self.stop.requested:
                    progress.close()
                    raise Interrupted(self.stop.signum, str(self.ckpt_dir / "last.pt"))
        progress.close()
        if self.policy.pending and not a.cross_epoch_accumulation:
            raise RuntimeError("accumulation window left open at the end of an epoch")  # cannot happen: policy bug
        return self.meter.mean_loss(), self.meter.accuracy(), self.meter.micro_batches

    def _postfix(self, step: MicroStep) -> str:
        """Mean per-sample loss and accuracy so far, the place inside the window, updates done."""
        m = self.meter
        return f"Loss={m.mean_loss():.4f}, Acc={m.accuracy():.2%}, GA={step.position + 1}/{step.window_length}, Upd={self.updates}"

    def _micro_step(self, batch, step: MicroStep) -> None:
        if self.window_bad is None:  # a window already known to be bad is not computed further
            with self.autocast():
                logits = self.model(*batch.inputs())
                losses, weights = self.criterion(logits, batch.labels)
            total = losses.sum() if weights is None else (losses * weights).sum()
            if torch.isfinite(total):
                # The window's normaliser, not this micro-batch's size: summed over the window
                # this is exactly the large-batch mean.
                self.scaler.scale(total / step.normaliser).backward()
                self.meter.add(losses, weights, logits, batch.labels)
            else:
                self.window_bad = f"non-finite loss in epoch {step.epoch + 1}, micro-batch {step.batch + 1}"
        if step.is_update:
            self.last_window = step.window_length
            if self.window_bad is None:
                self._update()
            else:
                self._discard_window()

    def _update(self, correction: float = 1.0) -> None:
        """One optimizer update per window: unscale -> (correct) -> clip -> step -> scaler update
        -> zero grads -> per-update scheduler. Weights never see a non-finite gradient."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grads = [p.grad for p in params]
        if correction != 1.0:
            torch._foreach_mul_(grads, correction)
        norm = torch.nn.utils.get_total_norm(grads)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            self.window_bad = "non-finite gradient"
            self._discard_window()
            return
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.args.max_grad_norm, norm)
        scale_before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skipped by the scaler when it found inf/nan
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
            self.skipped_updates += 1  # no update happened: neither the counter nor the LR moves
            return
        self.updates += 1
        self.meter.updates += 1
        self.consecutive_bad = 0
        if self.scheduler is not None and self.scheduler_per_update:
            self.scheduler.step()
        if self.args.save_every_updates and self.updates % self.args.save_every_updates == 0:
            self.save_due = True

    def _discard_window(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        reason, self.window_bad = self.window_bad, None
        self.bad_windows += 1
        self.consecutive_bad += 1
        print(f"warning: {reason}: accumulation window discarded, weights unchanged ({self.bad_windows} so far)", flush=True)
        if self.consecutive_bad >= self.args.max_bad_windows:
            raise TrainingAborted(
                f"training stopped: {self.consecutive_bad} consecutive accumulation windows had a non-finite loss or "
                f"gradient (last: {reason}); lower --learning_rate, check the data, or raise --max_bad_windows"
            )

    def _epoch_line(self, row: dict, improved: bool) -> str:
        return (
            f"Epoch {row['epoch']}/{self.args.train_epochs} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} macro-F1 {row['val_macro_f1']:.4f}"
            f" | lr {row['lr']:.2e} | updates {row['updates']} (total {row['total_updates']})"
            f" | {row['seconds']:.1f}s{' *best' if improved else ''}"
        )

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def vali(self, loader) -> dict:
        """Mean cross-entropy (a fixed yardstick, whatever the training loss preset), accuracy,
        macro-F1 and the predictions."""
        self.model.eval()
        loss_sum, preds, labels = 0.0, [], []
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.model(*batch.inputs())
            loss_sum += float(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
            preds.append(logits.argmax(-1).cpu())
            labels.append(batch.labels.cpu())
        y_pred, y_true = torch.cat(preds).numpy(), torch.cat(labels).numpy()
        report = classification_report(y_true, y_pred, self.data.num_classes)
        report["loss"] = loss_sum / max(len(y_true), 1)
        report["y_true"], report["y_pred"] = y_true, y_pred
        return report

    def test(self, setting: str, load_best: bool = True) -> dict:
        a = self.args
        ckpt_path = Path(a.checkpoints) / setting / "best.pt"
        if load_best and not ckpt_path.is_file():
            if not self.history:
                raise UserError(f"--is_training 0: no checkpoint {ckpt_path}; train this run first (same flags, --is_training 1)")
            print("warning: no best.pt was written (validation loss never finite); testing the last weights", flush=True)
            load_best = False
        if load_best:
            state = self.load(ckpt_path)
            if not self.history:  # evaluation only (--is_training 0): report what the whole training did
                self._restore_training_summary(state, ckpt_path.with_name("last.pt"))
        results_dir = ensure_dir(Path(a.results) / setting, "--results")
        report = self.vali(self.test_loader)
        y_true, y_pred = report.pop("y_true"), report.pop("y_pred")
        names = self.data.class_names
        metrics = {
            "run": setting,
            "model": a.model,
            "data": a.data,
            "source": self.data.source,
            "checkpoint": str(ckpt_path) if load_best else None,
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_f1"],
            "test_loss": report["loss"],
            "test_samples": int(len(y_true)),
            "per_class": {name: {k: report[k][i] for k in ("precision", "recall", "f1", "support")} for i, name in enumerate(names)},
            "confusion_matrix": report["confusion_matrix"],
            "class_names": names,
            "batch_size": a.batch_size,
            "accumulation_steps": self.steps,
            "accumulation_mode": self.steps_mode,
            "effective_batch_size": a.batch_size * self.steps,
            "cross_epoch_accumulation": a.cross_epoch_accumulation,
            "optimizer_updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "discarded_windows": self.bad_windows,
            "epochs_run": len(self.history),
            "best_epoch": self.early_stopping.best_epoch + 1,
            "monitor": a.monitor,
            "best_val": abs(self.early_stopping.best),  # validation loss, or macro-F1, of the best epoch
            "wall_time_s": self.train_seconds,
            "seed": a.seed,
            "loss_preset": a.loss_preset,
            "learning_rate": a.learning_rate,
        }
        write_json(results_dir / "metrics.json", metrics)
        np.savetxt(results_dir / "predictions.csv", np.stack([y_true, y_pred], 1), fmt="%d", delimiter=",", header="true,pred", comments="")
        from utils.plots import plot_confusion_matrix

        with writing(results_dir / "confusion_matrix.png"):
            plot_confusion_matrix(
                report["confusion_matrix"], names, results_dir / "confusion_matrix.png",
                f"{a.model} on {a.data}: accuracy {report['accuracy']:.2%}, macro-F1 {report['macro_f1']:.3f}",
            )  # fmt: skip
        append_summary(Path(a.results) / "summary.csv", {k: metrics[k] for k in SUMMARY_COLUMNS})
        print(
            f"Test: accuracy {report['accuracy']:.2%} | macro-F1 {report['macro_f1']:.4f} | loss {report['loss']:.4f}"
            f" | {len(y_true)} windows -> {results_dir}",
            flush=True,
        )
        return metrics

    # ----------------------------------------------------------- checkpoints
    def data_fingerprint(self) -> str:
        """Hash of the scaled values, the windows of every split and the channel names."""
        digest = hashlib.sha1(self.data.train.values.cpu().numpy().tobytes())
        for split in (self.data.train, self.data.val, self.data.test):
            digest.update(np.ascontiguousarray(split.starts).tobytes())
            digest.update(np.ascontiguousarray(split.labels).tobytes())
        digest.update(",".join(self.data.channels).encode())
        return digest.hexdigest()

    def _save(self, path: Path) -> None:
        grads = [None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()]
        with writing(path):
            self._write_checkpoint(path, grads)

    def _write_checkpoint(self, path: Path, grads: list) -> None:
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,  # epoch in progress (= epochs completed when at an epoch boundary)
                "finished": self.finished,
                "meter": {**self.meter.state_dict(), "seconds": self._epoch_seconds()},
                "grads": grads if any(g is not None for g in grads) else None,
                "window_bad": self.window_bad,
                "accumulation": self.policy.state_dict(),
                "rng": capture_rng(self.loader_generator, cuda=self.device.type == "cuda"),
                "updates": self.updates,
                "skipped_updates": self.skipped_updates,
                "bad_windows": self.bad_windows,
                "consecutive_bad_windows": self.consecutive_bad,
                "train_seconds": self.train_seconds,
                "early_stopping": self.early_stopping.state_dict(),
                "history": self.history,
                "class_names": list(self.data.class_names),
                "channels": list(self.data.channels),
                "data_source": self.data.source,
                "data_fingerprint": self.data_fingerprint(),
                "args": dict(vars(self.args)),
            },
            path,
        )

    def load(self, path: Path) -> dict:
        """Load the model weights of a checkpoint after checking it belongs to this model and data."""
        state = load_checkpoint(path)  # on the CPU: RNG states must stay there; weights are copied over
        saved = state.get("args", {})
        if saved.get("model") != self.args.model:
            raise UserError(f"checkpoint {path} holds a {saved.get('model')} model, not {self.args.model}")
        if state.get("class_names") != list(self.data.class_names):
            raise UserError(
                f"checkpoint {path} was trained on other classes ({len(state.get('class_names') or [])} vs {self.data.num_classes} here)"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            hint = "different --d_model, --e_layers, --window_stats, --no_temporal or sensors?"
            raise UserError(f"checkpoint {path} does not fit this model ({hint})") from None
        return state

    def _resume(self) -> Path | None:
        """Restore the whole training state from ``--resume auto|PATH``."""
        a = self.args
        path = self.ckpt_dir / "last.pt" if a.resume == "auto" else Path(a.resume)
        if not path.is_file():
            if a.resume == "auto":
                print(f"--resume auto: no checkpoint at {path} yet, starting from scratch", flush=True)
                return None
            raise UserError(f"--resume: checkpoint {path} does not exist")
        state = self.load(path)
        missing = [key for key in RESUME_KEYS if key not in state]
        if missing:
            raise UserError(f"--resume: {path} lacks {', '.join(missing)}: it is not a resumable checkpoint of this version")
        saved = state["args"]
        for flag in RESUME_MUST_MATCH:
            if flag not in saved:
                raise UserError(f"--resume: {path} was written by an older version without --{flag}; start a new run")
            if saved.get(flag) != getattr(a, flag):
                raise UserError(f"--resume: {path} was written with --{flag} {saved.get(flag)}, this run has --{flag} {getattr(a, flag)}")
        if state.get("data_fingerprint") != self.data_fingerprint():
            raise UserError(f"--resume: {path} was trained on other windows than this run's data ({self.data.source})")
        try:
            self.policy.load_state_dict(state["accumulation"])
        except ValueError as exc:
            raise UserError(f"--resume: {path}: {exc} (--gradient_accumulation_steps / --cross_epoch_accumulation)") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history, self.epoch, self.finished = state["history"], state["epoch"], state["finished"]
        self.updates, self.skipped_updates = state["updates"], state["skipped_updates"]
        self.bad_windows, self.consecutive_bad = state["bad_windows"], state["consecutive_bad_windows"]
        self.window_bad, self.train_seconds = state["window_bad"], state["train_seconds"]
        self.meter.load_state_dict(state["meter"])
        if state["grads"] is not None:
            for p, g in zip(self.model.parameters(), state["grads"]):
                p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype)
        restore_rng(state["rng"], self.loader_generator)
        return path

    def _restore_training_summary(self, best: dict, last_path: Path) -> None:
        """Epochs, updates and time come from last.pt (the whole run); the best epoch from best.pt."""
        if best.get("data_source") != self.data.source:
            print(f"note: the checkpoint was trained on {best.get('data_source')}; testing on {self.data.source}", flush=True)
        summary = best
        if last_path.is_file():
            try:
                summary = load_checkpoint(last_path)
            except UserError as exc:
                print(f"note: {exc}; the training summary comes from best.pt", flush=True)
        self.history = summary.get("history", [])
        self.updates = summary.get("updates", 0)
        self.skipped_updates = summary.get("skipped_updates", 0)
        self.bad_windows = summary.get("bad_windows", 0)
        self.train_seconds = summary.get("train_seconds", 0.0)
        if "early_stopping" in best:
            self.early_stopping.load_state_dict(best["early_stopping"])

    def _resume_line(self, path: Path) -> str:
        if self.finished:
            return f"Resumed from {path}: training had already finished after {len(self.history)} epochs"
        window = f", inside an accumulation window ({self.policy.position}/{self.policy.length})" if self.policy.pending else ""
        return (
            f"Resumed from {path}: epoch {self.epoch + 1}, micro-batch {self.meter.micro_batches} done"
            f"{window}, {self.updates} optimizer updates so far"
        )


SUMMARY_COLUMNS = (
    "run", "model", "data", "batch_size", "accumulation_steps", "effective_batch_size", "learning_rate",
    "loss_preset", "seed", "epochs_run", "optimizer_updates", "monitor", "best_val", "test_accuracy", "test_macro_f1", "wall_time_s",
)  # fmt: skip
