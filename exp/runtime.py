"""The processes a run is made of: one (``python run.py``) or several (``torchrun ... run.py``).

The training loop talks to one small object: its rank, whether it is the one process that
writes files and prints, the context that keeps a backward pass local (``no_sync``), the
gradient all-reduce of a finished window, and a few collectives (agree on flags, gather,
broadcast, sum). ``SingleProcess`` does nothing at all: a plain run creates no process group.
``Distributed`` uses ``torch.distributed`` and ``DistributedDataParallel``; every collective
runs under ``--dist_timeout``.

Every backward runs under ``no_sync``, and a window's gradients are all-reduced in one flat
collective once every process has said that its micro-batch finished. DDP's own all-reduce
inside the backward would overlap communication with the backward, but a process that ran out
of memory halfway through a synchronising backward leaves the others waiting in it: with the
all-reduce outside, every process learns of the out-of-memory first and all of them go on with
smaller micro-batches (``exp/trainer.py``). A parameter that no process used keeps no
gradient, as on one process, so no model needs ``find_unused_parameters``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import sys
import threading

import torch

from utils.errors import OutputError, UserError
from utils.launcher import launched_world_size
from utils.outputs import writing

# torchrun sets these for every worker it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerFailure(Exception):
    """Another process of the run crashed, hung past --dist_timeout or lost its connection."""

    exit_code = 4

    def __init__(self, exc: BaseException, timeout_s: float | None = None):
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        what = "failed" if timeout_s is None else f"failed or did not answer within --dist_timeout {timeout_s:g} s"
        super().__init__(
            f"error: another process of this run {what} ({detail}); the last complete checkpoint is kept, continue with --resume auto"
        )


def is_peer_failure(exc: BaseException) -> bool:
    """A communication error (gloo and NCCL raise plain RuntimeErrors), not a bug of ours."""
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(exc, dist_error):
        return True
    return isinstance(exc, RuntimeError) and bool(
        re.search(r"gloo|nccl|Connection (closed|reset)|[Tt]imed out|[Tt]imeout|ProcessGroup|Broken pipe", str(exc))
    )


def attempt_store(world_size: int, timeout: datetime.timedelta):
    """The store of this torchrun attempt, or None outside torchrun's agent store.

    torchrun keeps one TCPStore server for every restart of the group, but ``init_process_group``
    adds no per-restart prefix (it assumes a new store per restart). The previous attempt's
    addresses are then still in the store, and gloo connects to processes that are gone
    ('Connection refused') or waits forever. Every attempt gets keys of its own. The attempt
    number is each launcher's own restart count: on several nodes a launcher that re-joins
    without restarting its workers does not count, so multi-node restarts are not covered."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    import torch.distributed as dist

    shared = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"runner/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", shared)


def leave_at_once(code: int) -> None:
    """Exit now, output flushed, without the interpreter's teardown: after a peer failure the broken
    process group's threads can abort it ('terminate called without an active exception', exit -6)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def set_up_deadline(timeout_s: float):
    """gloo's connection of every pair of processes does not honour the timeout: after a torchrun
    restart it was seen waiting forever on a peer that never connected. Past ``timeout_s`` the
    process leaves with exit code 4, so torchrun restarts the group (or reports the failure)."""

    def give_up():
        print(f"error: the process group was not set up within --dist_timeout {timeout_s:g} s (a peer never connected)",
              file=sys.stderr)  # fmt: skip
        leave_at_once(PeerFailure.exit_code)

    timer = threading.Timer(timeout_s, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available on this machine (use --device cpu)")
    return torch.device(name)


class SingleProcess:
    """One process: every method is the identity or does nothing."""

    rank, world_size, local_rank, distributed = 0, 1, 0, False

    @property
    def is_writer(self) -> bool:
        """The one process that writes checkpoints, results and the progress bar."""
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        return resolve_device(requested)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def local_backward(self, model):
        """Inside: forward and backward stay local; ``average_gradients`` all-reduces them."""
        return contextlib.nullcontext()

    def agree(self, *values: int) -> tuple[int, ...]:
        """The maximum of each value over all processes: one decision everywhere."""
        return values

    def sum(self, values: list[float]) -> list[float]:
        return list(values)

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order, on every process."""
        return [obj]

    def gather_to_writer(self, obj) -> list | None:
        """Every process's ``obj`` on the writer (None elsewhere)."""
        return [obj]

    def from_writer(self, fn):
        """Run ``fn`` on the writer and hand its result to every process; a UserError it
        raises is raised on every process."""
        return fn()

    def write(self, path, fn) -> None:
        """Run ``fn`` (which writes ``path``) on the writer only; every process learns whether it
        failed, so none waits for a process that has stopped."""
        failure = None
        if self.is_writer:
            try:
                with writing(path):
                    fn()
            except Exception as exc:  # whatever it was, the others must hear of it before it propagates
                failure = exc
        (failed,) = self.agree(int(failure is not None))
        if failure is not None:
            raise failure
        if failed:
            raise OutputError(path, OSError(errno.EIO, "the writing process (rank 0) could not write it"))

    def average_gradients(self, params) -> None:
        """Every process's gradients averaged, once per window (after its last backward)."""

    def close(self, wait_s: float = 0.0) -> None:
        pass


