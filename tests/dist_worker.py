"""run.py with test instruments, for the multi-process tests: ``torchrun ... -m tests.dist_worker FLAGS``
(from the checkout's root).

It runs ``exp.launch.main(FLAGS)`` unchanged, after these optional patches (environment variables):

* ``WORKER_N_TRAIN=n``: the training split cut to n windows spread over the classes (a data set
  size the test chooses, e.g. one whose last global micro-batch is smaller than the processes).
* ``WORKER_OUT=path``: each process writes ``path.<rank>.json`` at the end with the number of
  gradient all-reduces (the runner's, and DDP's own through a communication hook) and the
  accumulation position at each.
* ``WORKER_STOP=rank:n``: that process receives SIGINT after its n-th micro-step (``rank:epoch``:
  at the end of the first epoch, before its checkpoint).
* ``WORKER_CRASH=rank:n:exit|hang``: that process dies (or hangs) after its n-th micro-step.
* ``WORKER_UNUSED=1``: the model gets a parameter (of ones) that no forward uses.
* ``WORKER_OOM=rank:size:calls``: on that process, from training forward call ``calls`` on, a
  micro-batch of more than ``size`` windows raises ``torch.OutOfMemoryError``.
* ``WORKER_ALWAYS_SYNC=1``: no ``no_sync``: DDP all-reduces inside every backward (the naive
  loop, for ``benchmarks/ddp_overhead.py``) and the runner's own all-reduce is left out.
* ``WORKER_DDP_LAST=1``: DDP all-reduces inside the backward of a window's last micro-batch
  (overlapped with it) instead of the runner's flat all-reduce after it (for the benchmark;
  without out-of-memory recovery across processes).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spec(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return value.split(":") if value else None


def install(rank: int) -> dict:
    """Apply the patches the environment asks for; returns the counters the hooks fill."""
    import torch

    import exp.exp as exp_module
    import exp.launch as launch_module
    import exp.runtime as runtime_module
    import exp.trainer as trainer_module

    record = {"allreduces": 0, "positions": [], "micro_steps": 0}
    if os.environ.get("WORKER_N_TRAIN"):
        from tests.conftest import subset

        real_build, n = launch_module.build_data, int(os.environ["WORKER_N_TRAIN"])

        def build_data(args):
            data = copy.copy(real_build(args))
            data.train = subset(data.train, n)
            return data

        launch_module.build_data = build_data  # the data the launch builds once for every repeat

    if os.environ.get("WORKER_UNUSED"):
        real_model = exp_module.build_model

        def build_model(name, args, dims):
            model = real_model(name, args, dims)
            model.never_used = torch.nn.Parameter(torch.ones(3))  # no RNG drawn: the other weights stay the same
            return model

        exp_module.build_model = build_model

    if _spec("WORKER_OOM") and int(_spec("WORKER_OOM")[0]) == rank:
        _, size, after = map(int, _spec("WORKER_OOM"))
        real_model = exp_module.build_model

        def build_model(name, args, dims):
            model = real_model(name, args, dims)
            original, calls = model.forward, {"n": 0}

            def forward(*inputs):
                calls["n"] += model.training
                if model.training and calls["n"] > after and inputs[0].shape[0] > size:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return original(*inputs)

            model.forward = forward
            return model

        exp_module.build_model = build_model

    real_wrap, real_average = runtime_module.Distributed.wrap, runtime_module.Distributed.average_gradients
    holder = {}

    def count(ddp_state=None, bucket=None) -> None:
        if bucket is None or bucket.index() == 0:  # one all-reduce round, however many buckets it has
            record["allreduces"] += 1
            record["positions"].append(holder["policy"].position)

    def wrap(self, model):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp = real_wrap(self, model)

        def counting(state, bucket):  # DDP's own all-reduce (only without no_sync)
            count(state, bucket)
            return default_hooks.allreduce_hook(state, bucket)

        ddp.register_comm_hook(None, counting)
        return ddp

    def average_gradients(self, params):
        count()
        real_average(self, params)

    runtime_module.Distributed.wrap = wrap
    runtime_module.Distributed.average_gradients = average_gradients
    if os.environ.get("WORKER_ALWAYS_SYNC"):
        runtime_module.Distributed.local_backward = lambda self, model: runtime_module.contextlib.nullcontext()
        runtime_module.Distributed.average_gradients = lambda self, params: None
    if os.environ.get("WORKER_DDP_LAST"):  # the policy has just closed the window at its last micro-batch
        runtime_module.Distributed.local_backward = lambda self, model: (
            runtime_module.contextlib.nullcontext() if holder["policy"].position == 0 else model.no_sync()
        )
        runtime_module.Distributed.average_gradients = lambda self, params: None

    stop, crash = _spec("WORKER_STOP"), _spec("WORKER_CRASH")
    real_step, real_run_epoch = trainer_module.Trainer._micro_step, trainer_module.Trainer.run_epoch

    def micro_step(self, batch, step):
        holder["policy"] = self.policy
        if stop and int(stop[0]) == rank and stop[1] != "epoch" and record["micro_steps"] + 1 == int(stop[1]):
            self.stop.signum = signal.SIGINT  # as if it arrived during this micro-step: agreed at its end
        signum = real_step(self, batch, step)
        record["micro_steps"] += 1
        if crash and int(crash[0]) == rank and record["micro_steps"] == int(crash[1]):
            if crash[2] == "exit":
                os._exit(9)
            time.sleep(3600)
        return signum

    def run_epoch(self):
        if stop and int(stop[0]) == rank and stop[1] == "epoch":
            real_validate = self.validate

            def validate():
                self.stop.signum = signal.SIGINT  # seen after the epoch's checkpoints: an epoch-boundary stop
                return real_validate()

            self.validate = validate
        real_run_epoch(self)

    trainer_module.Trainer._micro_step = micro_step
    trainer_module.Trainer.run_epoch = run_epoch
    return record


def main() -> int:
    rank = int(os.environ.get("RANK", "0"))
    record = install(rank)
    from exp.launch import main as run_main

    code = run_main(sys.argv[1:])
    if os.environ.get("WORKER_OUT"):
        Path(f"{os.environ['WORKER_OUT']}.{rank}.json").write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    from exp.launch import exit_process

    exit_process(main())
