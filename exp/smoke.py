"""Checking a configuration without a full run: ``--fast_dev_run``, ``--limit_train_batches`` /
``--limit_val_batches`` and ``--dry_run``.

* ``BatchLimits``: how many micro-batches an epoch trains and how many batches validation and
  the test see. ``--fast_dev_run N`` trains N micro-batches (default: the accumulation steps, at
  least 2, so one full window, and a flushed partial one when N is not a multiple of the steps)
  and validates and tests on N batches of the micro-batch size. An evaluation limit keeps
  windows spread evenly over its split, so every class keeps its share.
* ``temporary_outputs``: a smoke run writes into a temporary folder, removed at the end, unless
  ``--results`` / ``--checkpoints`` are given.
* ``check_outputs``: reads back what the run wrote (checkpoints, metrics, predictions, plots,
  summary row) and says what it checked; ``dry_run_plan``: what ``--dry_run`` prints.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from exp.accumulation import AccumulationPolicy
from utils.checkpoint import load_checkpoint
from utils.errors import UserError


class SmokeRunFailed(Exception):
    """An output of a --fast_dev_run did not read back as written; exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class BatchLimits:
    train: int | None = None  # micro-batches per epoch (global: every process's share together)
    val: int | None = None  # evaluation batches
    test: int | None = None
    eval_batch_size: int | None = None  # a smoke run evaluates in batches of the micro-batch

    @classmethod
    def of(cls, args, plan) -> BatchLimits:
        if args.fast_dev_run is None:
            return cls(args.limit_train_batches, args.limit_val_batches)
        n = max(plan.steps, 2) if args.fast_dev_run == "auto" else args.fast_dev_run
        return cls(n, n, n, plan.batch_size)

    def describe(self, args, val_windows: int, test_windows: int) -> str:
        flag = "--fast_dev_run" if args.fast_dev_run is not None else "--limit_train_batches / --limit_val_batches"
        train = "every micro-batch" if self.train is None else f"the first {self.train} micro-batches"
        return f"Limits ({flag}): {train} of each epoch, {val_windows} validation and {test_windows} test windows"

    def eval_windows(self, batch_size: int, world_size: int) -> tuple[int | None, int | None]:
        """Validation and test windows: the limits in batches of ``batch_size`` on every process."""
        return tuple(None if n is None else n * batch_size * world_size for n in (self.val, self.test))


@contextlib.contextmanager
def temporary_outputs(args, typed: set[str]):
    """--fast_dev_run: --results and --checkpoints default to a temporary folder, removed afterwards."""
    keep = {"results", "checkpoints"} & typed
    if args.fast_dev_run is None or len(keep) == 2:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="fast_dev_run_"))
    for flag in {"results", "checkpoints"} - keep:
        setattr(args, flag, str(folder / flag))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def windows_text(micro_batches: int, steps: int, epochs: int, cross_epoch: bool) -> str:
    """How the accumulation policy cuts that many micro-batches per epoch into windows, e.g.
    '1 window of 3 + 1 flushed of 1' (asked of the policy itself, not worked out again here)."""
    policy = AccumulationPolicy(steps, lambda epoch: [1.0] * micro_batches, epochs, cross_epoch=cross_epoch)
    closed = [step.window_length for step in (policy.next() for _ in range(micro_batches * epochs)) if step.is_update]
    full, short = closed.count(steps), Counter(n for n in closed if n != steps)
    text = f"{full} window{'s' if full != 1 else ''} of {steps}"
    return text + "".join(f" + {count} flushed of {n}" for n, count in sorted(short.items()))


