"""Data-parallel training with torchrun: 2 processes on this CPU with gloo.

Every launch has a deadline, runs in its own process group and is killed with it when the test
ends, passes or fails, so no process outlives a test. Weights are compared in float64 with SGD
(its update scales with the gradient, so any normaliser error shows).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow

WORKER = ["-m", "tests.dist_worker"]  # run from ROOT, as a module of the checkout
DEADLINE_S = 240
# float64, plain SGD, no clipping, no dropout: the large-batch reference must be met to rounding.
EXACT = ("--device", "cpu", "--dtype", "float64", "--optimizer", "sgd", "--learning_rate", "0.05", "--max_grad_norm", "0",
         "--dropout", "0", "--class_weights", "balanced", "--patience", "0", "--progress", "none")  # fmt: skip
FORMATS = [("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = DEADLINE_S) -> tuple[int, str, str]:
    """Wait within the deadline; whatever happens, nothing of the launch is left running."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate(timeout=30)  # every writer of the pipes is gone: they close
        raise AssertionError(f"launch passed its {timeout} s deadline:\n{err[-3000:]}") from None
    finally:
        kill_group(proc)
    return proc.returncode, out, err


def kill_group(proc: subprocess.Popen) -> None:
    """The launch's process group and every descendant: torchrun may start its workers in
    sessions of their own, and an orphaned worker would hold the output pipes open."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return [*found, *(d for child in found for d in descendants(child))]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--monitor_interval", "0.1", *args]


def run(tmp: Path, *flags: str, procs: int = 2, env: dict | None = None, expect: int = 0) -> tuple[str, str]:
    """run.py (through the test worker) on ``procs`` processes; returns stdout and stderr."""
    outputs = ["--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")]
    launcher = torchrun("--standalone", "--nproc_per_node", str(procs)) if procs > 1 else [sys.executable]
    code, out, err = finish(start([*launcher, *WORKER, *TINY, *flags, *outputs], env))
    if procs > 1 and expect:  # torchrun itself exits with 1 and reports each worker's code
        assert code == 1 and f"exitcode  : {expect} " in err, err[-4000:]
    else:
        assert code == expect, f"exit {code}:\n{err[-4000:]}"
    return out, err


def only_run(folder: Path) -> Path:
    (run_dir,) = list(folder.iterdir())
    return run_dir


def last(tmp: Path) -> dict:
    return torch.load(only_run(tmp / "ckpt") / "last.pt", weights_only=True)


def flat(state: dict) -> np.ndarray:
    return np.concatenate([t.double().numpy().ravel() for t in state["model"].values()])


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def record(tmp: Path, rank: int = 0) -> dict:
    return json.loads(Path(f"{tmp}/record.{rank}.json").read_text())


# ------------------------------------------------------------- exactness and communication
@pytest.mark.parametrize("data_format, model", FORMATS)
def test_two_processes_train_exactly_like_one_process_with_twice_the_micro_batch(tmp_path, data_format, model):
    """41 training windows, global micro-batch 8: the last one holds 1 window, so the second
    process has nothing of it and joins the all-reduce with a zero-weight stand-in."""
    common = (*EXACT, "--data", data_format, "--model", model, "--gradient_accumulation_steps", "2", "--train_epochs", "2")
    env = {"WORKER_N_TRAIN": "41", "WORKER_OUT": str(tmp_path / "two" / "record")}
    out, _ = run(tmp_path / "two", *common, "--batch_size", "4", env=env)
    run(tmp_path / "one", *common, "--batch_size", "8", procs=1, env={"WORKER_N_TRAIN": "41"})
    two, one = last(tmp_path / "two"), last(tmp_path / "one")
    assert relative_difference(flat(two), flat(one)) < 1e-9
    assert two["updates"] == one["updates"] == 2 * 3  # ceil(6 micro-batches / 2) per epoch
    assert [row["val_loss"] for row in two["history"]] == pytest.approx([row["val_loss"] for row in one["history"]], rel=1e-9)
    assert "micro-batch 4 x 2 accumulation steps x 2 processes = effective batch 16" in out
    assert [(r["effective_batch_size"], r["processes"]) for r in two["history"]] == [(16, 2)] * 2
    # One gradient all-reduce per optimizer update, always on a window's last micro-batch.
    for rank in (0, 1):
        counts = record(tmp_path / "two", rank)
        assert counts["micro_steps"] == 12 and counts["allreduces"] == two["updates"]
        assert set(counts["positions"]) == {0}  # the policy had just closed the window


def test_a_model_with_unused_parameters_stays_exact_with_one_all_reduce_per_update(tmp_path):
    """The unused parameter keeps no gradient, as on one process: SGD's weight decay and
    momentum leave it at its ones (a zero gradient would let the decay shrink it)."""
    common = (*EXACT, "--data", "Classification", "--model", "ResNet1D", "--gradient_accumulation_steps", "3", "--train_epochs", "1",
              "--weight_decay", "0.1")  # fmt: skip
    env = {"WORKER_N_TRAIN": "40", "WORKER_UNUSED": "1", "WORKER_OUT": str(tmp_path / "two" / "record")}
    out, _ = run(tmp_path / "two", *common, "--batch_size", "2", env=env)
    run(tmp_path / "one", *common, "--batch_size", "4", procs=1, env={"WORKER_N_TRAIN": "40", "WORKER_UNUSED": "1"})
    two, one = last(tmp_path / "two"), last(tmp_path / "one")
    assert "gradients all-reduced once per optimizer update" in out
    assert relative_difference(flat(two), flat(one)) < 1e-9
    assert torch.equal(two["model"]["never_used"], torch.ones(3, dtype=torch.float64))
    assert record(tmp_path / "two")["allreduces"] == two["updates"] == 4  # 10 global micro-batches of 4, windows of 3


@pytest.mark.parametrize("calls", [2, 4])  # process 1 runs out in the last micro-batch of window 1; mid-window 2
def test_out_of_memory_on_one_process_shrinks_the_micro_batch_on_both_and_keeps_the_weights(tmp_path, calls):
    """Process 1 runs out of memory; both redo the window with micro-batches of 2 and 6 steps
    (effective batch 24 kept) and end with the weights of one process trained on the same
    global micro-batches (4 = 2 x 2) from the start."""
    common = (*EXACT, "--data", "Classification", "--model", "ResNet1D", "--train_epochs", "2")
    env = {"WORKER_N_TRAIN": "45", "WORKER_OOM": f"1:2:{calls}"}
    out, err = run(tmp_path / "two", *common, "--batch_size", "4", "--gradient_accumulation_steps", "3", env=env)
    assert out.count("out of memory") == 1 and "Traceback" not in err
    assert (f"out of memory on process 1 in epoch 1, micro-batch {calls + 1} (--batch_size 4): going on with micro-batch 2 x 6 "
            "steps, effective batch 24 kept") in out  # fmt: skip
    run(tmp_path / "one", *common, "--batch_size", "4", "--gradient_accumulation_steps", "6", procs=1, env={"WORKER_N_TRAIN": "45"})
    two, one = last(tmp_path / "two"), last(tmp_path / "one")
    assert relative_difference(flat(two), flat(one)) < 1e-9
    assert two["updates"] == one["updates"] == 2 * 2  # ceil(12 global micro-batches / 6) per epoch
    assert two["layout"] == {"batch_size": 2, "steps": 6, "world_size": 2, "effective_batch_size": 24}
    assert [r["batch_size"] for r in two["history"]] == [2, 2]


# ------------------------------------------------------------------------ stop and resume
def test_a_signal_on_one_process_stops_both_inside_a_window_and_the_resumed_run_matches(tmp_path):
    common = (*EXACT[:-8], "--dropout", "0.2", "--patience", "0", "--progress", "none", "--data", "Classification",
              "--model", "ResNet1D", "--batch_size", "2", "--gradient_accumulation_steps", "3", "--train_epochs", "2")  # fmt: skip
    env = {"WORKER_N_TRAIN": "40"}
    run(tmp_path / "whole", *common, env=env)
    _, err = run(tmp_path / "cut", *common, env={**env, "WORKER_STOP": "1:4"}, expect=130)
    assert err.count("SIGINT received: resumable checkpoint written") == 2  # both processes stopped, at the same micro-batch
    cut = last(tmp_path / "cut")
    assert cut["accumulation"]["position"] == 1 and len(cut["processes"]) == 2  # inside the second window
    assert all(p["grads"] is not None for p in cut["processes"])  # each process's own partial gradients
    out, _ = run(tmp_path / "cut", *common, "--resume", "auto", env=env)
    assert "inside an accumulation window (1/3)" in out
    whole, resumed = last(tmp_path / "whole"), last(tmp_path / "cut")
    assert relative_difference(flat(resumed), flat(whole)) < 1e-12
    assert [r["train_loss"] for r in resumed["history"]] == pytest.approx([r["train_loss"] for r in whole["history"]], rel=1e-12)


def test_an_epoch_checkpoint_of_two_processes_resumes_on_one_with_the_same_target_batch(tmp_path):
    common = (*EXACT, "--data", "Classification", "--model", "ResNet1D", "--batch_size", "4", "--target_batch_size", "16",
              "--train_epochs", "3")  # fmt: skip
    env = {"WORKER_N_TRAIN": "44"}
    run(tmp_path / "whole", *common, env=env)
    run(tmp_path / "cut", *common, env={**env, "WORKER_STOP": "0:epoch"}, expect=130)
    assert last(tmp_path / "cut")["epoch"] == 1
    out, _ = run(tmp_path / "cut", *common, "--resume", "auto", procs=1, env=env)  # the same run name: no steps in it
    assert "Resuming on 1 process(es) a checkpoint of 2: steps recomputed, effective batch 16 kept" in out
    whole, resumed = last(tmp_path / "whole"), last(tmp_path / "cut")
    assert [(r["processes"], r["accumulation_steps"], r["effective_batch_size"]) for r in resumed["history"]] == [
        (2, 2, 16), (1, 4, 16), (1, 4, 16)]  # fmt: skip
    assert resumed["updates"] == whole["updates"] == 3 * 3  # ceil(44 / 16) per epoch, on 2 processes or 1
    assert relative_difference(flat(resumed), flat(whole)) < 1e-9
    # Another effective batch is refused, naming the way to keep it.
    path = str(only_run(tmp_path / "cut" / "ckpt") / "last.pt")
    _, err = run(tmp_path / "other", *common[:-6], "--batch_size", "4", "--gradient_accumulation_steps", "2",
                 "--train_epochs", "3", "--resume", path, procs=1, env=env, expect=2)  # fmt: skip
    assert err.count("\n") == 1 and "effective batch 16" in err and "--target_batch_size 16" in err


# ------------------------------------------------------------------------- failing peers
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_crashed_or_hung_process_makes_the_other_exit_with_one_line(tmp_path, mode):
    """Two processes started by hand (torchrun would kill the survivor itself): the survivor
    must not wait forever, whatever happened to its peer."""
    port, flags = str(free_port()), [*TINY, *EXACT, "--data", "Classification", "--model", "ResNet1D", "--batch_size", "2",
                                     "--train_epochs", "2", "--dist_timeout", "5", "--checkpoints", str(tmp_path / "c"),
                                     "--results", str(tmp_path / "r")]  # fmt: skip
    base = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORKER_CRASH": f"1:3:{mode}"}
    procs = [start([sys.executable, *WORKER, *flags], {**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    try:
        began = time.monotonic()
        code, _, err = finish(procs[0], timeout=60)
        assert time.monotonic() - began < 55
        assert code == 4, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "another process of this run failed or did not answer within --dist_timeout 5 s" in lines[0]
    finally:
        kill_group(procs[1])


def test_a_peer_that_never_starts_ends_the_set_up_within_the_timeout_with_one_line(tmp_path):
    flags = [*TINY, "--train_epochs", "1", "--dist_timeout", "3", "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    began = time.monotonic()
    code, _, err = finish(start([sys.executable, str(ROOT / "run.py"), *flags], env), timeout=60)
    assert code == 4 and time.monotonic() - began < 30, err
    assert err.strip().count("\n") == 0 and "process group was not set up within --dist_timeout 3 s" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


def test_processes_started_with_different_flags_are_refused_by_all(tmp_path):
    port = str(free_port())
    base = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    flags = [*TINY, *EXACT, "--data", "Classification", "--model", "ResNet1D", "--train_epochs", "1", "--dist_timeout", "20",
             "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]  # fmt: skip
    procs = [start([sys.executable, str(ROOT / "run.py"), *flags, "--learning_rate", lr], {**base, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r, lr in ((0, "0.05"), (1, "0.01"))]  # fmt: skip
    results = [finish(proc, timeout=120) for proc in procs]
    for code, _, err in results:
        assert code == 2, err
        assert (
            err.strip().count("\n") == 0
            and "process 1 has --learning_rate 0.01, process 0 has 0.05" in err
            and "the same flags and data" in err
        )
    assert not (tmp_path / "c").exists()


def test_a_fast_dev_run_under_torchrun_passes_on_every_process_and_leaves_nothing(tmp_path):
    """Each process makes its own temporary folder (the writer's gets the files) and removes it."""
    flags = [*TINY, "--fast_dev_run", "4", "--gradient_accumulation_steps", "3", "--dist_timeout", "60"]
    cmd = [*torchrun("--standalone", "--nproc_per_node", "2"), str(ROOT / "run.py"), *flags]
    code, out, err = finish(start(cmd, {"TMPDIR": str(tmp_path)}), timeout=180)
    assert code == 0, err[-4000:]
    (line,) = [line for line in out.splitlines() if line.startswith("smoke run passed")]  # the writer prints it
    assert "4 micro-batches x 1 epoch(s) -> 2 optimizer update(s) (1 window of 3 + 1 flushed of 1)" in line
    assert "last.pt resumable" in line and not list(tmp_path.glob("fast_dev_run_*"))


# --------------------------------------------------------------- torchrun restarts and nodes


def test_sigkill_of_a_worker_under_torchrun_max_restarts_resumes_to_the_same_weights(tmp_path):
    flags = [*TINY, *EXACT, "--data", "Classification", "--model", "ResNet1D", "--batch_size", "4",
             "--target_batch_size", "16", "--train_epochs", "3", "--save_every_updates", "4", "--dist_timeout", "20",
             "--resume", "auto", "--checkpoints", str(tmp_path / "kill" / "ckpt"), "--results", str(tmp_path / "kill" / "res")]  # fmt: skip
    # After a restart gloo's connect occasionally fails ('connectFullMesh ... Connection refused') or waits forever on
    # a peer; the set-up deadline (--dist_timeout) then ends the group and torchrun restarts it once more.
    proc = start([*torchrun("--standalone", "--nproc_per_node", "2", "--max_restarts", "3"), str(ROOT / "run.py"), *flags])
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not list((tmp_path / "kill" / "ckpt").glob("*/last.pt")):  # the first mid-epoch checkpoint
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before a checkpoint appeared"
            time.sleep(0.02)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        code, out, err = finish(proc)
    finally:
        kill_group(proc)
    assert code == 0, err[-3000:]
    assert out.count("Resumed from") == 1  # torchrun restarted the group once, and it resumed
    one = ["--checkpoints", str(tmp_path / "one" / "ckpt"), "--results", str(tmp_path / "one" / "res")]
    finish(start([sys.executable, str(ROOT / "run.py"), *flags[:-6], *one]))
    killed, whole = last(tmp_path / "kill"), last(tmp_path / "one")
    assert killed["finished"] and killed["updates"] == whole["updates"]
    assert relative_difference(flat(killed), flat(whole)) < 1e-9


def test_two_torchrun_launchers_as_two_nodes_train_like_one_process(tmp_path):
    common = [*TINY, *EXACT, "--data", "GNN", "--model", "GNN", "--gradient_accumulation_steps", "2", "--train_epochs", "1"]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        start([*torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), "--rdzv_backend", "c10d",
                         "--rdzv_endpoint", endpoint, "--rdzv_id", "nodes-test"), str(ROOT / "run.py"), *common,
               "--batch_size", "2", "--checkpoints", str(tmp_path / "two" / "ckpt"), "--results", str(tmp_path / "two" / "res")])
        for rank in (0, 1)
    ]  # fmt: skip
    try:
        results = [finish(node) for node in nodes]
    finally:
        for node in nodes:
            kill_group(node)
    assert [code for code, *_ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    one = ["--checkpoints", str(tmp_path / "one" / "ckpt"), "--results", str(tmp_path / "one" / "res")]
    code, *_ = finish(start([sys.executable, str(ROOT / "run.py"), *common, "--batch_size", "4", *one]))
    assert code == 0
    assert relative_difference(flat(last(tmp_path / "two")), flat(last(tmp_path / "one"))) < 1e-9
