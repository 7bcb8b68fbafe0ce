"""Restart a process with backoff: the site node keeps its warm worker alive, and `site start` keeps the site
node connected while the lab is unreachable. Delays double from `first` to `cap`, and fall back to `first` after a
run that lasted `healthy_s` (it was up, so the next failure is a new one)."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Callable


def keep_running(start: Callable[[], subprocess.Popen], *, stop: threading.Event, report: Callable[[int, float], None],
                 first: float = 1.0, cap: float = 30.0, healthy_s: float = 60.0) -> None:
    """start() -> a process; wait for it, report(exit code, seconds until the restart), wait, start again, until
    `stop` is set. A KeyboardInterrupt (or any exception) in the waits ends it too."""
    backoff = first
    while not stop.is_set():
        started = time.monotonic()
        code = start().wait()
        if stop.is_set():
            return
        backoff = first if time.monotonic() - started > healthy_s else min(2 * backoff, cap)
        report(code, backoff)
        if stop.wait(backoff):
            return
