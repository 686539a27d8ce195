"""Exp: builds the parts of one run and runs ``train()`` and ``test()``.

Set-up only: data, model (wrapped in DDP under torchrun), loss, loaders, accumulation policy,
optimizer, scheduler, GradScaler, the training state and its checkpoints. The loop lives in
``exp/trainer.py``, the state in ``exp/state.py``, evaluation and reports in
``exp/evaluation.py``, and everything about processes in ``exp/runtime.py``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import torch

from config.defaults import EVAL_BATCH_SIZE, auto_epochs
from config.flags import flags_with_role
from config.registry import LAYOUT, RECIPE
from data_provider.csv_source import check_interval, sampling_interval
from data_provider.data_factory import DataBundle, ResidentLoader, build_data, make_eval_loader, make_loader
from exp.accumulation import AccumulationPlan, AccumulationPolicy, plan_accumulation, shrunk, smaller_micro_batch
from exp.evaluation import evaluate, format_unit_figures, unit_figures, write_test_outputs, write_training_curves
from exp.inference import deployment_record, prediction_table
from exp.micro_batch import MicroBatchSizer, sized_plan
from exp.runtime import SingleProcess
from exp.smoke import BatchLimits
from exp.state import Checkpoints, TrainingState, check_model, check_resumable, describe_layout, layout_of, rank_seed, recipe_differences
from exp.trainer import Trainer, TrainingAborted, autocast
from models import InputDims, build_model
from utils.early_stopping import EarlyStopping
from utils.errors import UserError
from utils.fdd import diagnosis_fields, find_normal_class, format_report
from utils.losses import build_loss, fault_family
from utils.outputs import check_creatable, ensure_dir, write_history, write_json, writing
from utils.provenance import now, run_record
from utils.schedulers import build_scheduler
from utils.tracking import NullTracker, start_tracker

__all__ = ["Exp", "TrainingAborted"]


def compiled(model: torch.nn.Module, mode: str, device: torch.device, accumulates: bool) -> torch.nn.Module:
    """``model`` under torch.compile (``--compile``), or as it is. Static shapes: a full micro-batch
    and the short last one each compile once, instead of one dynamic-shape graph for all."""
    if mode == "off":
        return model
    if mode == "reduce-overhead" and accumulates:
        # CUDA graphs reuse their output memory at the next replay, and the first micro-batch's gradient
        # is that memory (.grad takes it over): the next micro-batch would overwrite or fail on it.
        raise UserError(
            "--compile reduce-overhead (CUDA graphs) cannot add up gradients over several micro-batches; use --compile "
            "default with gradient accumulation, or one micro-batch per update"
        )
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UserError("--compile: compiling for the CPU needs a C++ compiler (g++, c++ or clang++) on the PATH")
    return torch.compile(model, mode=mode, dynamic=False)


class Exp:
    def __init__(self, args, data: DataBundle | None = None, plan: AccumulationPlan | None = None, runtime=None,
                 config: dict | None = None):
        """``config``: the run's configuration as launched (``config.files.configuration``), kept in args.json."""
        self.args, self.config = args, config
        self.runtime = rt = runtime if runtime is not None else SingleProcess()
        self.plan = plan if plan is not None else plan_accumulation(
            args.batch_size, args.gradient_accumulation_steps, args.enable_auto_gradient_accumulation, args.target_batch_size,
            rt.world_size,
        )  # fmt: skip
        self.device = rt.device(args.device)
        self.dtype = torch.float64 if args.dtype == "float64" else torch.float32
        self.data = data if data is not None else build_data(args)
        if args.train_epochs == "auto":  # resolved before anything records the recipe (checkpoints compare it)
            args.train_epochs = auto_epochs(len(self.data.train))
        dims = InputDims(len(self.data.channels), self.data.seq_len, self.data.num_classes)
        model = build_model(args.model, args, dims).to(device=self.device, dtype=self.dtype)
        self.amp_dtype = self._amp_dtype()
        if self.plan.sizing == "auto" and args.is_training:  # --batch_size auto (testing reads the checkpoint's layout)
            self.plan = self._size_micro_batch(model)
        self.limits = BatchLimits.of(args, self.plan)  # --fast_dev_run, --limit_train_batches, --limit_val_batches
        eval_batch = self._eval_batch_size()
        self.data = self.data.evaluated_on(*self.limits.eval_windows(eval_batch, rt.world_size))
        self.criterion = build_loss(
            args.loss_preset, self.data.num_classes, self.data.train.labels, args.class_weights,
            [fault_family(name) for name in self.data.class_names],
        ).to(self.device)  # fmt: skip

        pin = self.device.type == "cuda"
        resident = args.resident_data == "on" or (args.resident_data == "auto" and not args.num_workers)
        train, val, test = self.data.splits_on(self.device) if resident else (self.data.train, self.data.val, self.data.test)
        # Private generator: creating a loader iterator must not draw from the global RNG
        # (that would shift dropout masks between a run and its resumed copy).
        self.loader_generator = torch.Generator().manual_seed(args.seed)
        self.train_loader = make_loader(train, self.plan.global_micro_batch, True, args.seed, args.num_workers, pin,
                                        self.loader_generator, rt.rank, rt.world_size, resident, self.limits.train)  # fmt: skip
        self.val_loader, self.test_loader = (
            make_eval_loader(split, eval_batch, rt.rank, rt.world_size, args.num_workers, pin, resident) for split in (val, test)
        )
        sampler, labels = self.train_loader.sampler, self.data.train.labels
        self.policy = AccumulationPolicy(
            self.plan.steps,
            lambda epoch: [self.criterion.weight_total(labels[b]) for b in sampler.batches(epoch)],  # global micro-batches
            args.train_epochs,
            cross_epoch=args.cross_epoch_accumulation,
        )

        self._bare_model = model
        self.model = compiled(
            rt.wrap(model),
            args.compile,
            self.device,
            accumulates=self.plan.steps > 1 or args.cross_epoch_accumulation,
        )
        if rt.rank:  # the same initial weights everywhere (DDP broadcasts them), dropout masks of its own
            torch.manual_seed(rank_seed(args.seed, rt.rank, 0))
        self.optimizer = self._build_optimizer()
        self.scheduler, scheduler_per_update = build_scheduler(args, self.optimizer, self.policy.planned_updates())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.early_stopping = EarlyStopping(args.patience)
        self.state = TrainingState(
            model, self.device, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, accumulation=self.policy,
            early_stopping=self.early_stopping,
        )  # fmt: skip
        self._fingerprint: str | None = None
        self.checkpoints = Checkpoints(self.state, rt, self.loader_generator, self._checkpoint_meta())
        if rt.distributed:
            self._check_processes_agree()
        self.ckpt_dir = self.results_dir = None  # set by train()
        self.tracker = NullTracker()
        self.trained_epochs = 0  # epochs trained by this process (0: --is_training 0, or a finished run resumed)
        self.test_report: dict | None = None  # set by test(): its class probabilities, which --ensemble averages
        self.trainer = Trainer(
            args=args, plan=self.plan, runtime=rt, model=self.model, criterion=self.criterion, optimizer=self.optimizer,
            scheduler=self.scheduler, scheduler_per_update=scheduler_per_update, scaler=self.scaler, amp_dtype=self.amp_dtype,
            policy=self.policy, train_loader=self.train_loader, state=self.state, checkpoints=self.checkpoints,
            validate=lambda: self.vali(self.val_loader), ckpt_dir=None, write_history=self._write_history,
            shrink=self._shrink_micro_batch,
        )  # fmt: skip

    # ------------------------------------------------------------------ setup
    @property
    def bare_model(self) -> torch.nn.Module:
        """The model itself: not wrapped in DDP, not compiled (evaluation, checkpoints, export)."""
        return self._bare_model

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

    def _size_micro_batch(self, model: torch.nn.Module) -> AccumulationPlan:
        """--batch_size auto: each process measures what fits its device; all take the smallest."""
        plan, rt = self.plan, self.runtime
        try:
            sizer = MicroBatchSizer(model, self.data.train, self.device, self._autocast, self.args, plan.batch_size, rt.world_size)
            size, how = sizer.choose()
        except UserError as exc:
            size, how = 0, str(exc)
        sizes = rt.gather((size, how))
        failed = next((rank for rank, (n, _) in enumerate(sizes) if n == 0), None)
        if failed is not None:
            raise UserError(sizes[failed][1] + (f" (process {failed})" if rt.distributed else ""))
        smallest = min(range(len(sizes)), key=lambda rank: sizes[rank][0])
        fits, how = sizes[smallest]
        if rt.distributed:
            how += f" (process {smallest}, the tightest of {rt.world_size})"
        return sized_plan(plan, fits, how, self.args.log_grad_noise)

    def _eval_batch_size(self) -> int:
        """Evaluation keeps within the memory budget of --batch_size auto: its batches are no larger
        than the training micro-batch (a forward without a backward needs less). A smoke run
        evaluates in micro-batches."""
        if self.limits.eval_batch_size is not None:
            return self.limits.eval_batch_size
        return min(EVAL_BATCH_SIZE, self.plan.batch_size) if self.args.batch_size == "auto" else EVAL_BATCH_SIZE

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _check_processes_agree(self) -> None:
        """Every process must train the same recipe on the same windows (each parses its own
        command line and reads its own copy of the data)."""
        mine = {f"--{flag}": getattr(self.args, flag) for flag in (*flags_with_role(RECIPE), *flags_with_role(LAYOUT))}
        mine["the data (windows and values)"] = self.data_fingerprint()
        first, *others = self.runtime.gather(mine)
        for rank, theirs in enumerate(others, 1):  # every process compares with process 0: one message everywhere
            for key, value in first.items():
                if theirs[key] != value:
                    raise UserError(
                        f"process {rank} has {key} {theirs[key]!r}, process 0 has {value!r}: every process of a torchrun run "
                        "needs the same flags and data"
                    )

    def describe(self) -> str:
        a, p, rt = self.args, self.criterion.preset, self.runtime
        params = sum(t.numel() for t in self.model.parameters())
        weights = "balanced class weights" if self.criterion.class_weights_np is not None else "no class weights"
        schedule = a.lr_scheduler
        if a.lr_scheduler == "cosine":
            schedule += f" over {self.policy.planned_updates()} updates, {a.warmup_steps} warm-up"
        lines = [
            self.data.summary(),
            f"Model {a.model}: {params:,} parameters, --norm {a.norm}, --dropout {a.dropout}, "
            f"device {self.device}, {self.dtype}"
            + (f", AMP {self.amp_dtype}" if self.amp_dtype else "")
            + (f", torch.compile mode {a.compile} (training; evaluation eager)" if a.compile != "off" else "")
            + (", data resident on the device" if isinstance(self.train_loader, ResidentLoader) else ", DataLoader"),
            f"Loss preset {p.name}: {p.summary} [{p.parameters()}], {weights}",
            f"Optimizer {a.optimizer} lr {a.learning_rate:g}, scheduler {schedule}, "
            f"clip {a.max_grad_norm if a.max_grad_norm > 0 else 'off'}, early stopping patience {a.patience}",
            f"Accumulation ({self.plan.mode}): {self.policy.describe(self.plan.batch_size, self.plan.world_size)}",
        ]
        if self.plan.sizing != "--batch_size":
            lines.append(f"Micro-batch {self.plan.batch_size} chosen by {self.plan.sizing}")
        if self.limits != BatchLimits():
            lines.append(self.limits.describe(a, len(self.data.val), len(self.data.test)))
        if rt.distributed:
            lines.append(f"Data-parallel: {rt.world_size} processes, backend {rt.backend}, gradients all-reduced once per "
                         "optimizer update (no_sync inside a window)")  # fmt: skip
        return "\n".join(lines)

    # ------------------------------------------------------ micro-batch size
    def _adopt_micro_batch(self, batch_size: int) -> None:
        """Micro-batches of ``batch_size`` (a divisor of the current one) and as many more steps:
        the effective batch, every window's samples and so its normaliser stay the same."""
        self.plan = self.trainer.plan = shrunk(self.plan, batch_size)
        self.train_loader.sampler.resize(self.plan.global_micro_batch)
        self.policy.resize(self.plan.steps)
        self.checkpoints.meta["layout"] = layout_of(self.plan)

    def _shrink_micro_batch(self, step, rank: int) -> None:
        """Out of memory in a micro-batch on process ``rank`` (the trainer has dropped the window's
        gradients and figures; every process is here at the same micro-batch): redo its window
        from the first micro-batch with smaller micro-batches, the same size on every process.
        The GradScaler has nothing pending: it unscales only at the update, which this never interrupts."""
        old, rt = self.plan, self.runtime
        on = f" on process {rank}" if rt.distributed else ""
        where = f"out of memory{on} in epoch {step.epoch + 1}, micro-batch {step.batch + 1} (--batch_size {old.batch_size})"
        smaller = smaller_micro_batch(old.batch_size)
        if smaller is None:
            raise UserError(f"{where}: a single window does not fit; shorten --step, narrow the model or use a larger device")
        if step.batch < step.position:
            raise UserError(f"{where}: its window began in the previous epoch (--cross_epoch_accumulation) and cannot be "
                            f"redone; resume from last.pt with --batch_size {smaller}")  # fmt: skip
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self._adopt_micro_batch(smaller)
        self.checkpoints.meta["shrunk_after_out_of_memory"] = True  # a resume with the first flags goes on with this size
        self.policy.restart_window(step, old.batch_size // smaller)
        self.state.meter.micro_batches = self.policy.batch  # the epoch's micro-batches before the window, in the new size
        print(f"warning: {where}: going on with micro-batch {smaller} x {self.plan.steps} steps, effective batch "
              f"{self.plan.effective_batch_size} kept; the window is redone from its first micro-batch", flush=True)  # fmt: skip

    # ---------------------------------------------------------------- train
    def train(self, setting: str) -> dict:
        a, rt = self.args, self.runtime
        folders = (Path(a.checkpoints) / setting, Path(a.results) / setting)
        if a.overwrite:  # asked for: the earlier run's files go only now, once data and model were built without error
            rt.from_writer(lambda: [_remove(folder) for folder in folders])
        # Folders are made only once both can be and a resume (if any) was accepted: a refusal leaves none behind.
        flags = ("--checkpoints", "--results")
        rt.from_writer(lambda: [check_creatable(folder, flag) for folder, flag in zip(folders, flags)])
        self.ckpt_dir, self.results_dir = folders
        self.trainer.ckpt_dir = self.ckpt_dir
        resumed_from = self._resume() if a.resume else None
        rt.from_writer(lambda: [ensure_dir(folder, flag) for folder, flag in zip(folders, flags)])
        path = self.results_dir / "args.json"
        rt.write(path, lambda: write_json(path, run_record(a, setting, self.data.source, path, self.config)))
        self.tracker = start_tracker(a, self.results_dir, rt.is_writer)
        print(self.describe(), flush=True)
        if resumed_from:
            print(self._resume_line(resumed_from), flush=True)
        epochs_before = len(self.state.history)
        try:
            self.trainer.fit()
        finally:
            self.tracker.close()
        self.trained_epochs = len(self.state.history) - epochs_before
        rt.write(self.results_dir / "training_curves.png",
                 lambda: write_training_curves(self.results_dir, self.state.history, a.loss_preset))  # fmt: skip
        return {"epochs": len(self.state.history), "updates": self.state.updates, "seconds": self.state.train_seconds}

    def train_epoch(self, epoch: int) -> None:
        self.trainer.train_epoch(epoch)

    def _write_history(self, history: list[dict]) -> None:
        path = self.results_dir / "history.csv"
        self.runtime.write(path, lambda: write_history(path, history))
        self.tracker.log_epoch(history[-1])

    # ------------------------------------------------------------ evaluation
    def vali(self, loader) -> dict:
        return evaluate(self.bare_model, loader, self.device, self.trainer.autocast, self.runtime, self.data.num_classes)

    def test(self, setting: str, load_best: bool = True) -> dict:
        a, rt, s = self.args, self.runtime, self.state
        ckpt_path = Path(a.checkpoints) / setting / "best.pt"
        if load_best and not rt.from_writer(ckpt_path.is_file):
            if not s.history:
                raise UserError(f"--is_training 0: no checkpoint {ckpt_path}; train this run first (same flags, --is_training 1)")
            print("warning: no best.pt was written (validation loss never finite); testing the last weights", flush=True)
            load_best = False
        layout = layout_of(self.plan)
        if load_best:
            state = self.load(ckpt_path)
            if not s.history:  # evaluation only (--is_training 0): report what the whole training did
                trained_s = state.get("deployment", {}).get("interval_s")
                check_interval(sampling_interval(self.data.times), trained_s, self.data.source)
                self._restore_training_summary(state, ckpt_path.with_name("last.pt"))
                layout = state.get("layout", layout)  # how it was trained, not how many processes test it
        results_dir = rt.from_writer(lambda: ensure_dir(Path(a.results) / setting, "--results"))
        report = evaluate(self.bare_model, self.test_loader, self.device, self.trainer.autocast, self.runtime, self.data.num_classes,
                          probabilities=True)  # fmt: skip
        self.test_report = report
        names = self.data.class_names
        normal = find_normal_class(names, a.normal_class)
        metrics = {
            "run": setting,
            "phase": "train" if self.trained_epochs else "test",  # did this process train, or only test (a finished run too)
            "finished": now(),
            "model": a.model,
            "data": a.data,
            "source": self.data.source,
            "checkpoint": str(ckpt_path) if load_best else None,
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_f1"],
            "test_loss": report["loss"],
            "test_samples": int(len(report["y_true"])),
            **diagnosis_fields(report, names, normal),
            "batch_size": layout["batch_size"],
            "accumulation_steps": layout["steps"],
            "accumulation_mode": self.plan.mode,
            "processes": layout["world_size"],
            "effective_batch_size": layout["effective_batch_size"],
            "target_batch_size": self.plan.target,
            "micro_batch_sizing": self.plan.sizing,
            "cross_epoch_accumulation": a.cross_epoch_accumulation,
            "optimizer_updates": s.updates,
            "skipped_updates": s.skipped_updates,
            "discarded_windows": s.bad_windows,
            "epochs_run": len(s.history),
            "best_epoch": self.early_stopping.best_epoch + 1,
            "monitor": a.monitor,
            "best_val": abs(self.early_stopping.best),  # validation loss, or macro-F1, of the best epoch
            "wall_time_s": s.train_seconds,
            "seed": a.seed,
            "split_fold": a.split_fold,
            "loss_preset": a.loss_preset,
            "learning_rate": a.learning_rate,
        }
        title = f"{a.model} on {a.data}: accuracy {report['accuracy']:.2%}, macro-F1 {report['macro_f1']:.3f}"
        window_units = self.data.window_units(self.data.test)
        if window_units is not None:  # several logs: the figures of each unit too
            metrics["units"] = unit_figures(report, window_units, len(names), normal)
        predictions = prediction_table(*self.data.window_bounds(self.data.test), report["probs"], names, report["y_true"],
                                       window_units)  # fmt: skip
        rt.write(results_dir / "metrics.json",
                 lambda: write_test_outputs(results_dir, Path(a.results) / "summary.csv", metrics, predictions, title))  # fmt: skip
        print(format_report(report, names, normal), flush=True)
        if window_units is not None:
            print(format_unit_figures(metrics["units"]), flush=True)
        print(
            f"Test: accuracy {report['accuracy']:.2%} | macro-F1 {report['macro_f1']:.4f} | loss {report['loss']:.4f}"
            f" | {len(report['y_true'])} windows -> {results_dir}",
            flush=True,
        )
        return metrics

    def export(self, setting: str) -> Path:
        """--export: the tested model with its scaler and input format, for use outside this runner."""
        from exp.export import SUFFIX, export_run

        path = Path(self.args.checkpoints) / setting / f"model.{SUFFIX[self.args.export]}"
        self.runtime.write(path, lambda: export_run(self.bare_model, self.data, self.args, self.dtype, path))
        print(f"Exported {self.args.export}: {path} (raw sensor windows [B, {self.data.seq_len}, {len(self.data.sensors)}] -> "
              f"probabilities over {self.data.num_classes} classes; see {path.with_suffix('.json').name})", flush=True)  # fmt: skip
        return path

    # ----------------------------------------------------------- checkpoints
    def data_fingerprint(self) -> str:
        """Hash of the scaled values, the windows of every split and the channel names."""
        if self._fingerprint is None:
            digest = hashlib.sha1(self.data.train.values.cpu().numpy().tobytes())
            for split in (self.data.train, self.data.val, self.data.test):
                digest.update(np.ascontiguousarray(split.starts).tobytes())
                digest.update(np.ascontiguousarray(split.labels).tobytes())
            digest.update(",".join(self.data.channels).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _checkpoint_meta(self) -> dict:
        """What a checkpoint says about its run besides the training state."""
        return {
            "class_names": list(self.data.class_names),
            "channels": list(self.data.channels),
            "data_source": self.data.source,
            "data_fingerprint": self.data_fingerprint(),
            "layout": layout_of(self.plan),
            "args": dict(vars(self.args)),
            "deployment": deployment_record(self.data, self.args),
        }

    def load(self, path: Path) -> dict:
        """Load the model weights of a checkpoint after checking it belongs to this model and data."""
        state = self.read_checkpoint(path)
        self.load_weights(state, path)
        return state

    def read_checkpoint(self, path: Path) -> dict:
        state = self.checkpoints.read(path)  # on the CPU: RNG states must stay there; weights are copied over
        check_model(state, path, self.args.model, self.data.class_names)
        return state

    def load_weights(self, state: dict, path: Path) -> None:
        try:
            self.bare_model.load_state_dict(state["model"])
        except RuntimeError:
            differences = recipe_differences(state.get("args", {}), self.args)  # what was trained otherwise, by name
            hint = "; ".join(differences) if differences else "other sensors?"
            raise UserError(f"checkpoint {path} does not fit this model ({hint})") from None

    def _resume(self) -> Path | None:
        """Restore the whole training state from ``--resume auto|PATH``."""
        a, rt = self.args, self.runtime
        path = self.ckpt_dir / "last.pt" if a.resume == "auto" else Path(a.resume)
        if not rt.from_writer(path.is_file):
            if a.resume == "auto":
                print(f"--resume auto: no checkpoint at {path} yet, starting from scratch", flush=True)
                return None
            raise UserError(f"--resume: checkpoint {path} does not exist")
        state = self.read_checkpoint(path)
        self._keep_shrunk_micro_batch(state, path)
        # The recipe before the weights: a refusal naming the flag says more than a shape error.
        check_resumable(state, path, a, self.plan, self.data_fingerprint(), self.state.keys())
        self.load_weights(state, path)
        try:
            own = self.state.load_state_dict(state, rt.rank, rt.world_size, self.loader_generator)
        except ValueError as exc:
            raise UserError(f"--resume: {path}: {exc} (--gradient_accumulation_steps / --cross_epoch_accumulation)") from None
        if self.trainer.noise is not None and self.policy.pending:
            self.trainer.noise.skip_window = True
        if not own:
            print(f"Resuming on {rt.world_size} process(es) a checkpoint of {len(state['processes'])}: steps recomputed, "
                  f"effective batch {self.plan.effective_batch_size} kept", flush=True)  # fmt: skip
            if rt.rank:
                torch.manual_seed(rank_seed(a.seed, rt.rank, self.state.epoch))
        return path

    def _keep_shrunk_micro_batch(self, state: dict, path: Path) -> None:
        """A run that went on with smaller micro-batches after running out of memory resumes
        with them (same effective batch), not with the size that did not fit."""
        saved, plan = state.get("layout"), self.plan
        if not state.get("shrunk_after_out_of_memory") or saved is None:
            return
        if (saved["world_size"], saved["effective_batch_size"]) == (plan.world_size, plan.effective_batch_size) and (
            saved["batch_size"] < plan.batch_size and plan.batch_size % saved["batch_size"] == 0
        ):
            self._adopt_micro_batch(saved["batch_size"])
            self.checkpoints.meta["shrunk_after_out_of_memory"] = True
            print(f"note: {path} went on with smaller micro-batches after running out of memory: {describe_layout(saved)}",
                  flush=True)  # fmt: skip

    def _restore_training_summary(self, best: dict, last_path: Path) -> None:
        """Epochs, updates and time come from last.pt (the whole run); the best epoch from best.pt."""
        if best.get("data_source") != self.data.source:
            print(f"note: the checkpoint was trained on {best.get('data_source')}; testing on {self.data.source}", flush=True)
        summary = best
        if self.runtime.from_writer(last_path.is_file):
            try:
                summary = self.checkpoints.read(last_path)
            except UserError as exc:
                print(f"note: {exc}; the training summary comes from best.pt", flush=True)
        s = self.state
        s.history = summary.get("history", [])
        s.updates = summary.get("updates", 0)
        s.skipped_updates = summary.get("skipped_updates", 0)
        s.bad_windows = summary.get("bad_windows", 0)
        s.train_seconds = summary.get("train_seconds", 0.0)
        if "early_stopping" in best:
            self.early_stopping.load_state_dict(best["early_stopping"])

    def _resume_line(self, path: Path) -> str:
        s = self.state
        if s.finished:
            return f"Resumed from {path}: training had already finished after {len(s.history)} epochs"
        window = f", inside an accumulation window ({self.policy.position}/{self.policy.length})" if self.policy.pending else ""
        return (
            f"Resumed from {path}: epoch {s.epoch + 1}, micro-batch {s.meter.micro_batches} done"
            f"{window}, {s.updates} optimizer updates so far"
        )


def _remove(folder: Path) -> None:
    if folder.is_dir():
        with writing(folder):
            shutil.rmtree(folder)
