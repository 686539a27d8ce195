"""Launch: one invocation from its command line to its exit code.

``main`` parses the command line (and a ``--config`` file), plans the accumulation, starts the
runtime (one process or torchrun's), runs the ``--itr`` repeats (and ``--ensemble``) through
``Exp``, and maps every way a run can end to its exit code: 0 success, 1 an output file could
not be written (disk full, permission lost), 2 bad arguments or data (one-line message), 3
training aborted (the loss stayed non-finite), 4 another process of a torchrun run failed or
timed out, 130 after Ctrl-C / 143 after SIGTERM (a resumable checkpoint is written).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np

from config.files import configuration, parse, to_toml
from config.naming import run_name
from config.tsl import check_dims
from data_provider.data_factory import build_data
from data_provider.sources import export_simulated_csv
from exp.accumulation import plan_accumulation
from exp.ensemble import score_ensemble
from exp.exp import Exp, TrainingAborted
from exp.export import check_available as check_export
from exp.micro_batch import kept_on_resume
from exp.predict import predict
from exp.runtime import PeerFailure, is_peer_failure, leave_at_once, start_runtime
from exp.smoke import SmokeRunFailed, check_outputs, dry_run_plan, smoke_line, temporary_outputs
from exp.trainer import is_out_of_memory
from utils import tracking
from utils.errors import OutputError, UserError
from utils.fdd import find_normal_class
from utils.launcher import launched_world_size
from utils.outputs import write_json
from utils.seed import make_deterministic, seed_everything
from utils.signals import Interrupted


def main(argv: list[str] | None = None) -> int:
    """One invocation of the runner: the command line (``sys.argv[1:]`` by default) -> exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser, args, notes, typed = parse(argv)
    config = configuration(args, parser.derived)  # as launched, before the run resolves more (args.json keeps it)
    if args.print_config:
        print(to_toml(config, notes), end="", flush=True)
        return 0
    plan = accumulation_plan(parser, args)
    runtime, wait_s = None, 0.0  # how long the teardown waits for the other processes
    try:
        runtime = start_runtime(args)
        if not runtime.is_writer:  # one process prints; the others print errors only
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
            args.progress = "none"
        for note in notes:
            print(f"note: {note}", flush=True)
        with temporary_outputs(args, typed) as scratch:  # --fast_dev_run
            code = _run(args, plan, runtime, config, scratch)
        wait_s = args.dist_timeout
        return code
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        wait_s = 10.0  # usually raised by every process at once; a lone one must not wait long
        return 2
    except (Interrupted, TrainingAborted, OutputError, PeerFailure, SmokeRunFailed) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        wait_s = 0.0 if isinstance(exc, PeerFailure) else args.dist_timeout  # the others agreed: they stop too
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last complete checkpoint stays
        print("run.py: interrupted", file=sys.stderr)
        return 130
    # torch.OutOfMemoryError is a RuntimeError, like the CPU allocator's error
    except (MemoryError, RuntimeError) as exc:
        if is_out_of_memory(exc):
            print(out_of_memory_error(args, plan, exc), file=sys.stderr)
            return 2
        if runtime is None or not runtime.distributed or not is_peer_failure(exc):
            raise
        failure = PeerFailure(exc, args.dist_timeout)
        print(f"run.py: {failure}", file=sys.stderr)
        return failure.exit_code
    finally:
        if runtime is not None:
            runtime.close(wait_s)


