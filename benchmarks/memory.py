"""Peak memory of accumulation: micro-batch x steps (4 x 8) against (4 x 1) and (32 x 1).

Each layout trains one epoch of each data format's default model in a fresh process. Measured:
* CPU: the peak resident set above the baseline, where the baseline is the process once data,
  model, loaders and optimizer exist (Linux: the peak is reset there through
  /proc/self/clear_refs, then read from VmHWM);
* CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated at that point.

    python benchmarks/memory.py [--device cuda] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ((4, 8), (4, 1), (32, 1))
FORMATS = (("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN"))


def rss_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def worker(data: str, model: str, batch: int, steps: int, device: str, epochs: int, extra: tuple[str, ...] = ()) -> dict:
    """One layout in this process: the peak above the baseline, in MB, and the samples/s of the
    last epoch (the first one also warms up allocators and creates the optimizer state)."""
    import torch

    from config.flags import build_parser
    from config.validation import validate
    from exp.exp import Exp
    from utils.seed import seed_everything

    parser = build_parser()
    args = parser.parse_args(["--data", data, "--model", model, "--batch_size", str(batch), "--gradient_accumulation_steps",
                              str(steps), "--train_epochs", str(epochs), "--device", device, "--progress", "none", *extra])  # fmt: skip
    validate(parser, args)
    seed_everything(args.seed)
    exp = Exp(args)
    if exp.device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_now_mb()
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    for epoch in range(epochs):
        start = time.perf_counter()
        exp.train_epoch(epoch)
        if exp.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    speed = {"samples_per_s": len(exp.data.train) / seconds}
    if exp.device.type == "cuda":
        return {"above_baseline_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "kind": "cuda allocated", **speed}
    return {"above_baseline_mb": rss_peak_mb() - base, "kind": "CPU resident set", **speed}


def measure(data: str, model: str, batch: int, steps: int, device: str, epochs: int, extra: tuple[str, ...] = ()) -> dict:
    """``worker`` in a fresh process (so no layout inherits another's peak)."""
    cmd = [sys.executable, __file__, "--device", device, "--epochs", str(epochs), "--worker", data, model, str(batch), str(steps),
           "--", *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--worker", nargs=4, metavar=("DATA", "MODEL", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)  # run.py flags for the worker, after --
    a = p.parse_args()
    if a.worker:
        data, model, batch, steps = a.worker
        print(json.dumps(worker(data, model, int(batch), int(steps), a.device, a.epochs, tuple(a.extra))))
        return
    print(f"peak memory above the baseline, MB, {a.epochs} epoch(s) on {a.device}, each layout in a fresh process")
    print(f"{'model':>11} | " + " | ".join(f"{b} x {k}".rjust(8) for b, k in LAYOUTS) + " | (4x8)/(4x1) | (4x8)/(32x1)")
    ratios = []
    for data, model in FORMATS:
        peaks, kind = [], ""
        for batch, steps in LAYOUTS:
            result = measure(data, model, batch, steps, a.device, a.epochs)
            peaks.append(result["above_baseline_mb"])
            kind = result["kind"]
        ratios.append((peaks[0] / max(peaks[1], 1e-9), peaks[0] / max(peaks[2], 1e-9)))
        print(f"{model:>11} | " + " | ".join(f"{m:8.1f}" for m in peaks) + f" | {ratios[-1][0]:11.2f} | {ratios[-1][1]:12.2f}")
    worst = max(r[0] for r in ratios)
    print(f"\nverdict ({kind}): (4 x 8) uses at most {worst:.2f}x the memory of (4 x 1) above the baseline (target <= 1.05)")


if __name__ == "__main__":
    main()
