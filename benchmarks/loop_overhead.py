"""Cost of the training loop's per-micro-batch work, side by side in one run.

Prints micro-batches/s and samples/s for:
  * the runner's loop (finite-loss check: a flag kept on the device, read once per update),
  * the same loop without any check or statistics (a reference; not what the runner does),
and for several micro-batch x accumulation splits of one effective batch.

    python benchmarks/loop_overhead.py [--device cuda] [--model ResNet1D] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from config.flags import build_parser
from config.validation import validate
from data_provider.data_factory import build_data
from exp.exp import Exp
from exp.trainer import Trainer
from utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]


class UncheckedTrainer(Trainer):
    """The loop without the finite-loss check and the epoch's statistics."""

    def _micro_step(self, batch, step):
        with self.autocast():
            logits = self.model(*batch.inputs())
            losses, weights = self.criterion(logits, batch.labels)
        total = losses.sum() if weights is None else (losses * weights).sum()
        self.scaler.scale(total / step.normaliser).backward()
        if step.is_update:
            self.last_window = step.window_length
            self._update()


def throughput(trainer, flags, data, epochs):
    parser = build_parser()
    args = parser.parse_args([*flags, "--progress", "none"])
    validate(parser, args)
    seed_everything(args.seed)
    exp = Exp(args, data)
    exp.trainer.__class__ = trainer
    exp.train_epoch(0)  # warm-up (allocator, cuDNN autotune)
    if exp.device.type == "cuda":
        torch.cuda.synchronize()
    start, micro = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        exp.train_epoch(epoch)
        micro += exp.state.meter.micro_batches
    if exp.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return micro / seconds, micro * args.batch_size / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="DualGAFNet")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--effective", type=int, default=32)
    opts = p.parse_args()
    base = ["--model", opts.model, "--device", opts.device, "--sim_days", "4", "--train_epochs", str(opts.epochs + 1)]
    parser = build_parser()
    args = parser.parse_args(base)
    validate(parser, args)
    data = build_data(args)
    print(f"{opts.model} on {Exp(args, data).device}, {len(data.train)} training windows, {opts.epochs} timed epochs")
    print(f"{'micro x steps':>14} {'loop':>10} {'micro/s':>10} {'samples/s':>10} {'vs unchecked':>13}")
    for steps in (1, 2, 4, 8):
        micro = opts.effective // steps
        flags = [*base, "--batch_size", str(micro), "--gradient_accumulation_steps", str(steps)]
        ours = throughput(Trainer, flags, data, opts.epochs)
        plain = throughput(UncheckedTrainer, flags, data, opts.epochs)
        label = f"{micro} x {steps}"
        print(f"{label:>14} {'runner':>10} {ours[0]:10.1f} {ours[1]:10.1f} {ours[0] / plain[0]:12.2f}x")
        print(f"{label:>14} {'unchecked':>10} {plain[0]:10.1f} {plain[1]:10.1f} {1.0:12.2f}x")


if __name__ == "__main__":
    main()
