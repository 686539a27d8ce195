"""The runner against a minimal hand-written loop, Lightning and Accelerate, side by side.

Same model (same initial weights), same batches (the runner's loader, the seed-and-epoch
order), same per-sample loss preset, optimizer (RAdam) and clipping (1.0, once per update),
for micro-batch x steps in 32 x 1, 8 x 4 and 4 x 8:
* runner: ``Exp.train_epoch`` (the loop ``run.py`` runs, progress off);
* hand loop: zero_grad / forward / backward / clip + step every k micro-batches, nothing else;
* Lightning: ``Trainer(accumulate_grad_batches=k, gradient_clip_val=1.0)``, no logger, no
  checkpoints, no progress bar, no validation;
* Accelerate: ``with accelerator.accumulate(model)``, clipping when ``sync_gradients``.
Each measures samples/s over one whole training epoch; the trainers take turns, each
repetition with a fresh model, after one untimed round (--warmup); the median of --repeats is
printed with the ratios.

    pip install -r requirements-bench.txt      # lightning, accelerate (benchmark-only)
    python benchmarks/peers.py [--device cpu] [--repeats 5] [--sim_days 4] [--formats DualGAF,...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import torch

from config.flags import build_parser
from config.validation import validate
from data_provider.data_factory import build_data
from exp.exp import Exp
from utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]

LAYOUTS = ((32, 1), (8, 4), (4, 8))
MODELS = {"Classification": "ResNet1D", "DualGAF": "DualGAFNet", "GNN": "GNN"}
TRAINERS = ("runner", "hand loop", "Lightning", "Accelerate")


def fresh_exp(data_format: str, batch: int, steps: int, device: str, data, extra: list[str]) -> Exp:
    """The runner's parts for one layout, with the same initial weights every time."""
    parser = build_parser()
    args = parser.parse_args(["--data", data_format, "--model", MODELS[data_format], "--batch_size", str(batch),
                              "--gradient_accumulation_steps", str(steps), "--device", device, "--progress", "none", *extra])  # fmt: skip
    validate(parser, args)
    seed_everything(args.seed)
    return Exp(args, data)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_runner(exp: Exp, steps: int) -> float:
    start = time.perf_counter()
    exp.train_epoch(0)
    sync(exp.device)
    return time.perf_counter() - start


def run_hand_loop(exp: Exp, steps: int) -> float:
    model, opt, crit, device = exp.bare_model, exp.optimizer, exp.criterion, exp.device
    model.train()
    start = time.perf_counter()
    for i, batch in enumerate(exp.train_loader):
        batch = batch.to(device, non_blocking=True)
        losses, _ = crit(model(*batch.inputs()), batch.labels)
        (losses.sum() / (batch.num_samples * steps)).backward()
        if (i + 1) % steps == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def run_lightning(exp: Exp, steps: int) -> float:
    import lightning as L

    for name in ("lightning.pytorch", "lightning.fabric"):  # set on import to INFO: its banner and tips
        logging.getLogger(name).setLevel(logging.ERROR)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = exp.bare_model

        def training_step(self, batch, index):
            losses, _ = exp.criterion(self.model(*batch.inputs()), batch.labels)
            return losses.mean()

        def configure_optimizers(self):
            return exp.optimizer

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            return batch.to(device)

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync(exp.device)
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    accelerator = "gpu" if exp.device.type == "cuda" else "cpu"
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=steps, gradient_clip_val=1.0, accelerator=accelerator, devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])  # fmt: skip
    trainer.fit(Module(), train_dataloaders=exp.train_loader)
    return clock.seconds


def run_accelerate(exp: Exp, steps: int) -> float:
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=steps, cpu=exp.device.type == "cpu")
    model, opt = accelerator.prepare(exp.bare_model, exp.optimizer)
    model.train()
    start = time.perf_counter()
    for batch in exp.train_loader:  # the runner's loader as it is (its batches are the runner's objects)
        batch = batch.to(exp.device, non_blocking=True)
        with accelerator.accumulate(model):
            losses, _ = exp.criterion(model(*batch.inputs()), batch.labels)
            accelerator.backward(losses.mean())
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
    sync(exp.device)
    return time.perf_counter() - start


RUN = {"runner": run_runner, "hand loop": run_hand_loop, "Lightning": run_lightning, "Accelerate": run_accelerate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of every trainer first")
    p.add_argument("--sim_days", type=int, default=4, help="simulated days per class (the default run has 12)")
    p.add_argument("--formats", default=",".join(MODELS))
    a = p.parse_args()
    warnings.filterwarnings("ignore")  # Lightning's and Accelerate's notes about workers, logging, ...
    extra = ["--sim_days", str(a.sim_days)]
    print(f"samples/s over one training epoch, median of {a.repeats} alternating repetitions, device {a.device}, "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"{'model':>10} {'layout':>7} | " + " | ".join(f"{t:>10}" for t in TRAINERS) + " | run/hand | run/Light | run/Accel")
    worst = {"hand loop": 9.9, "Lightning": 9.9, "Accelerate": 9.9}
    for data_format in a.formats.split(","):
        data = None
        for batch, steps in LAYOUTS:
            if data is None:
                data = build_data(fresh_exp(data_format, batch, steps, a.device, None, extra).args)
            seconds = {t: [] for t in TRAINERS}
            for repeat in range(a.warmup + a.repeats):
                for trainer in TRAINERS:  # alternating: slow drift of the machine hits all alike
                    exp = fresh_exp(data_format, batch, steps, a.device, data, extra)
                    took = RUN[trainer](exp, steps)
                    if repeat >= a.warmup:  # the first round pays for first-call set-up (allocator, kernels)
                        seconds[trainer].append(took)
            speed = {t: len(data.train) / statistics.median(s) for t, s in seconds.items()}
            ratios = {t: speed["runner"] / speed[t] for t in TRAINERS[1:]}
            for t, r in ratios.items():
                worst[t] = min(worst[t], r)
            print(f"{MODELS[data_format]:>10} {f'{batch}x{steps}':>7} | " + " | ".join(f"{speed[t]:>10,.0f}" for t in TRAINERS)
                  + " | " + " | ".join(f"{r:>8.2f}" for r in ratios.values()))  # fmt: skip
    met = worst["hand loop"] >= 0.98 and worst["Lightning"] >= 1.05 and worst["Accelerate"] >= 1.05
    print(f"\nverdict: worst runner/hand loop {worst['hand loop']:.2f} (target >= 0.98), runner/Lightning {worst['Lightning']:.2f} "
          f"and runner/Accelerate {worst['Accelerate']:.2f} (targets >= 1.05): {'met' if met else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
