"""Exp: builds data, model, loss, optimizer and scheduler; ``train()``, ``vali()``, ``test()``.

One train loop serves every data format: a batch object gives ``model(*batch.inputs())``,
the loss gives per-sample values, and ``exp/accumulation.py`` says what each micro-batch is
divided by and when the optimizer updates. The loop never branches on the format.
"""

from __future__ import annotations

import contextlib
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
from utils.outputs import append_summary, ensure_dir, write_history, write_json
from utils.progress import EpochProgress

EVAL_BATCH_SIZE = 256  # evaluation batch size changes no result, only speed and memory


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
    """Running training statistics kept on the device (no sync per micro-batch)."""

    def __init__(self, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.weight = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0

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
        return float(self.loss / self.weight) if self.samples else math.nan

    def accuracy(self) -> float:
        return float(self.correct) / self.samples if self.samples else math.nan


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
        self.train_loader = make_loader(self.data.train, args.batch_size, True, args.seed, args.num_workers, pin)
        self.val_loader = make_loader(self.data.val, EVAL_BATCH_SIZE, False, args.seed, args.num_workers, pin)
        self.test_loader = make_loader(self.data.test, EVAL_BATCH_SIZE, False, args.seed, args.num_workers, pin)

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
        self.scheduler = None
        if args.lr_scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=args.lr_factor, patience=args.lr_patience
            )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.early_stopping = EarlyStopping(args.patience)
        self.history: list[dict] = []
        self.updates = 0
        self.skipped_updates = 0

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
        return "\n".join(
            [
                self.data.summary(),
                f"Model {a.model}: {params:,} parameters, --norm {a.norm}, --dropout {a.dropout}, "
                f"device {self.device}, {self.dtype}" + (f", AMP {self.amp_dtype}" if self.amp_dtype else ""),
                f"Loss preset {p.name}: {p.summary} [{p.parameters()}], {weights}",
                f"Optimizer {a.optimizer} lr {a.learning_rate:g}, scheduler {a.lr_scheduler}, "
                f"clip {a.max_grad_norm if a.max_grad_norm > 0 else 'off'}, early stopping patience {a.patience}",
                f"Accumulation ({self.steps_mode}): {self.policy.describe(a.batch_size)}",
            ]
        )

    # ------------------------------------------------------------ train loop
    def train(self, setting: str) -> dict:
        a = self.args
        ckpt_dir = ensure_dir(Path(a.checkpoints) / setting, "--checkpoints")
        results_dir = ensure_dir(Path(a.results) / setting, "--results")
        print(self.describe(), flush=True)
        started = time.time()
        for epoch in range(a.train_epochs):
            epoch_started = time.time()
            updates_before = self.updates
            train_loss, train_acc, micro_batches = self.train_epoch(epoch)
            val = self.vali(self.val_loader)
            improved = self.early_stopping.step(val["loss"], epoch)
            if self.scheduler is not None:
                self.scheduler.step(val["loss"])
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val["loss"],
                "val_acc": val["accuracy"],
                "val_macro_f1": val["macro_f1"],
                "lr": self.lr(),
                "updates": self.updates - updates_before,
                "total_updates": self.updates,
                "micro_batches": micro_batches,
                "effective_batch_size": a.batch_size * self.steps,
                "accumulation_steps": self.steps,
                "seconds": time.time() - epoch_started,
            }
            self.history.append(row)
            self._save(ckpt_dir / "last.pt", epoch + 1)
            if improved:
                self._save(ckpt_dir / "best.pt", epoch + 1)
            write_history(results_dir / "history.csv", self.history)
            print(self._epoch_line(row, improved), flush=True)
            if self.early_stopping.should_stop and epoch + 1 < a.train_epochs:
                print(f"Early stopping: validation loss did not improve for {a.patience} epochs", flush=True)
                break
        if self.policy.pending:  # training stopped inside a window that crosses epochs
            seen = self.policy.position
            self._update(self.policy.cut())
            print(f"Flushed the open accumulation window ({seen} micro-batches) with its own sample count", flush=True)
            self._save(ckpt_dir / "last.pt", len(self.history))
        self.wall_time = time.time() - started
        from utils.plots import plot_training_curves

        plot_training_curves(self.history, results_dir / "training_curves.png")
        return {"epochs": len(self.history), "updates": self.updates, "seconds": self.wall_time}

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        a = self.args
        self.model.train()
        self.criterion.set_epoch(epoch, a.train_epochs)
        self.train_loader.sampler.set_epoch(epoch)
        meter = EpochMeter(self.device)
        progress = EpochProgress(len(self.train_loader), f"Epoch {epoch + 1}/{a.train_epochs} [GA:{self.steps}]", a.progress)
        micro_batches = 0
        for batch in self.train_loader:
            step = self.policy.next()
            self._micro_step(batch.to(self.device, non_blocking=True), step, meter)
            micro_batches += 1
            progress.update(lambda step=step: self._postfix(meter, step))
        progress.close()
        return meter.mean_loss(), meter.accuracy(), micro_batches

    @staticmethod
    def _postfix(meter: EpochMeter, step: MicroStep) -> str:
        """Mean per-sample loss and accuracy so far, and the place inside the window."""
        return f"Loss={meter.mean_loss():.4f}, Acc={meter.accuracy():.2%}, GA={step.position + 1}/{step.window_length}"

    def _micro_step(self, batch, step: MicroStep, meter: EpochMeter) -> None:
        with self.autocast():
            logits = self.model(*batch.inputs())
            losses, weights = self.criterion(logits, batch.labels)
        total = losses.sum() if weights is None else (losses * weights).sum()
        # The window's normaliser, not this micro-batch's size: the window sums to the large-batch mean.
        self.scaler.scale(total / step.normaliser).backward()
        meter.add(losses, weights, logits, batch.labels)
        if step.is_update:
            self._update()

    def _update(self, correction: float = 1.0) -> None:
        """One optimizer update per window: unscale -> (correct) -> clip -> step -> zero."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if correction != 1.0:
            for p in params:
                p.grad.mul_(correction)
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
        scale_before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
            self.skipped_updates += 1  # inf/nan gradients: GradScaler skipped the step
        else:
            self.updates += 1

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
            if not self.history:  # evaluation only (--is_training 0): report what training did
                if state.get("data_source") != self.data.source:
                    print(
                        f"note: {ckpt_path} was trained on {state.get('data_source')}; testing on {self.data.source}", flush=True
                    )
                self.history, self.updates = state["history"], state["updates"]
                self.skipped_updates = state["skipped_updates"]
                self.early_stopping.load_state_dict(state["early_stopping"])
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
            "per_class": {
                name: {k: report[k][i] for k in ("precision", "recall", "f1", "support")} for i, name in enumerate(names)
            },
            "confusion_matrix": report["confusion_matrix"],
            "class_names": names,
            "batch_size": a.batch_size,
            "accumulation_steps": self.steps,
            "accumulation_mode": self.steps_mode,
            "effective_batch_size": a.batch_size * self.steps,
            "cross_epoch_accumulation": a.cross_epoch_accumulation,
            "optimizer_updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "epochs_run": len(self.history),
            "best_epoch": self.early_stopping.best_epoch + 1,
            "best_val_loss": self.early_stopping.best,
            "wall_time_s": getattr(self, "wall_time", 0.0),
            "seed": a.seed,
            "loss_preset": a.loss_preset,
            "learning_rate": a.learning_rate,
        }
        write_json(results_dir / "metrics.json", metrics)
        np.savetxt(
            results_dir / "predictions.csv",
            np.stack([y_true, y_pred], 1),
            fmt="%d",
            delimiter=",",
            header="true,pred",
            comments="",
        )
        from utils.plots import plot_confusion_matrix

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
    def _save(self, path: Path, epochs_done: int) -> None:
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "epoch": epochs_done,
                "updates": self.updates,
                "skipped_updates": self.skipped_updates,
                "accumulation": self.policy.state_dict(),
                "early_stopping": self.early_stopping.state_dict(),
                "history": self.history,
                "class_names": list(self.data.class_names),
                "channels": list(self.data.channels),
                "data_source": self.data.source,
                "args": dict(vars(self.args)),
            },
            path,
        )

    def load(self, path: Path) -> dict:
        state = load_checkpoint(path, map_location=self.device)
        saved = state.get("args", {})
        if saved.get("model") != self.args.model:
            raise UserError(f"checkpoint {path} holds a {saved.get('model')} model, not {self.args.model}")
        if state.get("class_names") != list(self.data.class_names):
            raise UserError(
                f"checkpoint {path} was trained on other classes "
                f"({len(state.get('class_names') or [])} vs {self.data.num_classes} here)"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise UserError(f"checkpoint {path} does not fit this model (different --d_model, --e_layers or sensors?)") from None
        return state


SUMMARY_COLUMNS = (
    "run", "model", "data", "batch_size", "accumulation_steps", "effective_batch_size", "learning_rate",
    "loss_preset", "seed", "epochs_run", "optimizer_updates", "best_val_loss", "test_accuracy", "test_macro_f1", "wall_time_s",
)  # fmt: skip