def out_of_memory_error(args: argparse.Namespace, plan, exc: BaseException) -> str:
    """Out of memory outside a training micro-batch (those shrink and go on): what to change."""
    what = f"run.py: error: out of memory ({type(exc).__name__}) with micro-batches of --batch_size {args.batch_size}"
    if args.batch_size == "auto":
        return f"{what}; lower --max_memory_fraction or give a smaller --max_memory_mb"
    smaller = max(1, args.batch_size // 2)
    if plan.target is not None:
        keep = f"--batch_size {smaller} (--target_batch_size {plan.target} recomputes the steps)"
    else:
        keep = f"--batch_size {smaller} --gradient_accumulation_steps {2 * plan.steps}"
    return f"{what}; lower --batch_size and raise the accumulation steps to keep the effective batch (e.g. {keep})"


def accumulation_plan(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Micro-batch, steps and processes, decided once here and handed to the runner."""
    try:
        plan = plan_accumulation(
            args.batch_size,
            args.gradient_accumulation_steps,
            args.enable_auto_gradient_accumulation,
            args.target_batch_size,
            launched_world_size(),
        )
    except UserError as exc:
        parser.error(f"argument {exc}")
    if args.log_grad_noise and args.is_training and plan.sizing != "auto" and (plan.steps < 2 or plan.world_size > 1):
        parser.error(
            "argument --log_grad_noise: compares the micro-batches of a window, so it needs >= 2 accumulation steps "
            f"on one process (this run: {plan.steps} step(s), {plan.world_size} process(es))"
        )
    return plan


def check_run_folders(args: argparse.Namespace, settings: list[str], runtime) -> None:
    """A training run never replaces an earlier run's work unless asked (--resume, --overwrite).
    --resume auto continues a run's last.pt; without one it starts afresh, so the rule holds."""
    if not args.is_training or args.resume not in (None, "auto") or args.overwrite:
        return

    def earlier_run(setting: str) -> tuple[Path, str] | None:
        ckpt, results = Path(args.checkpoints) / setting, Path(args.results) / setting
        if args.resume == "auto" and (ckpt / "last.pt").is_file():
            return None  # continued, not replaced
        held = [(folder, name) for folder, names in ((ckpt, ("last.pt", "best.pt")), (results, ("metrics.json",)))
                for name in names if (folder / name).is_file()]  # fmt: skip
        return held[0] if held else None

    # The writer's disk decides.
    found = runtime.from_writer(lambda: next(filter(None, map(earlier_run, settings)), None))
    if found:
        raise UserError(
            f"run folder {found[0]} already holds {found[1]} of an earlier run: continue it with --resume auto, start "
            "another with --des NAME, or replace it with --overwrite"
        )


def _run(args: argparse.Namespace, plan, runtime, config: dict, scratch: Path | None = None) -> int:
    """``config``: the run's configuration (for args.json); ``scratch``: the temporary folder of a
    --fast_dev_run's outputs (removed afterwards), if any."""
    if args.export_data:
        if runtime.is_writer:
            rows = export_simulated_csv(args, args.export_data)
            print(f"Wrote {rows} rows of simulated AHU data to {args.export_data}")
        return 0
    if args.deterministic:
        make_deterministic()
    if args.predict:
        return predict(args)  # one process (refused under torchrun)
    tracking.check_available(args)
    check_export(args.export)
    repeats = [copy.copy(args) for _ in range(args.itr)]
    for ii, run_args in enumerate(repeats):
        run_args.seed = args.seed + ii
    settings = [run_name(run_args, plan, ii) for ii, run_args in enumerate(repeats)]
    try:
        check_run_folders(args, settings, runtime)
        refusal = None
    except UserError as exc:
        if not args.dry_run:
            raise
        refusal = str(exc)  # the plan says so
    if plan.note():
        print(plan.note(), flush=True)
    data = build_data(args)  # the same windows for every repetition
    check_dims(args, len(data.sensors), data.num_classes, data.source)
    find_normal_class(data.class_names, args.normal_class)  # a wrong --normal_class stops the run before it trains
    results, probabilities = [], []
    for run_args, setting in zip(repeats, settings):
        if not args.dry_run:
            print(f">>> {'training' if args.is_training else 'testing'} {setting}", flush=True)
        seed_everything(run_args.seed)
        exp = Exp(run_args, data, kept_on_resume(run_args, setting, plan, runtime), runtime, config)
        if args.dry_run:
            print(dry_run_plan(exp, setting, refusal), flush=True)
            continue
        if args.is_training:
            exp.train(setting)
        results.append(exp.test(setting))
        probabilities.append(exp.test_report["probs"])
        if args.export:
            exp.export(setting)
        if args.fast_dev_run is not None:
            # noqa below: the lambda is called at once, inside this iteration
            checked = runtime.from_writer(lambda: check_outputs(exp, setting, results[-1]))  # noqa: B023
            print(smoke_line(exp, checked, scratch), flush=True)
    if len(results) > 1:
        summary = repeat_summary(results)
        path = Path(args.results) / settings[0] / "repeats.json"
        runtime.write(path, lambda: write_json(path, summary))
        print(f"{summary['line']} -> {path}", flush=True)
    if args.ensemble and results and runtime.is_writer:
        tested = exp.data  # the same test windows in every repeat
        score_ensemble(results, probabilities, exp.test_report["y_true"], tested.class_names,
                       find_normal_class(tested.class_names, args.normal_class), tested.window_bounds(tested.test),
                       Path(args.results) / settings[0])  # fmt: skip
    return 0


def repeat_summary(results: list[dict]) -> dict:
    """Mean and standard deviation (n - 1) of the test figures over --itr repeats."""
    keys = ("test_accuracy", "test_macro_f1", "test_loss", "false_alarm_rate", "detection_rate")
    summary = {"runs": [r["run"] for r in results], "seeds": [r["seed"] for r in results]}
    for key in keys:
        values = np.array([r[key] for r in results if r.get(key) is not None], dtype=float)
        if len(values) == len(results):
            summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "values": values.tolist()}
    acc, f1 = summary["test_accuracy"], summary["test_macro_f1"]
    summary["line"] = (
        f"Over {len(results)} repeats (seeds {results[0]['seed']}..{results[-1]['seed']}): "
        f"accuracy {acc['mean']:.2%} +- {acc['std']:.2%} | macro-F1 {f1['mean']:.4f} +- {f1['std']:.4f}"
    )
    return summary


def exit_process(code: int) -> None:
    """Leave with ``code``; after a peer failure (4) at once, since every file it wrote was already complete."""
    if code == PeerFailure.exit_code:
        leave_at_once(code)
    sys.exit(code)


def cli() -> None:
    """The console script (``hvac-train``): ``python run.py`` with the same exit codes."""
    exit_process(main())
