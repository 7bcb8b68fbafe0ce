"""Sign-in throttling for the dashboard, per client and for the whole server: each failure doubles the wait
before the next attempt from that client, and too many failures lock sign-in out, for that client or (against
guessing spread over many addresses) for everyone, for a while. Pure Python, so it is tested without a browser."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field


@dataclass
class SignInThrottle:
    client_limit: int = 5  # failures per client within `window_s` before that client is locked out
    global_limit: int = 50  # failures from everyone within `window_s` before all sign-in is locked out
    window_s: float = 900.0
    lockout_s: float = 900.0
    max_delay_s: float = 30.0
    clock: callable = time.monotonic
    _failures: dict = field(default_factory=lambda: defaultdict(deque))
    _all: deque = field(default_factory=deque)
    _locked_until: dict = field(default_factory=dict)  # client (or "*") -> time
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, client: str) -> float:
        """Seconds before `client` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            self._forget(now)
            locked = max(self._locked_until.get(client, 0.0), self._locked_until.get("*", 0.0))
            if locked > now:
                return locked - now
            recent = self._failures[client]
            if not recent:
                return 0.0
            delay = min(2.0 ** (len(recent) - 1), self.max_delay_s)
            return max(0.0, recent[-1] + delay - now)

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._forget(now)
            self._failures[client].append(now)
            self._all.append(now)
            if len(self._failures[client]) >= self.client_limit:
                self._locked_until[client] = now + self.lockout_s
            if len(self._all) >= self.global_limit:
                self._locked_until["*"] = now + self.lockout_s

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _forget(self, now: float) -> None:
        for times in (*self._failures.values(), self._all):
            while times and times[0] < now - self.window_s:
                times.popleft()