class Distributed(SingleProcess):
    """Several processes started by torchrun (one node or several)."""

    distributed = True

    def __init__(self, backend: str, timeout_s: float, device_request: str):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self._device = self._pick_device(device_request)
        if backend == "auto":
            backend = "nccl" if self._device.type == "cuda" else "gloo"
        self.backend = backend
        self.timeout = datetime.timedelta(seconds=timeout_s)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        kwargs = {"device_id": self._device} if self._device.type == "cuda" else {}
        store = attempt_store(self.world_size, self.timeout)
        if store is not None:
            kwargs.update(store=store, rank=self.rank, world_size=self.world_size)
        with set_up_deadline(timeout_s):
            dist.init_process_group(backend, timeout=self.timeout, **kwargs)
            # Gradient-free collectives (flags, gathers) go through gloo on the CPU whatever the
            # backend: they are tiny, and NCCL would need a device copy and a stream sync for each.
            self.cpu_group = dist.new_group(backend="gloo", timeout=self.timeout) if backend != "gloo" else None

    def _pick_device(self, requested: str) -> torch.device:
        """Each process takes the GPU of its LOCAL_RANK; --device only says CPU or CUDA."""
        if requested.startswith("cuda:") or requested == "mps":
            raise UserError(f"--device {requested}: under torchrun every process takes its own GPU (LOCAL_RANK); use --device cuda or auto")
        if resolve_device(requested).type == "cpu":  # refuses cuda on a machine without CUDA
            return torch.device("cpu")
        if self.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {self.local_rank + 1}+ processes on a node with {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", self.local_rank)

    def device(self, requested: str) -> torch.device:
        return self._device

    def wrap(self, model):
        """DDP around the model: the same initial weights everywhere, buffers (BatchNorm
        statistics) broadcast from process 0 at every forward. Its backward stays local
        (``local_backward``); ``average_gradients`` all-reduces."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self._device.index] if self._device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def local_backward(self, model):
        return model.no_sync()

    def agree(self, *values: int) -> tuple[int, ...]:
        flags = torch.tensor(values, dtype=torch.int64)
        self._on_cpu(self.dist.all_reduce, flags, op=self.dist.ReduceOp.MAX)
        return tuple(int(v) for v in flags)

    def sum(self, values: list[float]) -> list[float]:
        total = torch.tensor(values, dtype=torch.float64)
        self._on_cpu(self.dist.all_reduce, total)
        return total.tolist()

    def gather(self, obj) -> list:
        out = [None] * self.world_size
        self._on_cpu(self.dist.all_gather_object, out, obj)
        return out

    def gather_to_writer(self, obj) -> list | None:
        out = [None] * self.world_size if self.is_writer else None
        self._on_cpu(self.dist.gather_object, obj, out, dst=0)
        return out

    def from_writer(self, fn):
        box, failure = [None], None
        if self.is_writer:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # told to the others before it propagates here
                failure, box[0] = exc, ("user" if isinstance(exc, UserError) else "failed", str(exc))
        self._on_cpu(self.dist.broadcast_object_list, box, src=0)
        kind, value = box[0]
        if failure is not None:
            raise failure
        if kind == "user":
            raise UserError(value)
        if kind == "failed":
            raise PeerFailure(RuntimeError(f"process 0: {value}"))
        return value

    def average_gradients(self, params) -> None:
        """One flat all-reduce per dtype. A parameter without a gradient here takes part with
        zeros, and one without a gradient on every process keeps none (the optimizer then
        leaves it alone, as on one process)."""
        groups: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            if p.requires_grad:
                groups.setdefault(p.dtype, []).append(p)
        for group in groups.values():
            held = torch.tensor([float(p.grad is not None) for p in group], dtype=group[0].dtype, device=group[0].device)
            flat = torch.cat([*((p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group), held])
            self.dist.all_reduce(flat)
            flat.div_(self.world_size)
            sizes = [p.numel() for p in group]
            for p, grad, held_anywhere in zip(group, flat[: sum(sizes)].split(sizes), flat[sum(sizes) :].tolist()):
                if not held_anywhere:
                    p.grad = None
                elif p.grad is None:
                    p.grad = grad.view_as(p).clone()
                else:
                    p.grad.copy_(grad.view_as(p))

    def _on_cpu(self, collective, *args, **kwargs):
        if self.cpu_group is not None:
            kwargs["group"] = self.cpu_group
        collective(*args, **kwargs)

    def close(self, wait_s: float = 0.0) -> None:
        """Tear the group down. After a clean end every process first waits (at most ``wait_s``)
        for the others, so none closes its connections while a peer still talks to it (gloo
        aborts on that); after a failure it leaves at once."""
        if self.dist.is_initialized():
            with contextlib.suppress(Exception):  # the group may be broken already (a peer died)
                if wait_s > 0:
                    group = self.cpu_group  # monitored_barrier is gloo's: the CPU group, or the default one
                    self.dist.monitored_barrier(group=group, timeout=datetime.timedelta(seconds=wait_s), wait_all_ranks=True)
            with contextlib.suppress(Exception):
                self.dist.destroy_process_group()


def start_runtime(args) -> SingleProcess:
    """A process group when torchrun started several processes, else the single-process runtime."""
    if args.dist_backend == "nccl" and not torch.cuda.is_available():
        raise UserError("--dist_backend nccl: CUDA is not available on this machine (use --dist_backend gloo)")
    if launched_world_size() == 1:
        return SingleProcess()
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE is set but {', '.join(missing)} not: start several processes with torchrun")
    return Distributed(args.dist_backend, args.dist_timeout, args.device)
