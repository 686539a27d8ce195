"""Throughput and memory against the micro-batch size: what to read before choosing
--batch_size and the accumulation steps.

For each data format's default model and micro-batch 1, 2, 4, ..., 128 (one step; accumulation
adds no memory, see memory.py): samples/s of a whole training epoch (the second; the first
warms up) and the peak memory above the baseline, each size in a fresh process. Prints the
table and draws benchmarks/scaling_<device>.png.

    python benchmarks/scaling.py [--device cuda] [--sim_days 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memory import FORMATS, measure

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sim_days", type=int, default=4, help="simulated days per class (the default run has 12)")
    a = p.parse_args()
    extra = ("--sim_days", str(a.sim_days))
    print(f"micro-batch scaling on {a.device}, built-in data with --sim_days {a.sim_days}, 2 epochs, the second timed")
    print(f"{'model':>14} | " + " | ".join(f"{b:>11}" for b in SIZES))
    table = {}
    for data, model in FORMATS:
        rows = [measure(data, model, b, 1, a.device, 2, extra) for b in SIZES]
        table[model] = rows
        print(f"{model + ' s/s':>14} | " + " | ".join(f"{r['samples_per_s']:>11,.0f}" for r in rows))
        print(f"{'MB':>14} | " + " | ".join(f"{r['above_baseline_mb']:>11.1f}" for r in rows))
    path = Path(__file__).resolve().parent / f"scaling_{a.device.split(':')[0]}.png"
    plot(table, a.device, path)
    best = {model: SIZES[max(range(len(SIZES)), key=lambda i: rows[i]["samples_per_s"])] for model, rows in table.items()}
    print(f"\nfastest micro-batch: {', '.join(f'{m} {b}' for m, b in best.items())}; plot: {path}")


def plot(table: dict, device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    for model, rows in table.items():
        speed.plot(SIZES, [r["samples_per_s"] for r in rows], "o-", label=model)
        memory.plot(SIZES, [r["above_baseline_mb"] for r in rows], "o-", label=model)
    for ax, title in ((speed, "training samples/s"), (memory, "peak memory above baseline, MB")):
        ax.set(xscale="log", xlabel="micro-batch size", title=f"{title} ({device})")
        ax.set_xticks(SIZES, [str(b) for b in SIZES])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
