"""Checkpoint files: atomic writes, safe loading, clear refusals."""

import os
import pickle

import pytest
import torch

from utils.checkpoint import atomic_save, load_checkpoint
from utils.errors import UserError


def test_atomic_save_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "last.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    atomic_save({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.zeros(3))
    assert os.listdir(path.parent) == ["last.pt"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"model": {}, "epoch": 1}, path)
    with pytest.raises((AttributeError, pickle.PicklingError)):
        atomic_save({"model": {}, "bad": lambda: None}, path)  # cannot be pickled
    assert load_checkpoint(path)["epoch"] == 1 and os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_garbage_is_refused_with_the_file_name(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="bad.pt"):
        load_checkpoint(path)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": Boom()}, handle)
    torch.save({"model": {}, "payload": Boom()}, tmp_path / "evil2.pt")
    for evil in (path, tmp_path / "evil2.pt"):
        with pytest.raises(UserError, match="evil"):
            load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_a_plain_tensor_file_is_not_a_runner_checkpoint(tmp_path):
    torch.save(torch.ones(2), tmp_path / "t.pt")
    with pytest.raises(UserError, match="not a checkpoint of this runner"):
        load_checkpoint(tmp_path / "t.pt")