def check_outputs(exp, setting: str, metrics: dict) -> list[str]:
    """Read back every file the run wrote (on the writer); the names of what was checked."""
    from exp.state import check_model, check_resumable

    a = exp.args
    ckpt_dir, results_dir = Path(a.checkpoints) / setting, Path(a.results) / setting

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise SmokeRunFailed(f"smoke run failed: {what}")

    checked = []
    for name in ("best.pt", "last.pt"):
        need((ckpt_dir / name).is_file(), f"no {ckpt_dir / name} was written")
    last = load_checkpoint(ckpt_dir / "last.pt")
    try:
        check_model(last, ckpt_dir / "last.pt", a.model, exp.data.class_names)
        check_resumable(last, ckpt_dir / "last.pt", a, exp.plan, exp.data_fingerprint(), exp.state.keys())
        copy.deepcopy(exp.bare_model).load_state_dict(last["model"])
    except (UserError, RuntimeError) as exc:
        raise SmokeRunFailed(f"smoke run failed: {ckpt_dir / 'last.pt'} does not resume this run ({exc})") from None
    checked.append("checkpoints saved and reloaded (best.pt tested, last.pt resumable)")
    written = json.loads((results_dir / "metrics.json").read_text())
    need(written["run"] == setting and written["test_macro_f1"] == metrics["test_macro_f1"], "metrics.json does not hold this run")
    with open(results_dir / "predictions.csv", newline="") as f:
        need(sum(1 for _ in csv.DictReader(f)) == len(exp.data.test), "predictions.csv lacks test windows")
    with open(results_dir / "history.csv", newline="") as f:
        need(sum(1 for _ in csv.DictReader(f)) == len(exp.state.history), "history.csv lacks epochs")
    checked.append("metrics, predictions and history")
    for plot in ("training_curves.png", "confusion_matrix.png"):
        need((results_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{plot} is not a PNG image")
    checked.append("plots")
    with open(Path(a.results) / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    need(bool(rows) and rows[-1]["run"] == setting, "summary.csv does not end with this run's row")
    checked.append("summary row")
    if a.export:
        from exp.export import SUFFIX

        model_file = ckpt_dir / f"model.{SUFFIX[a.export]}"
        need(model_file.is_file() and model_file.with_suffix(".json").is_file(), f"--export wrote no {model_file} and its card")
        checked.append(f"{a.export} export")
    return checked


def smoke_line(exp, checked: list[str], scratch: Path | None) -> str:
    a, limits, s = exp.args, exp.limits, exp.state
    micro = exp.policy.batches_per_epoch
    where = f"in {scratch}, removed now" if scratch else f"in {a.results} and {a.checkpoints}"
    return (
        f"smoke run passed: {micro} micro-batches x {a.train_epochs} epoch(s) -> {s.updates} optimizer update(s) "
        f"({windows_text(micro, exp.plan.steps, a.train_epochs, a.cross_epoch_accumulation)}), validated and tested on "
        f"{len(exp.data.val)} and {len(exp.data.test)} windows (at most {limits.val} batches of {limits.eval_batch_size}); "
        f"{', '.join(checked)} ({where})"
    )


def dry_run_plan(exp, setting: str, refusal: str | None) -> str:
    """What ``--dry_run`` prints: the start-up description, the schedule's length, the memory
    estimate and the run folders."""
    from exp.micro_batch import memory_estimate

    a = exp.args
    lines = [
        f">>> plan of {setting} (--dry_run: nothing is trained or written)",
        exp.describe(),
        f"Schedule: {a.train_epochs} epoch(s), {exp.policy.planned_updates()} optimizer updates if no early stop (patience {a.patience})",
        memory_estimate(exp.bare_model, exp.data.train, exp.device, exp.trainer.autocast, a, exp.plan.batch_size, exp.runtime.world_size),
    ]
    for flag, folder in (("--checkpoints", Path(a.checkpoints) / setting), ("--results", Path(a.results) / setting)):
        held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        state = "does not exist yet" if held is None else f"exists, holding {', '.join(held) or 'nothing'}"
        lines.append(f"Run folder ({flag}): {folder} {state}")
    if refusal:
        lines.append(f"warning: training would stop here: {refusal}")
    return "\n".join(lines)
