"""Batched GASF + GADF (data_provider/gaf.py) against pyts' GramianAngularField, side by side
in one run, and GAF's share of a DualGAFNet training step.

* Values: the same windows (already in [-1, 1], as the runner's scaler gives them) through both;
  the largest absolute difference must stay below 1e-5 (ours runs in float32, pyts in float64).
* Throughput: series per second (one series = one sensor of one window, both images), median
  of --repeats alternating runs, for image sizes 96, 48 and 32 (windows of 96: PAA to 48 and 32).
* Share: one DualGAFNet forward + backward on a micro-batch, with its images made inside the
  step (what the runner does) against the same step on images made beforehand.

    pip install -r requirements-bench.txt
    python benchmarks/gaf_vs_pyts.py [--device cuda] [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from data_provider.gaf import dual_gaf

ROOT = Path(__file__).resolve().parents[1]

LENGTH, SENSORS = 96, 13  # the default run's windows


def pyts_dual_gaf(windows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """pyts on [B, T, C] windows: every sensor of every window is one series."""
    from pyts.image import GramianAngularField

    b, t, c = windows.shape
    series = windows.transpose(0, 2, 1).reshape(b * c, t).astype(np.float64)
    images = [GramianAngularField(image_size=size, method=m, sample_range=None).fit_transform(series) for m in ("summation", "difference")]
    return tuple(im.reshape(b, c, size, size) for im in images)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(batch: int, repeats: int, device: torch.device) -> list[tuple]:
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(batch, LENGTH, SENSORS)), axis=1)  # sensor-like series
    low, high = walk.min(axis=1, keepdims=True), walk.max(axis=1, keepdims=True)
    windows = (2 * (walk - low) / (high - low) - 1).astype(np.float32)
    ours_in = torch.as_tensor(windows, device=device)
    rows = []
    for size in (96, 48, 32):
        gasf, gadf = dual_gaf(ours_in, size)
        ref_s, ref_d = pyts_dual_gaf(windows, size)
        error = max(np.abs(gasf.cpu().numpy() - ref_s).max(), np.abs(gadf.cpu().numpy() - ref_d).max())
        ours_t, pyts_t = [], []
        for _ in range(repeats):  # alternating, so drift in machine load hits both alike
            ours_t.append(timed(lambda size=size: dual_gaf(ours_in, size), device))
            pyts_t.append(timed(lambda size=size: pyts_dual_gaf(windows, size), torch.device("cpu")))
        series = batch * SENSORS
        rows.append((size, series / statistics.median(ours_t), series / statistics.median(pyts_t), error))
    return rows


def gaf_share(micro_batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of a DualGAFNet forward+backward with the images made inside the step, and
    the share of that time spent making them."""
    from config.flags import build_parser
    from config.validation import validate
    from models import InputDims, build_model

    parser = build_parser()
    args = parser.parse_args(["--device", str(device)])
    validate(parser, args)
    model = build_model("DualGAFNet", args, InputDims(SENSORS, LENGTH, 8)).to(device)
    x = torch.rand(micro_batch, LENGTH, SENSORS, device=device) * 2 - 1
    labels = torch.randint(0, 8, (micro_batch,), device=device)
    images = dual_gaf(x, args.gaf_size)

    def step(made_inside: bool):
        gasf, gadf = dual_gaf(x, args.gaf_size) if made_inside else images
        torch.nn.functional.cross_entropy(model(gasf, gadf, x), labels).backward()
        model.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step(True)
    inside, before = [], []
    for _ in range(repeats * 4):
        inside.append(timed(lambda: step(True), device))
        before.append(timed(lambda: step(False), device))
    whole, without = statistics.median(inside), statistics.median(before)
    return whole, max(0.0, (whole - without) / whole)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256, help="windows per call (x 13 sensors)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    print(f"GASF + GADF of {a.batch} windows x {SENSORS} sensors, length {LENGTH}, device {device}, torch {torch.__version__}")
    print(f"{'image':>6} | {'ours series/s':>14} | {'pyts series/s':>14} | {'ratio':>6} | {'max |diff|':>10}")
    rows = compare(a.batch, a.repeats, device)
    for size, ours, theirs, error in rows:
        print(f"{size:>6} | {ours:>14,.0f} | {theirs:>14,.0f} | {ours / theirs:>6.1f} | {error:>10.1e}")
    print()
    print(f"{'micro-batch':>11} | {'DualGAFNet step ms':>18} | {'GAF share':>9}")
    shares = []
    for micro in (4, 32):
        whole, share = gaf_share(micro, a.repeats, device)
        shares.append(share)
        print(f"{micro:>11} | {whole * 1e3:>18.2f} | {share:>9.1%}")
    slowest = min(ours / theirs for _, ours, theirs, _ in rows)
    equal = max(error for *_, error in rows) < 1e-5
    verdict = "met" if slowest >= 20 and equal and max(shares) < 0.15 else "NOT met"
    print(f"\nverdict: GAF {slowest:.1f}x pyts at the slowest size (target >= 20x), values equal to 1e-5: {equal}, "
          f"largest GAF share of a step {max(shares):.1%} (target < 15%): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
