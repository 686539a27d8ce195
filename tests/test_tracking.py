"""--tensorboard: per-epoch scalars when tensorboard is installed, a one-line refusal before any
output when it is not."""

from __future__ import annotations

import csv
import sys

import pytest

from exp.launch import main
from tests.conftest import TINY


def test_tensorboard_gets_the_scalars_of_history_csv(tmp_path):
    pytest.importorskip("tensorboard", reason="requirements-dev.txt installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = [*TINY, "--data", "GNN", "--train_epochs", "2", "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]
    assert main([*flags, "--tensorboard"]) == 0
    (run,) = (tmp_path / "r").glob("ahu_*")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    history = list(csv.DictReader((run / "history.csv").open()))
    for column, tag in (("val_loss", "loss/validation (cross-entropy)"), ("train_loss", "loss/train (loss preset)"),
                        ("val_macro_f1", "macro_f1/validation"), ("lr", "optimizer/learning_rate"),
                        ("total_updates", "optimizer/updates"), ("effective_batch_size", "accumulation/effective_batch_size")):  # fmt: skip
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([float(row[column]) for row in history], rel=1e-5)


def test_tensorboard_missing_is_refused_before_any_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    code = main([*TINY, "--data", "GNN", "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r"), "--tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install tensorboard" in err[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()
