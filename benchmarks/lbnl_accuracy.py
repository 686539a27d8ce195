"""Accuracy on the real LBNL AHU fault data: our models against a random forest.

For each file in ../shared/data/lbnl_ahu (fault classes from its inventory), with the blocked
split, --step 96 and a stride of half a window, it prints macro-F1 and accuracy of
  * our best model and our DualGAFNet (the runner's defaults otherwise), and
  * a random forest (300 trees) on per-window statistics: mean, std, min, max and last minus
    first of every channel,
all on the same windows and split, each the mean (and spread) of 3 seeds.

    python benchmarks/lbnl_accuracy.py [--seeds 3] [--files SZCAV SZVAV MZVAV-2-1] [--best ResNet1D] [--train_stride 12]

--train_stride cuts the training windows more densely for the forest and our models alike
(pass it here, not in --extra, which reaches our models only).

Needs scikit-learn (in requirements-dev.txt). Data: Granderson et al., Scientific Data 7, 65 (2020).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from data_provider.data_factory import build_data  # noqa: E402
from exp.exp import Exp  # noqa: E402
from models.layers import window_statistics  # noqa: E402
from run import build_parser, validate  # noqa: E402
from utils.metrics import classification_report  # noqa: E402
from utils.seed import seed_everything  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "lbnl_ahu"
LABEL = "Fault Detection Ground Truth"


def parse(flags):
    parser = build_parser()
    args = parser.parse_args(flags)
    validate(parser, args)
    return args


def data_flags(name: str, train_stride: int = 48) -> list[str]:
    """The windows every contender sees: validation and test windows every 48 rows, training
    windows every ``train_stride`` rows inside the same training blocks."""
    return ["--root_path", str(DATA), "--data_path", f"{name}.csv", "--fault_inventory", f"{name}-faults.csv",
            "--label_col", LABEL, "--step", "96", "--stride", "48", "--train_stride", str(train_stride),
            "--split", "blocked", "--progress", "none"]  # fmt: skip


def forest_features(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-window statistics of every channel, the same ones the models' statistics branch uses."""
    x = dataset[np.arange(len(dataset))].x.double()  # [N, T, C]
    return window_statistics(x).flatten(1).numpy(), dataset.labels


def random_forest(data, seed: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    x_train, y_train = forest_features(data.train)
    x_test, y_test = forest_features(data.test)
    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1).fit(x_train, y_train)
    return classification_report(y_test, forest.predict(x_test), data.num_classes)


def ours(name: str, model_flags: list[str], seed: int, tmp: Path, train_stride: int = 48) -> dict:
    outputs = ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")]
    args = parse([*data_flags(name, train_stride), *model_flags, "--seed", str(seed), *outputs])
    with contextlib.redirect_stdout(io.StringIO()):
        data = build_data(args)
        seed_everything(seed)
        exp = Exp(args, data)
        exp.train(f"{name}_{seed}")
        metrics = exp.test(f"{name}_{seed}")
    return {"macro_f1": metrics["test_macro_f1"], "accuracy": metrics["test_accuracy"]}


def summarise(scores: list[dict], key: str) -> str:
    values = [s[key] for s in scores]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", nargs="+", default=["SZCAV", "SZVAV", "MZVAV-2-1"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--best", default="ResNet1D", help="our best model (for --data, the model's format is used)")
    p.add_argument("--train_stride", type=int, default=48, help="stride of the training windows (forest and models alike)")
    p.add_argument("--extra", default="", help="extra run.py flags for our models, e.g. '--train_epochs 40'")
    p.add_argument("--work", default="/tmp/lbnl_benchmark", help="scratch folder for checkpoints and results")
    opts = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"LBNL data not found at {DATA}")
    extra = opts.extra.split()
    contenders = {f"ours: {opts.best}": ["--model", opts.best, *extra], "ours: DualGAFNet": ["--model", "DualGAFNet", *extra]}
    seeds = [2021 + i for i in range(opts.seeds)]
    print(f"{'file':<10} {'model':<22} {'macro-F1':>15} {'accuracy':>15} {'seconds':>8}")
    for name in opts.files:
        with contextlib.redirect_stdout(io.StringIO()):
            data = build_data(parse([*data_flags(name, opts.train_stride), "--data", "Classification"]))
        started = time.time()
        forest = [random_forest(data, seed) for seed in seeds]
        rows = {"random forest (stats)": (forest, time.time() - started)}
        for label, flags in contenders.items():
            started = time.time()
            work = Path(opts.work) / name / label.split()[-1]
            rows[label] = ([ours(name, flags, seed, work, opts.train_stride) for seed in seeds], time.time() - started)
        for label, (scores, seconds) in rows.items():
            print(
                f"{name:<10} {label:<22} {summarise(scores, 'macro_f1'):>15} {summarise(scores, 'accuracy'):>15} {seconds:8.0f}", flush=True
            )
        print(f"{name:<10} {len(data.train)} train / {len(data.val)} val / {len(data.test)} test windows, {data.num_classes} classes")


if __name__ == "__main__":
    main()
