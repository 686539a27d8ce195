"""Interrupt training anywhere, resume from last.pt, and end with bitwise-identical weights."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from exp.exp import Exp
from tests.conftest import ROOT, TINY, make_args, subset
from utils.seed import seed_everything
from utils.signals import Interrupted

# Dropout on: resuming must also restore the random state of the dropout masks. On the CPU,
# where the promise is bitwise equality.
FLAGS = ("--device", "cpu", "--model", "ResNet1D", "--data", "Classification", "--batch_size", "4", "--gradient_accumulation_steps", "3",
         "--train_epochs", "3", "--patience", "0", "--dropout", "0.2", "--lr_scheduler", "plateau", "--lr_patience", "0")  # fmt: skip


def new_exp(tmp, data, *extra):
    args = make_args(*FLAGS, *extra, tmp=tmp)
    seed_everything(args.seed)
    return Exp(args, data)


@pytest.fixture(scope="module")
def data():
    from data_provider.data_factory import build_data

    bundle = build_data(make_args(*FLAGS))
    bundle = copy.copy(bundle)
    bundle.train = subset(bundle.train, 40)  # 10 micro-batches of 4 per epoch: windows 3 3 3 1
    return bundle


def interrupt_after(exp, micro_steps):
    """Deliver 'SIGINT' right after the given number of micro-steps."""
    original, count = exp.trainer._micro_step, {"n": 0}

    def counting(batch, step):
        count["n"] += 1
        if count["n"] == micro_steps:  # arrives during this micro-step: agreed and acted on at its end
            exp.trainer.stop.signum = signal.SIGINT
        return original(batch, step)

    exp.trainer._micro_step = counting


def final_state(exp):
    return [p.detach().clone() for p in exp.model.parameters()], exp.state.history


@pytest.mark.parametrize("mode", ["flush", "cross_epoch"])
@pytest.mark.parametrize("stop_at", [2, 10, 14, 25])  # inside a window, end of epoch 1, inside epoch 2's second window, late
def test_resume_from_any_micro_step_is_bitwise_identical(tmp_path, data, mode, stop_at):
    extra = ("--cross_epoch_accumulation",) if mode == "cross_epoch" else ()
    reference = new_exp(tmp_path / "ref", data, *extra)
    reference.train("run")
    want_weights, want_history = final_state(reference)

    first = new_exp(tmp_path / "cut", data, *extra)
    interrupt_after(first, stop_at)
    with pytest.raises(Interrupted) as stopped:
        first.train("run")
    assert stopped.value.exit_code == 130
    saved = torch.load(tmp_path / "cut" / "ckpt" / "run" / "last.pt", weights_only=True)
    assert not saved["finished"]
    if stop_at in (2, 14) or (mode == "cross_epoch" and stop_at == 10):
        assert saved["accumulation"]["position"] > 0 and saved["processes"][0]["grads"] is not None  # really mid-window

    second = new_exp(tmp_path / "cut", data, *extra, "--resume", "auto")
    second.train("run")
    got_weights, got_history = final_state(second)
    assert all(torch.equal(a, b) for a, b in zip(got_weights, want_weights))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(got_history) == strip(want_history)
    assert second.state.updates == reference.state.updates


def test_a_stop_inside_a_window_that_went_bad_records_it_and_the_resumed_run_discards_it(tmp_path, data):
    """The non-finite loss is only noted on the device; a checkpoint taken inside that window must
    still say the window is bad, and the resumed run must discard it like an uninterrupted one."""

    def poison(exp):
        original, calls = exp.model.forward, {"n": 0}

        def forward(x):
            calls["n"] += 1
            return original(x) * (float("nan") if calls["n"] == 4 else 1.0)  # epoch 1, window 2, position 1

        exp.model.forward = forward

    reference = new_exp(tmp_path / "ref", data, "--train_epochs", "1")
    poison(reference)
    reference.train("run")
    first = new_exp(tmp_path / "cut", data, "--train_epochs", "1")
    poison(first)
    interrupt_after(first, 5)  # inside the bad window, after the bad micro-batch
    with pytest.raises(Interrupted):
        first.train("run")
    saved = torch.load(tmp_path / "cut" / "ckpt" / "run" / "last.pt", weights_only=True)
    assert saved["window_bad"] == "non-finite loss in epoch 1, micro-batch 4" and saved["accumulation"]["position"] == 2
    second = new_exp(tmp_path / "cut", data, "--train_epochs", "1", "--resume", "auto")
    second.train("run")
    assert second.state.bad_windows == reference.state.bad_windows == 1 and second.state.updates == reference.state.updates == 3
    assert all(torch.equal(a, b) for a, b in zip(final_state(second)[0], final_state(reference)[0]))


def test_the_epoch_end_checkpoint_of_a_window_open_across_epochs_records_that_it_went_bad(tmp_path, data):
    exp = new_exp(tmp_path, data, "--cross_epoch_accumulation")
    original, calls = exp.model.forward, {"n": 0}

    def forward(x):
        calls["n"] += 1
        return original(x) * (float("nan") if calls["n"] == 10 else 1.0)  # epoch 1's last micro-batch, in the window 10-12

    exp.model.forward = forward

    def crash(history):
        raise KeyboardInterrupt  # the process dies right after the epoch's checkpoints

    exp.trainer.write_history = crash
    with pytest.raises(KeyboardInterrupt):
        exp.train("run")
    saved = torch.load(tmp_path / "ckpt" / "run" / "last.pt", weights_only=True)
    assert saved["accumulation"]["position"] == 1 and saved["window_bad"] == "non-finite loss in epoch 1, micro-batch 10"


def test_save_every_updates_writes_resumable_checkpoints_at_update_boundaries(tmp_path, data, monkeypatch):
    import exp.state as state_module

    saves = []
    original = state_module.atomic_save
    monkeypatch.setattr(
        state_module,
        "atomic_save",
        lambda state, path: (saves.append((path.name, state["updates"], state["processes"][0]["grads"])), original(state, path))[1],
    )
    exp = new_exp(tmp_path, data, "--save_every_updates", "2", "--train_epochs", "1")
    exp.train("run")
    mid = [(name, updates, grads) for name, updates, grads in saves if name == "last.pt"][:-1]  # the last one is the epoch end
    assert [updates for _, updates, _ in mid] == [2, 4]
    assert all(grads is None for _, _, grads in mid)  # taken right after an update: no partial window


def test_resume_refuses_a_checkpoint_of_another_effective_batch(tmp_path, data):
    from utils.errors import UserError

    new_exp(tmp_path, data, "--train_epochs", "1").train("run")
    path = str(tmp_path / "ckpt" / "run" / "last.pt")
    other = make_args(*FLAGS, "--train_epochs", "1", "--batch_size", "8", "--resume", path, tmp=tmp_path)
    with pytest.raises(UserError, match="micro-batch 4 x 3 steps x 1 process.* effective batch 12; this run has micro-batch 8 .*"
                       "effective batch 24: keep the effective batch \\(12 is not a multiple of --batch_size 8"):  # fmt: skip
        Exp(other, data).train("other")
    other = make_args(*FLAGS, "--train_epochs", "1", "--batch_size", "6", "--resume", path, tmp=tmp_path)
    with pytest.raises(UserError, match="--target_batch_size 12 keeps it with --batch_size 6 on 1 process"):
        Exp(other, data).train("other")


@pytest.mark.parametrize("stop_at", [4, 10])  # inside a window; after the epoch's last micro-batch, before its validation
def test_resume_inside_an_epoch_refuses_another_micro_batch_layout_even_with_the_same_effective_batch(tmp_path, data, stop_at):
    from utils.errors import UserError

    first = new_exp(tmp_path, data)
    interrupt_after(first, stop_at)
    with pytest.raises(Interrupted):
        first.train("run")
    other = make_args(*FLAGS, "--batch_size", "6", "--gradient_accumulation_steps", "2", "--resume", "auto", tmp=tmp_path)
    with pytest.raises(UserError, match="written inside an epoch with micro-batch 4 x 3 steps .* resume it with the same"):
        Exp(other, data).train("run")


def test_an_epoch_boundary_resume_with_another_layout_keeps_training_in_flush_mode_and_is_refused_across_epochs(tmp_path, data):
    from utils.errors import UserError

    for mode in ((), ("--cross_epoch_accumulation",)):
        folder = tmp_path / ("cross" if mode else "flush")
        new_exp(folder, data, *mode, "--train_epochs", "1").train("run")
        path = str(folder / "ckpt" / "run" / "last.pt")
        other = make_args(*FLAGS, *mode, "--train_epochs", "1", "--batch_size", "6", "--gradient_accumulation_steps", "2",
                          "--resume", path, tmp=folder)  # fmt: skip
        if mode:
            with pytest.raises(UserError, match="with --cross_epoch_accumulation .* resume it with the same"):
                Exp(other, data).train("other")
        else:
            Exp(other, data).train("other")  # a finished run: only tested, but the layout was accepted


def test_resuming_a_finished_run_only_tests(tmp_path, data, capsys):
    new_exp(tmp_path, data, "--train_epochs", "1").train("run")
    saved = torch.load(tmp_path / "ckpt" / "run" / "last.pt", weights_only=True)["model"]
    again = new_exp(tmp_path, data, "--train_epochs", "1", "--resume", "auto")
    again.train("run")
    assert "training had already finished after 1 epochs" in capsys.readouterr().out
    assert all(torch.equal(saved[name], value) for name, value in again.model.state_dict().items())
    assert len(again.state.history) == 1


def launch(tmp_path, *flags):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "run.py"), *TINY, "--progress", "log", "--checkpoints", str(tmp_path / "ckpt"),
           "--results", str(tmp_path / "res"), "--data", "Classification", "--model", "ResNet1D", "--batch_size", "2",
           "--gradient_accumulation_steps", "3", "--train_epochs", "4", "--patience", "0", *flags]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def wait_for_training(proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "Epoch 1/4 [GA:3]:" in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"training never started: {proc.stderr.read()}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_writes_a_resumable_checkpoint_and_resume_finishes(tmp_path, signum, code):
    proc = launch(tmp_path)
    wait_for_training(proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "resumable checkpoint written" in err and "--resume auto" in err and "Traceback" not in err
    run = next((tmp_path / "ckpt").iterdir())
    state = torch.load(run / "last.pt", weights_only=True)
    assert not state["finished"] and state["epoch"] == 0 and state["processes"][0]["meter"]["micro_batches"] > 0
    resumed = launch(tmp_path, "--resume", "auto")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Resumed from" in out and "Test: accuracy" in out
    metrics = json.loads((tmp_path / "res" / run.name / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4


# --window_stats: the message spells an on/off flag as it is typed (not True/False).
OTHER_SETTINGS = [("--optimizer", "sgd"), ("--learning_rate", "0.01"), ("--dropout", "0.3"), ("--max_grad_norm", "0.5"),
                  ("--window_stats", "off")]  # fmt: skip


@pytest.mark.parametrize("flag, value", OTHER_SETTINGS)
def test_resume_refuses_other_training_settings(tmp_path, data, flag, value):
    from utils.errors import UserError

    new_exp(tmp_path, data, "--train_epochs", "1").train("run")
    path = str(tmp_path / "ckpt" / "run" / "last.pt")
    with pytest.raises(UserError, match=f"{flag} .*, this run has {flag} {value}$"):
        new_exp(tmp_path, data, "--train_epochs", "1", flag, value, "--resume", path).train("other")


def test_resume_refuses_a_checkpoint_without_the_training_state(tmp_path, data):
    from utils.checkpoint import atomic_save
    from utils.errors import UserError

    new_exp(tmp_path, data, "--train_epochs", "1").train("run")
    path = tmp_path / "ckpt" / "run" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["processes"], state["early_stopping"]
    atomic_save(state, path)
    with pytest.raises(UserError, match="lacks early_stopping, processes"):
        new_exp(tmp_path, data, "--train_epochs", "1", "--resume", "auto").train("run")


def test_a_checkpoint_older_than_a_recipe_flag_resumes_at_the_value_runs_had_before_it(tmp_path, data):
    from utils.checkpoint import atomic_save
    from utils.errors import UserError

    new_exp(tmp_path, data, "--train_epochs", "1", "--augment_jitter", "0").train("run")
    path = tmp_path / "ckpt" / "run" / "last.pt"
    state = torch.load(path, weights_only=True)
    for flag in ("split_fold", "limit_train_batches", "augment_jitter"):  # flags added after checkpoints first kept their flags
        del state["args"][flag]
    atomic_save(state, path)
    with pytest.raises(UserError, match="without --augment_jitter: pass --augment_jitter 0.0 to continue it"):
        new_exp(tmp_path, data, "--train_epochs", "1", "--resume", "auto").train("run")  # ResNet1D's default jitter: 0.05
    limited = ("--train_epochs", "1", "--augment_jitter", "0", "--limit_train_batches", "5", "--resume", "auto")
    with pytest.raises(UserError, match="without --limit_train_batches: leave --limit_train_batches out to continue it"):
        new_exp(tmp_path, data, *limited).train("run")
    resumed = new_exp(tmp_path, data, "--train_epochs", "1", "--augment_jitter", "0", "--resume", "auto")
    resumed.train("run")
    assert len(resumed.state.history) == 1  # continued (a finished run: nothing left to train)
    del state["args"]["dropout"]  # a flag with no value declared for older runs
    atomic_save(state, path)
    with pytest.raises(UserError, match="older version without --dropout; start a new run"):
        new_exp(tmp_path, data, "--train_epochs", "1", "--augment_jitter", "0", "--resume", "auto").train("run")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_continues_a_run_interrupted_mid_window(tmp_path, data):
    first = new_exp(tmp_path, data, "--device", "cuda")
    interrupt_after(first, 14)
    with pytest.raises(Interrupted):
        first.train("run")
    second = new_exp(tmp_path, data, "--device", "cuda", "--resume", "auto")
    second.train("run")
    reference = new_exp(tmp_path / "ref", data, "--device", "cuda")
    reference.train("run")
    assert second.state.updates == reference.state.updates and len(second.state.history) == 3
    for a, b in zip(second.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # GPU kernels may round differently


def test_train_epochs_auto_is_sized_from_the_training_windows_and_a_resumed_run_agrees(tmp_path, data, monkeypatch):
    from config import defaults

    assert [defaults.auto_epochs(n) for n in (1408, 240, 16_000, 10**6)] == [12, 30, 3, 3]  # built-in data, LBNL SZCAV, large files
    monkeypatch.setattr(defaults, "AUTO_EPOCH_WINDOWS", 100)  # 40 windows -> ceil(2.5) = 3 epochs
    reference = new_exp(tmp_path / "ref", data, "--train_epochs", "auto", "--lr_scheduler", "cosine")
    assert reference.args.train_epochs == 3
    assert reference.policy.planned_updates() == 3 * 4  # windows 3 3 3 1 per epoch: the cosine schedule's length
    reference.train("run")
    assert [row["epoch"] for row in reference.state.history] == [1, 2, 3] and reference.state.history[-1]["lr"] == 0.0

    first = new_exp(tmp_path / "cut", data, "--train_epochs", "auto", "--lr_scheduler", "cosine")
    interrupt_after(first, 14)
    with pytest.raises(Interrupted):
        first.train("run")
    second = new_exp(tmp_path / "cut", data, "--train_epochs", "auto", "--lr_scheduler", "cosine", "--resume", "auto")
    second.train("run")
    assert all(torch.equal(a, b) for a, b in zip(final_state(second)[0], final_state(reference)[0]))
    # The same run asked for 4 epochs is another recipe, named on resume.
    with pytest.raises(Exception, match="--train_epochs 3, this run has --train_epochs 4"):
        new_exp(tmp_path / "cut", data, "--train_epochs", "4", "--resume", "auto").train("run")
