"""Flower 1.41's hard-coded waits, shortened in our own processes only. The SuperNode sleeps 3 s after an empty
pull (`supernode/start_client_internal.py`), the ServerApp's grid sleeps 3 s between pulls for replies
(`superlink/grid/http_grid.py`), and a SuperNode declares a 30 s heartbeat, so a dead site is noticed after
2 × 30 s. A configurable pull interval was proposed upstream and not merged. These are seams like
`mask_prg`: the module's own `time` name (or heartbeat constant) is replaced, and Flower's files are left as
they are.

- `install_poll_cap(module, cap_s)`: every `time.sleep(s)` in that module waits min(s, cap_s);
- `install_heartbeat(modules, interval_s)`: the SuperNode declares and keeps `interval_s` (the SuperLink accepts
  10 s to 30 min), so a site that dies is marked offline, and its messages answered NODE_UNAVAILABLE, after
  2 × interval_s.
"""

from __future__ import annotations

import time as _time
import types

POLL_S = 0.5  # SuperNode idle pull and grid reply pull: 2 requests/s per site instead of one per 3 s
HEARTBEAT_S = 10.0  # the smallest interval the SuperLink accepts
SUPEREXEC_POLL_S = 0.2  # FLWR_SUPEREXEC_TASK_POLL_INTERVAL (Flower's own setting; default 1 s, paid by every message)


class _CappedSleepTime(types.SimpleNamespace):
    """`time`, except that sleep waits at most `cap_s`."""

    def __init__(self, cap_s: float):
        super().__init__(cap_s=cap_s)

    def __getattr__(self, name):  # everything but sleep is the real time module
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self.cap_s))


def install_poll_cap(module, cap_s: float = POLL_S) -> None:
    """Cap every sleep of a Flower module that polls (by its own `time` name only)."""
    if getattr(module, "time", None) is not _time and not isinstance(getattr(module, "time", None), _CappedSleepTime):
        raise RuntimeError(f"{module.__name__} has no module-level `time`: the poll seam moved in this Flower version")
    module.time = _CappedSleepTime(cap_s)


def install_heartbeat(modules, interval_s: float = HEARTBEAT_S) -> None:
    """Make the SuperNode declare and send heartbeats for `interval_s` (modules that import the constant)."""
    for module in modules:
        if not hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL"):
            raise RuntimeError(f"{module.__name__} has no HEARTBEAT_DEFAULT_INTERVAL: the heartbeat seam moved")
        module.HEARTBEAT_DEFAULT_INTERVAL = interval_s
