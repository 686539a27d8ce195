"""Accuracy on the real LBNL AHU fault data: our models against a random forest.

For each file in ../shared/data/lbnl_ahu (fault classes from its inventory), with the blocked
split, --step 96 and a stride of half a window, it prints macro-F1 and accuracy of
  * our best model and our DualGAFNet (the runner's defaults otherwise), and
  * a random forest (300 trees) on per-window statistics: mean, std, min, max and last minus
    first of every channel,
all on the same windows and split, each the mean (and spread) of 3 seeds: the validation
macro-F1 (what options are chosen on) beside the test figures (reported, never chosen on).

    python benchmarks/lbnl_accuracy.py [--seeds 3] [--files SZCAV SZVAV MZVAV-2-1] [--best ResNet1D] [--train_stride 12]
    python benchmarks/lbnl_accuracy.py --seeds 9 --ensemble 3 --jobs 8   # + ensembles of 3 seeds, 8 runs at once
    python benchmarks/lbnl_accuracy.py --folds 5 --jobs 2                 # blocked cross-validation: every block tested once
    python benchmarks/lbnl_accuracy.py --folds 5 --models --forest_without "Outdoor Air Temperature"  # the forest only, blind to a sensor

--ensemble K also scores the mean class probabilities of K consecutive seeds (what --itr K
--ensemble gives a user). --jobs runs that many trainings at once in separate processes.

--folds N repeats everything on folds 0..N-1 of the blocked split (--split_fold: the pattern
train,train,train,val,test dealt K blocks on), so that every block of a day is tested once and
one lucky or unlucky test block per class weighs less; figures are then over folds and seeds.

--train_stride cuts the training windows more densely for the forest and our models alike
(pass it here, not in --extra, which reaches our models only).

Needs scikit-learn (in requirements-dev.txt). Data: Granderson et al., Scientific Data 7, 65 (2020).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from config.flags import build_parser
from config.validation import validate
from data_provider.data_factory import build_data
from exp.ensemble import mean_probabilities
from exp.evaluation import evaluate
from exp.exp import Exp
from models.layers import window_statistics
from utils.metrics import classification_report
from utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]

DATA = Path(os.environ.get("LBNL_DATA", ROOT.parent / "shared" / "data" / "lbnl_ahu"))  # LBNL_DATA: the files elsewhere
LABEL = "Fault Detection Ground Truth"


def parse(flags):
    parser = build_parser()
    args = parser.parse_args(flags)
    validate(parser, args)
    return args


def data_flags(name: str, train_stride: int = 48, fold: int = 0) -> list[str]:
    """The windows every contender sees: validation and test windows every 48 rows, training
    windows every ``train_stride`` rows inside the same training blocks, blocks dealt as fold ``fold``."""
    return ["--root_path", str(DATA), "--data_path", f"{name}.csv", "--fault_inventory", f"{name}-faults.csv",
            "--label_col", LABEL, "--step", "96", "--stride", "48", "--train_stride", str(train_stride),
            "--split", "blocked", "--split_fold", str(fold), "--progress", "none"]  # fmt: skip


def forest_features(dataset, channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-window statistics of ``channels``, the same ones the models' statistics branch uses."""
    x = dataset[np.arange(len(dataset))].x.double()  # [N, T, C]
    return window_statistics(x)[:, channels].flatten(1).numpy(), dataset.labels  # [N, C, 5] -> [N, 5 * kept]


def random_forest(data, seed: int, without: list[str] = ()) -> dict:
    """``without``: sensors (column-name substrings) left out of the forest's features."""
    from sklearn.ensemble import RandomForestClassifier

    unknown = [part for part in without if not any(part in name for name in data.channels)]
    if unknown:
        sys.exit(f"--forest_without: no sensor of {data.source} has {unknown[0]!r} in its name")
    kept = [i for i, name in enumerate(data.channels) if not any(part in name for part in without)]
    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1).fit(*forest_features(data.train, kept))
    x_val, y_val = forest_features(data.val, kept)
    x_test, y_test = forest_features(data.test, kept)
    report = classification_report(y_test, forest.predict(x_test), data.num_classes)
    report["val_macro_f1"] = classification_report(y_val, forest.predict(x_val), data.num_classes)["macro_f1"]
    return report


