"""How far (b*k, 1 step) and (b, k steps) drift apart over a whole run, float32 against float64.

Exact accumulation means the two are the same computation up to rounding. In float64 the
rounding stays at the level of the arithmetic; in float32 the two trajectories separate over
hundreds of updates, like any two runs whose rounding differs. One process, the built-in data.

    python benchmarks/float_drift.py [--model ResNet1D] [--epochs 1] [--sim_days 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from config.flags import build_parser
from config.validation import validate
from data_provider.data_factory import build_data
from exp.exp import Exp
from utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]


def parse(flags: list[str]):
    parser = build_parser()
    args = parser.parse_args([*flags, "--progress", "none"])
    validate(parser, args)
    return args


def weights_after(flags: list[str], epochs: int, data) -> tuple[np.ndarray, int]:
    args = parse(flags)
    seed_everything(args.seed)
    exp = Exp(args, data)
    for epoch in range(epochs):
        exp.train_epoch(epoch)
    return np.concatenate([p.detach().double().numpy().ravel() for p in exp.model.parameters()]), exp.state.updates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ResNet1D")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--sim_days", type=int, default=12)
    opts = p.parse_args()
    print(f"{opts.model}, --norm none --dropout 0, (8, 1 step) vs (4, 2 steps), {opts.epochs} epoch(s), built-in data")
    print(f"{'dtype':>8} {'updates':>8} {'relative difference':>20}")
    for dtype in ("float32", "float64"):
        base = ["--model", opts.model, "--sim_days", str(opts.sim_days), "--norm", "none", "--dropout", "0", "--dtype", dtype,
                "--device", "cpu", "--train_epochs", str(opts.epochs)]  # fmt: skip
        data = build_data(parse(base))
        large, updates = weights_after([*base, "--batch_size", "8"], opts.epochs, data)
        small, _ = weights_after([*base, "--batch_size", "4", "--gradient_accumulation_steps", "2"], opts.epochs, data)
        print(f"{dtype:>8} {updates:>8} {np.linalg.norm(small - large) / np.linalg.norm(large):20.2e}")


if __name__ == "__main__":
    main()
