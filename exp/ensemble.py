"""Ensembles of trained models: the mean of their class probabilities.

``--itr K --ensemble`` tests the K repeats' best models together after training them;
``--predict --checkpoint A.pt,B.pt`` applies several checkpoints to a new log. Averaging
probabilities (not votes) keeps ties rare and keeps the output a probability, so the
prediction table and the fault-detection report read as for one model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exp.inference import prediction_table, write_predictions
from utils.errors import UserError
from utils.fdd import diagnosis_fields, format_report
from utils.metrics import classification_report
from utils.outputs import write_json

# What members must share to be averaged: the same raw sensors in the same order, the same classes,
# the same window on the same sampling grid. Each member keeps its own model, format and derived channels.
SHARED = ("channels", "class_names", "window", "interval_s")


def check_members(deployments: list[dict], paths: list[Path]) -> None:
    """Refuse, naming the first that differs, checkpoints that cannot be averaged."""
    first = deployments[0]
    for deployment, path in zip(deployments[1:], paths[1:]):
        differs = [key for key in SHARED if deployment[key] != first[key]]
        if differs:
            raise UserError(f"--checkpoint: {path} differs from {paths[0]} in its {differs[0]} ({', '.join(SHARED)} must be the same "
                            "to average the models)")  # fmt: skip


def mean_probabilities(members: list[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(members), axis=0)


def score_ensemble(members: list[dict], probs: list[np.ndarray], y_true: np.ndarray, class_names: list[str], normal: int | None,
                   bounds: tuple[list, list], results_dir: Path) -> dict:  # fmt: skip
    """Score the mean probabilities of the repeats (``members``: their test metrics) on the test
    windows (``bounds``: where they start and end); write ensemble.json and ensemble_predictions.csv."""
    mean = mean_probabilities(probs)
    report = classification_report(y_true, mean.argmax(1), len(class_names))
    singles = [m["test_macro_f1"] for m in members]
    metrics = {
        "runs": [m["run"] for m in members],
        "seeds": [m["seed"] for m in members],
        "checkpoints": [m["checkpoint"] for m in members],
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
        "members_test_macro_f1": singles,
        **diagnosis_fields(report, class_names, normal),
    }
    write_json(results_dir / "ensemble.json", metrics)
    write_predictions(results_dir / "ensemble_predictions.csv", prediction_table(*bounds, mean, class_names, y_true))
    print(format_report(report, class_names, normal), flush=True)
    print(f"Ensemble of {len(members)} repeats (mean probabilities): accuracy {report['accuracy']:.2%} | macro-F1 "
          f"{report['macro_f1']:.4f} (the repeats alone: {np.mean(singles):.4f} on average) -> {results_dir / 'ensemble.json'}",
          flush=True)  # fmt: skip
    return metrics
