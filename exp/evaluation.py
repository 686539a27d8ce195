"""Evaluation and reporting.

``evaluate`` runs on every process over its shard of a split and gathers the per-window
results, so every window is counted once and every process reaches the same figures (and the
same early-stopping, scheduler and best-checkpoint decisions). The files (metrics.json,
predictions.csv, plots, the summary row) are written by the writer only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils.fdd import fdd_rates
from utils.metrics import classification_report
from utils.outputs import append_summary, write_json, writing

# Columns of <results>/summary.csv, all taken from metrics.json.
SUMMARY_COLUMNS = (
    "run", "phase", "finished", "model", "data", "batch_size", "accumulation_steps", "processes", "effective_batch_size",
    "learning_rate", "loss_preset", "seed", "split_fold", "epochs_run", "optimizer_updates", "monitor", "best_val", "test_accuracy",
    "test_macro_f1", "false_alarm_rate", "detection_rate", "wall_time_s",
)  # fmt: skip


@torch.no_grad()
def evaluate(model, loader, device, autocast, runtime, num_classes: int, probabilities: bool = False) -> dict:
    """Mean cross-entropy (a fixed yardstick, whatever the training loss preset), accuracy,
    macro-F1 and the predictions, over the whole split (and the class probabilities when asked:
    the test writes them, validation does not need them)."""
    model.eval()
    losses, preds, labels, probs = [], [], [], []
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast():
            logits = model(*batch.inputs())
        losses.append(F.cross_entropy(logits.float(), batch.labels, reduction="none").double().cpu().numpy())
        preds.append(logits.argmax(-1).cpu().numpy())
        labels.append(batch.labels.cpu().numpy())
        if probabilities:  # as exp/inference.py's Predictor computes them
            probs.append(torch.softmax(logits.double(), dim=-1).cpu().numpy())
    mine = [np.concatenate(part) if part else np.zeros(shape, dtype=kind) for part, kind, shape in
            ((losses, np.float64, 0), (preds, np.int64, 0), (labels, np.int64, 0), (probs, np.float64, (0, num_classes)))]  # fmt: skip
    shards = runtime.gather(mine)  # in rank order: the shards are contiguous, so this is the split's order
    loss, y_pred, y_true, prob = (np.concatenate([shard[i] for shard in shards]) for i in range(4))
    report = classification_report(y_true, y_pred, num_classes)
    report["loss"] = float(loss.sum() / max(len(y_true), 1))
    report["y_true"], report["y_pred"], report["probs"] = y_true, y_pred, prob
    return report


def write_test_outputs(results_dir: Path, summary_path: Path, metrics: dict, predictions, title: str) -> None:
    """metrics.json, predictions.csv (the format of --predict), confusion_matrix.png and one summary.csv row (writer only)."""
    from exp.inference import write_predictions
    from utils.plots import plot_confusion_matrix

    write_json(results_dir / "metrics.json", metrics)
    write_predictions(results_dir / "predictions.csv", predictions)
    with writing(results_dir / "confusion_matrix.png"):
        plot_confusion_matrix(metrics["confusion_matrix"], metrics["class_names"], results_dir / "confusion_matrix.png", title)
    append_summary(summary_path, {k: metrics[k] for k in SUMMARY_COLUMNS})


def write_training_curves(results_dir: Path, history: list[dict], loss_name: str | None = None) -> None:
    from utils.plots import plot_training_curves

    if history:
        with writing(results_dir / "training_curves.png"):
            plot_training_curves(history, results_dir / "training_curves.png", loss_name=loss_name)


def unit_figures(report: dict, window_units: list[str], num_classes: int, normal: int | None) -> dict:
    """Per unit (log file) of a run on several logs: its test windows' accuracy, macro-F1 and fault-detection
    rates, from the test report and each window's unit (in the report's order)."""
    units = np.asarray(window_units, dtype=object)
    figures = {}
    for unit in dict.fromkeys(window_units):  # in the order of the units
        mine = units == unit
        part = classification_report(report["y_true"][mine], report["y_pred"][mine], num_classes)
        fdd = fdd_rates(part["confusion_matrix"], normal)
        figures[unit] = {"test_windows": int(mine.sum()), "test_accuracy": part["accuracy"], "test_macro_f1": part["macro_f1"],
                         "false_alarm_rate": fdd["false_alarm_rate"], "detection_rate": fdd["detection_rate"]}  # fmt: skip
    return figures


def format_unit_figures(figures: dict) -> str:
    def rate(value):
        return "-" if value is None else f"{value:.2%}"

    lines = ["Per unit (test windows)"]
    for unit, f in figures.items():
        lines.append(f"  {unit}: accuracy {f['test_accuracy']:.2%} | macro-F1 {f['test_macro_f1']:.4f} | false alarms "
                     f"{rate(f['false_alarm_rate'])} | detection {rate(f['detection_rate'])} | {f['test_windows']} windows")  # fmt: skip
    return "\n".join(lines)
