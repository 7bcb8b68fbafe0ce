"""The local channel between Flower's per-message ClientApp and the site's warm worker (client/site_worker.py).

A Unix socket in the site's state directory (folder 0700, socket 0600) with a 32-byte key beside it (0600).
`multiprocessing.connection` runs an HMAC challenge in both directions before anything is unpickled, so only a
process that can read the key file (the site's own user) can send work or receive results. Imports only the
standard library: the ClientApp that uses it stays thin.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from pathlib import Path

NODE_CONFIG_KEY = "site-worker"  # SuperNode node config: the worker folder (absent: work in the ClientApp process)
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes


@dataclass(frozen=True)
class WorkerAddress:
    folder: Path

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> WorkerAddress:
        return cls(Path(state_dir) / "worker")

    @property
    def key_path(self) -> Path:
        return self.folder / "worker.key"

    @property
    def socket_path(self) -> Path:
        """In the folder; a long folder path gets a private per-user folder in the temp dir instead."""
        path = self.folder / "worker.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        short = Path(tempfile.gettempdir()) / f"cardiacfl-{os.getuid()}"
        short.mkdir(mode=0o700, exist_ok=True)
        if short.stat().st_uid != os.getuid() or short.stat().st_mode & 0o077:
            raise PermissionError(f"{short}: not a private folder of this user; refusing to put the worker socket there")
        return short / (hashlib.sha256(str(self.folder).encode()).hexdigest()[:16] + ".sock")


def listen(address: WorkerAddress) -> Listener:
    """Bind the socket with a new key (a dead worker's key and socket are replaced; a live one is not)."""
    address.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(address.folder, 0o700)
    if _answers(address.socket_path):
        raise RuntimeError(f"another worker for this site is running on {address.socket_path}: one node per site")
    key = secrets.token_bytes(32)
    fd = os.open(address.key_path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    address.socket_path.unlink(missing_ok=True)
    previous = os.umask(0o177)  # the socket file is created 0600
    try:
        listener = Listener(str(address.socket_path), family="AF_UNIX", authkey=key)
    finally:
        os.umask(previous)
    os.replace(address.key_path.with_suffix(".tmp"), address.key_path)  # published once the socket is there
    return listener


def _answers(path: Path) -> bool:
    """Something accepts connections on this socket path."""
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class WorkerUnavailable(ConnectionError):
    """No worker answered within the wait (not started, restarting, or gone)."""


def connect(address: WorkerAddress, wait_s: float = 30.0):
    """A connection to the worker, retried for `wait_s` (a worker that died is being restarted)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Client(str(address.socket_path), family="AF_UNIX", authkey=address.key_path.read_bytes())
        except (OSError, EOFError, AuthenticationError) as err:  # absent, refused, reset by a dying worker, restarting
            if time.monotonic() >= deadline:
                raise WorkerUnavailable(f"site worker at {address.socket_path} not reachable: {err}") from err
            time.sleep(0.2)


def call(address: WorkerAddress, request: dict, wait_s: float = 30.0):
    """Send one request and return the worker's result; the worker's own errors are raised here."""
    with connect(address, wait_s) as connection:
        connection.send(request)
        try:
            status, result = connection.recv()
        except EOFError as err:
            raise RuntimeError("the site worker exited during this round (it is restarted for the next one)") from err
    if status != "ok":
        raise RuntimeError(f"site worker: {result}")
    return result