def ours(name: str, model_flags: list[str], seed: int, tmp: Path, train_stride: int = 48, threads: int = 0, fold: int = 0) -> dict:
    """One training run; its test and validation figures and the class probabilities of its best
    model on both splits (for the ensembles of seeds)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    outputs = ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res"), "--overwrite"]
    args = parse([*data_flags(name, train_stride, fold), *model_flags, "--seed", str(seed), *outputs])
    with contextlib.redirect_stdout(io.StringIO()):
        data = build_data(args)
        seed_everything(seed)
        exp = Exp(args, data)
        setting = f"{name}_{seed}_fold{fold}"  # a folder per run: runs in flight at once never share one
        exp.train(setting)
        metrics = exp.test(setting)  # leaves the best model loaded; its test probabilities in exp.test_report
        val = evaluate(exp.bare_model, exp.val_loader, exp.device, exp.trainer.autocast, exp.runtime, data.num_classes, probabilities=True)
        test = exp.test_report
    return {"macro_f1": metrics["test_macro_f1"], "accuracy": metrics["test_accuracy"], "val_macro_f1": val["macro_f1"],
            "val": (val["y_true"], val["probs"]), "test": (test["y_true"], test["probs"])}  # fmt: skip


def ensembles(scores: list[dict], size: int, split: str, seeds: int) -> list[float]:
    """Macro-F1 of the mean class probabilities of consecutive groups of ``size`` seeds of one fold
    (``scores`` holds ``seeds`` runs per fold, fold after fold)."""
    groups = [scores[f + i : f + i + size] for f in range(0, len(scores), seeds) for i in range(0, seeds - size + 1, size)]
    out = []
    for group in groups:
        y_true = group[0][split][0]
        mean = mean_probabilities([s[split][1] for s in group])  # what --itr K --ensemble computes
        out.append(classification_report(y_true, mean.argmax(-1), mean.shape[1])["macro_f1"])
    return out


def summarise(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", nargs="+", default=["SZCAV", "SZVAV", "MZVAV-2-1"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--best", default="ResNet1D", help="our best model (for --data, the model's format is used)")
    p.add_argument("--models", nargs="*", default=None, help="our models to run (default: --best and DualGAFNet; none: the forest only)")
    p.add_argument("--train_stride", type=int, default=48, help="stride of the training windows (forest and models alike)")
    p.add_argument("--extra", default="", help="extra run.py flags for our models, e.g. '--train_epochs 40'")
    p.add_argument("--ensemble", type=int, default=0, help="also score ensembles of this many consecutive seeds (mean probabilities)")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once, in separate processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's own)")
    p.add_argument("--folds", type=int, default=1, help="run folds 0..N-1 of the blocked split (--split_fold), 1 to 5")
    p.add_argument("--no_forest", action="store_true", help="leave out the random forest")
    p.add_argument("--forest_without", nargs="+", default=[], metavar="SENSOR",
                   help="sensors (column-name substrings) the forest does not see, e.g. 'Outdoor Air Temperature'")  # fmt: skip
    p.add_argument("--work", default="/tmp/lbnl_benchmark", help="scratch folder for checkpoints and results")
    opts = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"LBNL data not found at {DATA}")
    extra = opts.extra.split()
    models = opts.models if opts.models is not None else [opts.best, "DualGAFNet"]
    contenders = {f"ours: {m}": ["--model", m, *extra] for m in models}
    if not 1 <= opts.folds <= 5:
        sys.exit(f"--folds must be 1 to 5, got {opts.folds}")
    seeds = [2021 + i for i in range(opts.seeds)]
    folds = range(opts.folds)
    tasks = {(name, label, fold, seed): (name, flags, seed, Path(opts.work) / name / label.split()[-1], opts.train_stride,
                                         opts.threads, fold)
             for name in opts.files for label, flags in contenders.items() for fold in folds for seed in seeds}  # fmt: skip
    started = time.time()
    if opts.jobs > 1:
        with ProcessPoolExecutor(opts.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {key: pool.submit(ours, *task) for key, task in tasks.items()}
            runs = {key: future.result() for key, future in futures.items()}
    else:
        runs = {key: ours(*task) for key, task in tasks.items()}
    print(
        f"{len(runs)} training runs in {time.time() - started:.0f} s ({opts.jobs} at once); extra flags: {opts.extra or '(none)'}"
        + (f"; figures over {opts.folds} folds x {opts.seeds} seeds" if opts.folds > 1 else "")
    )
    ens = f" {'ensemble val':>15} {'ensemble test':>15}" if opts.ensemble else ""
    print(f"{'file':<10} {'model':<22} {'val macro-F1':>15} {'test macro-F1':>15} {'test accuracy':>15}{ens}")
    for name in opts.files:
        rows, sizes = {}, []
        if not opts.no_forest:
            forest = rows["random forest (stats)" + (" without " + ", ".join(opts.forest_without) if opts.forest_without else "")] = []
            for fold in folds:
                with contextlib.redirect_stdout(io.StringIO()):
                    # The forest reads the raw sensors' statistics, whatever the runner's defaults add for its models.
                    raw = ["--data", "Classification", "--derived_signals", "off", "--augment_jitter", "0"]
                    data = build_data(parse([*data_flags(name, opts.train_stride, fold), *raw]))
                forest += [random_forest(data, seed, opts.forest_without) for seed in seeds]
                sizes.append(f"{len(data.train)}/{len(data.val)}/{len(data.test)}")
        for label in contenders:
            rows[label] = [runs[(name, label, fold, seed)] for fold in folds for seed in seeds]
        for label, scores in rows.items():
            val = summarise([s["val_macro_f1"] for s in scores]) if "val_macro_f1" in scores[0] else "-"
            line = f"{name:<10} {label:<22} {val:>15} {summarise([s['macro_f1'] for s in scores]):>15} "
            line += f"{summarise([s['accuracy'] for s in scores]):>15}"
            if opts.ensemble and "val" in scores[0]:
                line += "".join(f" {summarise(ensembles(scores, opts.ensemble, split, opts.seeds)):>15}" for split in ("val", "test"))
            if opts.folds > 1:  # the test macro-F1 of each fold, mean of its seeds
                line += "  by fold: " + " ".join(f"{statistics.mean(s['macro_f1'] for s in scores[f : f + opts.seeds]):.2f}"
                                                 for f in range(0, len(scores), opts.seeds))  # fmt: skip
            print(line, flush=True)
        if not opts.no_forest:
            print(f"{name:<10} {' | '.join(sizes)} train/val/test windows (by fold), {data.num_classes} classes")


if __name__ == "__main__":
    main()
