"""No work lost, nothing corrupted, nothing run from a checkpoint, nothing leaked."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import exp.exp as exp_module
import exp.state as state_module
import utils.outputs as outputs_module
from exp.launch import main
from tests.conftest import ROOT, TINY


def run_main(tmp: Path, *flags: str) -> int:
    return main([*TINY, "--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res"), *flags])


def only(folder: Path) -> Path:
    (item,) = [p for p in folder.iterdir() if p.is_dir()]
    return item


# --------------------------------------------------------------------------- atomic checkpoints
WRITER = """
import torch
from utils.checkpoint import atomic_save
version = 0
while True:
    version += 1
    atomic_save({{"model": {{"w": torch.full((1_000_000,), float(version))}}, "version": version}}, {path!r})
    print(version, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """Kill a process that saves 4 MB checkpoints back to back, 12 times at random moments:
    the checkpoint always loads whole and holds one consistent version."""
    path = tmp_path / "last.pt"
    rng = random.Random(0)
    last_seen = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(path=str(path))], stdout=subprocess.PIPE, text=True,
                                cwd=ROOT)
        assert proc.stdout.readline()  # at least one complete save of this process
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.all(state["model"]["w"] == state["version"])  # never a mix of two versions
        assert state["version"] >= 1
        last_seen = state["version"]
    assert last_seen >= 1


@pytest.mark.slow
def test_sigkill_of_a_training_run_resumes_from_the_last_checkpoint(tmp_path):
    flags = [sys.executable, str(ROOT / "run.py"), *TINY, "--data", "Classification", "--model", "ResNet1D", "--batch_size", "2",
             "--train_epochs", "3", "--patience", "0", "--save_every_updates", "5", "--progress", "log",
             "--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]  # fmt: skip
    proc = subprocess.Popen(flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress_lines = 0
    while progress_lines < 6:  # past the first --save_every_updates checkpoint
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        progress_lines += line.startswith("Epoch 1/3 [GA:1]:")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = next((tmp_path / "ckpt").rglob("last.pt"))
    state = torch.load(last, weights_only=True)
    assert state["updates"] >= 5 and not state["finished"]
    resumed = subprocess.run([*flags, "--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout and len(torch.load(last, weights_only=True)["history"]) == 3


def test_best_checkpoint_is_never_replaced_by_a_worse_model(tmp_path, monkeypatch):
    losses = iter([3.0, 1.0, 2.0, 0.5, 4.0, 0.7])
    real_vali = exp_module.Exp.vali
    epoch_weights = []

    def scripted_vali(self, loader):
        report = real_vali(self, loader)
        if loader is self.val_loader:
            report["loss"] = next(losses)
            epoch_weights.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return report

    monkeypatch.setattr(exp_module.Exp, "vali", scripted_vali)
    assert run_main(tmp_path, "--data", "GNN", "--train_epochs", "6", "--patience", "0") == 0
    best = torch.load(only(tmp_path / "ckpt") / "best.pt", weights_only=True)
    assert best["epoch"] == 4 and best["early_stopping"]["best"] == 0.5
    assert all(torch.equal(best["model"][k], epoch_weights[3][k]) for k in best["model"])


# ---------------------------------------------------------------------------- safe loading
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/never-created")


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    global MARKER
    MARKER = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"model": {}, "args": {"model": "GNN"}, "payload": Payload()}, handle)
    code = run_main(tmp_path, "--data", "GNN", "--resume", str(evil))
    err = capsys.readouterr().err
    assert code == 2 and "refused by the safe loader" in err and len(err.strip().splitlines()) == 1
    assert not MARKER.exists()


# ------------------------------------------------------------------------- failing storage
@pytest.mark.parametrize("target, exc", [
    ("checkpoint", OSError(errno.ENOSPC, "No space left on device")),
    ("history", PermissionError(errno.EACCES, "Permission denied")),
])  # fmt: skip
def test_disk_full_or_permission_lost_names_the_path_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, target, exc):
    calls = {"n": 0}
    if target == "checkpoint":
        real = state_module.atomic_save

        def failing(state, path):
            if path.name == "last.pt":
                calls["n"] += 1
                if calls["n"] == 2:  # epoch 2's last.pt; epoch 1's stays
                    raise exc
            return real(state, path)

        monkeypatch.setattr(state_module, "atomic_save", failing)
    else:
        real = outputs_module.atomic_write

        def failing(path, write):
            if Path(path).name == "history.csv":
                calls["n"] += 1
                if calls["n"] == 2:
                    raise exc
            return real(path, write)

        monkeypatch.setattr(outputs_module, "atomic_write", failing)
    code = run_main(tmp_path, "--data", "GNN", "--train_epochs", "3", "--patience", "0", "--lr_patience", "10")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert ("last.pt" if target == "checkpoint" else "history.csv") in err[0] and exc.strerror in err[0]
    run = only(tmp_path / "ckpt")
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] >= 1  # the last complete checkpoint survives
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    assert run_main(tmp_path, "--data", "GNN", "--train_epochs", "3", "--patience", "0", "--lr_patience", "10", "--resume", "auto") == 0


