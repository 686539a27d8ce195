"""Per-epoch progress: a tqdm bar on a terminal, plain lines in a non-interactive log.

A tqdm bar redraws itself with carriage returns, which turns a CI or ``nohup`` log into one
unreadable line; in ``log`` mode the same text is printed as whole lines about every 10 %, with the
elapsed time and the epoch's ETA the way tqdm shows them::

    Epoch 1/30 [GA:2]:  40% 8/20 [00:12<00:18] Loss=...

The postfix text is built lazily (it reads device values), only when it is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

REFRESH_SECONDS = 0.5


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


class EpochProgress:
    """``clock`` (seconds, monotonic) is injectable for tests.

    Elapsed time counts from construction; when resuming mid-epoch (``initial > 0``) the rate, hence
    the ETA, comes only from the micro-batches done in this process, and the ETA is ``?`` until one is.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        mode: str = "auto",
        initial: int = 0,
        every: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.mode = resolve_mode(mode)
        self.total, self.desc, self.n, self.initial = total, desc, initial, initial
        self.every = max(1, round(total * every))
        self.clock = clock
        self.start = clock()
        self.bar = None
        self.last_refresh = 0.0
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True, file=sys.stderr)

    def timing(self) -> str:
        """``[elapsed<eta]``, tqdm-style (``mm:ss``, ``h:mm:ss`` past an hour); the ETA is ``?`` before any progress."""
        elapsed = max(0.0, self.clock() - self.start)
        done = self.n - self.initial
        eta = tqdm.format_interval(elapsed * max(0, self.total - self.n) / done) if done > 0 else "?"
        return f"[{tqdm.format_interval(elapsed)}<{eta}]"

    def status(self) -> str:
        """The log line without its postfix: ``desc: pct% n/total [elapsed<eta]``."""
        return f"{self.desc}: {100 * self.n // self.total:3d}% {self.n}/{self.total} {self.timing()}"

    def update(self, postfix: Callable[[], str]) -> None:
        self.n += 1
        last = self.n == self.total
        if self.bar is not None:
            now = self.clock()
            if last or now - self.last_refresh >= REFRESH_SECONDS:
                self.bar.set_postfix_str(postfix(), refresh=False)
                self.last_refresh = now
            self.bar.update(1)
        elif self.mode == "log" and (self.n % self.every == 0 or last):
            print(f"{self.status()} {postfix()}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
