"""Ctrl-C and SIGTERM during training: finish the current micro-batch, save, then stop.

The first signal only sets a flag that the train loop reads between micro-batches, so a
checkpoint is never taken halfway through a backward pass. A second signal stops at once
(the last complete checkpoint stays intact: checkpoint writes are atomic).
"""

from __future__ import annotations

import os
import signal
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    def __init__(self, signum: int, checkpoint: str):
        self.exit_code = EXIT_CODES.get(signum, 130)
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: resumable checkpoint written to {checkpoint}; continue with --resume auto")


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        message = (
            f"\n{signal.Signals(signum).name} received: finishing this micro-batch and saving a checkpoint "
            "(send it again to stop at once)\n"
        )
        os.write(2, message.encode())  # not print(): the handler may interrupt a write to stderr (tqdm)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; only the main
    process decides what happens, so workers ignore it."""
    for signum in EXIT_CODES:
        signal.signal(signum, signal.SIG_IGN)