# ------------------------------------------------------------------------------ long runs
def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_memory_does_not_grow_across_many_epochs(tmp_path, monkeypatch):
    samples = []
    real_vali = exp_module.Exp.vali

    def sampling_vali(self, loader):
        samples.append(rss_mb())
        return real_vali(self, loader)

    monkeypatch.setattr(exp_module.Exp, "vali", sampling_vali)
    assert run_main(tmp_path, "--data", "GNN", "--train_epochs", "60", "--patience", "0", "--batch_size", "8") == 0
    per_epoch = samples  # one validation per epoch (the test evaluates without vali)
    assert len(per_epoch) >= 60
    growth = per_epoch[-1] - per_epoch[10]
    assert growth < 20, f"RSS grew by {growth:.1f} MB from epoch 10 to epoch 60"


def children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def test_no_file_handles_or_worker_processes_leak_with_workers(tmp_path):
    fds_before, kids_before = len(os.listdir("/proc/self/fd")), children()
    for repeat in ("a", "b"):
        assert run_main(tmp_path, "--data", "Classification", "--model", "ResNet1D", "--train_epochs", "2", "--num_workers", "2",
                        "--des", repeat) == 0  # fmt: skip
    deadline = time.time() + 10
    while children() != kids_before and time.time() < deadline:
        time.sleep(0.2)
    assert children() == kids_before
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2


# ---------------------------------------------------------------------------- reproducible
@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)  # --deterministic sets a process-wide switch
    torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize("extra", [(), ("--deterministic",)])
def test_the_same_seed_gives_bitwise_identical_runs(tmp_path, extra, restore_determinism):
    flags = ("--data", "DualGAF", "--train_epochs", "2", "--batch_size", "8", "--gradient_accumulation_steps", "2", *extra)
    for name in ("a", "b"):
        assert run_main(tmp_path / name, *flags) == 0
    assert torch.are_deterministic_algorithms_enabled() == bool(extra)
    metrics = [json.loads((only(tmp_path / n / "res") / "metrics.json").read_text()) for n in ("a", "b")]
    for m in metrics:
        m.pop("wall_time_s"), m.pop("checkpoint"), m.pop("finished")  # time and folder differ, nothing else may
    assert metrics[0] == metrics[1]
    weights = [torch.load(only(tmp_path / n / "ckpt") / "last.pt", weights_only=True)["model"] for n in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = run_main(tmp_path / "c", *flags, "--seed", "7")
    assert other == 0
    assert not all(
        torch.equal(weights[0][k], v) for k, v in torch.load(only(tmp_path / "c" / "ckpt") / "last.pt", weights_only=True)["model"].items()
    )
