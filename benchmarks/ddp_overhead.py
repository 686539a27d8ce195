"""Data-parallel cost on this machine, side by side in one run: 2 CPU processes (gloo).

For accumulation steps 1, 4 and 8 it trains the same recipe three ways and prints the time
per epoch, samples/s and the number of gradient all-reduces (counted by a DDP communication
hook in every process):

  * 2 processes, the runner (every backward under ``no_sync``, one flat all-reduce after a
    window's last micro-batch, once the processes agreed that none ran out of memory),
  * 2 processes with DDP's own bucketed all-reduce inside the window's last backward
    (overlapped with it; a process out of memory there would leave the others waiting),
  * 2 processes without ``no_sync`` (an all-reduce after every micro-batch),
  * 1 process with twice the micro-batch (the same global batches).

    python benchmarks/ddp_overhead.py [--model ResNet1D] [--batch_size 8] [--epochs 3] [--sim_days 4]

The epoch time is the median of the epochs after the first (from history.csv), so start-up,
data building and the first epoch's allocations are left out. Processes are started by
torchrun through ``tests/dist_worker.py``, which runs run.py unchanged plus the counting hook.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "dist_worker.py")


def train(tmp: Path, procs: int, flags: list[str], variant: str | None = None) -> dict:
    """``variant``: a dist_worker switch (WORKER_ALWAYS_SYNC, WORKER_DDP_LAST) or None for the runner."""
    env = {**os.environ, "WORKER_OUT": str(tmp / "record"), **({variant: "1"} if variant else {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else [
        sys.executable]  # fmt: skip
    outputs = ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")]
    done = subprocess.run([*launcher, WORKER, *flags, *outputs], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    (history,) = (tmp / "res").glob("*/history.csv")
    rows = list(csv.DictReader(open(history)))
    seconds = statistics.median(float(r["seconds"]) for r in rows[1:]) if len(rows) > 1 else float(rows[0]["seconds"])
    record = json.loads(Path(f"{tmp}/record.0.json").read_text())
    windows = int(re.search(r"(\d+) train /", done.stdout).group(1))
    return {"seconds": seconds, "samples_per_s": windows / seconds, "allreduces": record["allreduces"],
            "updates": int(rows[-1]["total_updates"])}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ResNet1D")
    p.add_argument("--batch_size", type=int, default=8, help="micro-batch per process")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sim_days", type=int, default=4)
    opts = p.parse_args()
    base = ["--model", opts.model, "--sim_days", str(opts.sim_days), "--train_epochs", str(opts.epochs), "--patience", "0",
            "--device", "cpu", "--progress", "none"]  # fmt: skip
    print(f"{opts.model}, micro-batch {opts.batch_size} per process, {opts.epochs} epochs, 2 CPU cores, gloo")
    print(f"{'GA':>3} {'run':>28} {'s/epoch':>8} {'samples/s':>10} {'all-reduces':>12} {'updates':>8} {'vs runner':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (1, 4, 8):
            ga = ["--gradient_accumulation_steps", str(steps)]
            two = [*base, *ga, "--batch_size", str(opts.batch_size)]
            one = [*base, *ga, "--batch_size", str(2 * opts.batch_size)]
            runs = {
                "2 processes, runner": train(Path(tmp) / f"a{steps}", 2, two),
                "2 processes, DDP in last bwd": train(Path(tmp) / f"d{steps}", 2, two, "WORKER_DDP_LAST"),
                "2 processes, sync every step": train(Path(tmp) / f"b{steps}", 2, two, "WORKER_ALWAYS_SYNC"),
                "1 process, micro-batch x 2": train(Path(tmp) / f"c{steps}", 1, one),
            }
            reference = runs["2 processes, runner"]["seconds"]
            for name, r in runs.items():
                print(f"{steps:>3} {name:>28} {r['seconds']:8.2f} {r['samples_per_s']:10.1f} {r['allreduces']:>12} "
                      f"{r['updates']:>8} {r['seconds'] / reference:9.2f}x")  # fmt: skip
    print("all-reduces: rounds counted in rank 0 over the whole run; 'vs runner': epoch time relative to the runner's 2-process run")


if __name__ == "__main__":
    main()
