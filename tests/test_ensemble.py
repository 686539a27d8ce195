"""--itr K --ensemble: the repeats' best models tested together, on the mean of their class
probabilities (the predict side, --checkpoint A,B, is tested in test_trained_model.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_provider.data_factory import build_data
from exp.evaluation import evaluate
from exp.exp import Exp
from exp.launch import main
from tests.conftest import TINY, make_args

FLAGS = ["--data", "Classification", "--train_epochs", "2", "--dropout", "0"]


def test_itr_ensemble_scores_the_mean_probabilities_of_the_repeats_best_models(tmp_path, capsys):
    outputs = ["--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]
    assert main([*TINY, *FLAGS, "--itr", "2", "--ensemble", *outputs]) == 0
    assert "Ensemble of 2 repeats (mean probabilities)" in capsys.readouterr().out
    runs = sorted(p for p in (tmp_path / "res").iterdir() if p.is_dir())
    ensemble = json.loads((runs[0] / "ensemble.json").read_text())
    table = pd.read_csv(runs[0] / "ensemble_predictions.csv")
    singles = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert ensemble["runs"] == [s["run"] for s in singles] and ensemble["seeds"] == [2021, 2022]
    assert ensemble["members_test_macro_f1"] == [s["test_macro_f1"] for s in singles]

    # Reference: each repeat's best.pt read back and evaluated on the test windows, then averaged here.
    members = []
    for seed, single in zip((2021, 2022), singles):
        args = make_args(*FLAGS, "--seed", str(seed), tmp=tmp_path)
        exp = Exp(args, build_data(args))
        exp.load(tmp_path / "ckpt" / single["run"] / "best.pt")
        report = evaluate(exp.bare_model, exp.test_loader, exp.device, exp.trainer.autocast, exp.runtime, exp.data.num_classes,
                          probabilities=True)  # fmt: skip
        members.append(report["probs"])
    mean, y_true = np.mean(members, axis=0), report["y_true"]
    names = np.array(ensemble["class_names"])
    assert (table["predicted_class"] == names[mean.argmax(1)]).all() and (table["true_class"] == names[y_true]).all()
    np.testing.assert_allclose(table["probability"], mean.max(1), atol=1e-6)
    assert ensemble["test_accuracy"] == pytest.approx(float((mean.argmax(1) == y_true).mean()))
    assert np.array(ensemble["confusion_matrix"]).sum() == len(y_true)
    assert not all((m.argmax(1) == mean.argmax(1)).all() for m in members)  # the mean is not just one repeat's answer
