"""``--batch_size auto`` on the CPU: does the estimate keep one epoch of training inside ``--max_memory_mb``?

For each format's default model and each budget, in a fresh process: the Exp is built with
``--batch_size auto --target_batch_size 1024 --max_memory_mb B`` (the sizer runs there), the
baseline is the resident set right after it, the peak is reset through /proc/self/clear_refs,
one epoch is trained and the peak (VmHWM) above the baseline is set against the estimate
(fixed + per-window x micro-batch, recomputed with ``exp/micro_batch.py``) and the budget; the
peak is reset again for one validation pass (what a real run adds after each epoch). The
resident set moves from one identical run to the next, so each run is repeated (``--repeats``)
and the verdict takes the largest. Then, per model, the measured margin: the median peaks at
two plain micro-batches (128 and 512, one step), their difference per window over the bytes
autograd saves per window, to compare with ``ESTIMATE_MARGIN``.

    python benchmarks/auto_batch.py [--budgets 64 128 256] [--repeats 3]    # about 9 minutes on 2 CPU cores
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/auto_batch.py --repeats 1  # 2.5 minutes: tensors, not glibc's heap

glibc's default malloc keeps freed memory resident and moves its mmap threshold up as it goes,
which makes the resident set noisy and larger than the live tensors; a fixed threshold (the
environment variable, passed on to the workers) returns large blocks at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = (("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN"))
TARGET = 1024
MARGIN_SIZES = (128, 512)


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def worker(data: str, model: str, batch: str, budget: int) -> dict:
    """One run in this process: ``batch`` is "auto" (sized within ``budget`` MiB) or a plain micro-batch."""
    from config.flags import build_parser
    from config.validation import validate
    from exp.exp import Exp
    from exp.micro_batch import ESTIMATE_MARGIN, MiB, MicroBatchSizer, leaves_no_trace
    from utils.errors import UserError
    from utils.seed import seed_everything

    auto = ["--target_batch_size", str(TARGET), "--max_memory_mb", str(budget)]
    argv = ["--data", data, "--model", model, "--batch_size", batch, *(auto if batch == "auto" else ["--gradient_accumulation_steps", "1"]),
            "--train_epochs", "1", "--progress", "none", "--device", "cpu"]  # fmt: skip
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(parser, args, argv)
    seed_everything(args.seed)
    try:
        exp = Exp(args)
    except UserError as exc:
        return {"error": str(exc)}
    base = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    exp.train_epoch(0)
    peak = status_mb("VmHWM") - base
    Path("/proc/self/clear_refs").write_text("5")
    exp.vali(exp.val_loader)
    validation = status_mb("VmHWM") - base
    sizer = MicroBatchSizer(exp.bare_model, exp.data.train, exp.device, exp._autocast, args, exp.plan.batch_size)
    with leaves_no_trace(exp.bare_model, exp.device):
        per_window = sizer.per_window_estimate() / MiB
    return {"batch": exp.plan.batch_size, "steps": exp.plan.steps, "windows": len(exp.data.train), "peak_mb": peak,
            "validation_mb": validation, "fixed_mb": sizer.state / MiB, "per_window_mb": per_window,
            "saved_mb": per_window / ESTIMATE_MARGIN, "margin": ESTIMATE_MARGIN, "sizing": exp.plan.sizing}  # fmt: skip


def measure(data: str, model: str, batch: str, budget: int, repeats: int) -> dict:
    """``worker`` in ``repeats`` fresh processes (so no run inherits another's peak): the first
    run's figures, with every run's peaks as lists."""
    runs = []
    for _ in range(repeats):
        cmd = [sys.executable, __file__, "--worker", data, model, batch, str(budget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    if "error" in runs[0]:
        return runs[0]
    return {**runs[0], "peak_mb": [r["peak_mb"] for r in runs], "validation_mb": [r["validation_mb"] for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256], help="--max_memory_mb values, MiB")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure")
    p.add_argument("--worker", nargs=4, metavar=("DATA", "MODEL", "BATCH", "BUDGET"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        data, model, batch, budget = a.worker
        print(json.dumps(worker(data, model, batch, int(budget))))
        return
    print(f"--batch_size auto --target_batch_size {TARGET}, one CPU epoch, {a.repeats} fresh process(es) each; MiB above the baseline")
    print(f"{'model':>11} | budget | micro x steps | fixed | per window | estimate | measured median (max) | max/budget | validation max")
    ratios, margins = [], []
    for data, model in FORMATS:
        for budget in a.budgets:
            r = measure(data, model, "auto", budget, a.repeats)
            if "error" in r:
                print(f"{model:>11} | {budget:6} | does not fit: {r['error']}")
                continue
            estimate, worst = r["fixed_mb"] + r["per_window_mb"] * r["batch"], max(r["peak_mb"])
            ratios.append((worst / budget, model, budget))
            print(f"{model:>11} | {budget:6} | {r['batch']:>6} x {r['steps']:<4} | {r['fixed_mb']:5.1f} | {r['per_window_mb']:10.3f} | "
                  f"{estimate:8.1f} | {statistics.median(r['peak_mb']):11.1f} ({worst:5.1f}) | {ratios[-1][0]:10.2f} | "
                  f"{max(r['validation_mb']):14.1f}")  # fmt: skip
        small, large = (measure(data, model, str(n), 0, a.repeats) for n in MARGIN_SIZES)
        if small["windows"] < max(MARGIN_SIZES):
            print(f"warning: {model} has {small['windows']} training windows, fewer than micro-batch {max(MARGIN_SIZES)}")
        peaks = [statistics.median(run["peak_mb"]) for run in (small, large)]
        measured = (peaks[1] - peaks[0]) / (large["batch"] - small["batch"])
        margins.append((model, *peaks, measured, small["saved_mb"], measured / small["saved_mb"], small["margin"]))
    lo, hi = MARGIN_SIZES
    print(f"\nmeasured margin: (median peak at {hi} - at {lo}) / {hi - lo} windows, over the bytes autograd saves per window")
    print(f"{'model':>11} | peak {lo:>4} | peak {hi:>4} | measured MiB/window | saved MiB/window | measured margin | ESTIMATE_MARGIN")
    for model, p_lo, p_hi, measured, saved, margin, assumed in margins:
        print(f"{model:>11} | {p_lo:9.1f} | {p_hi:9.1f} | {measured:19.3f} | {saved:15.3f} | {margin:15.2f} | {assumed:15.1f}")
    if ratios:
        worst, model, budget = max(ratios)
        verdict = "inside every budget" if worst <= 1.0 else f"over the budget ({model}, --max_memory_mb {budget})"
        print(f"\nverdict (CPU resident set, training): max measured/budget {worst:.2f} (target <= 1.0): {verdict}")


if __name__ == "__main__":
    main()
