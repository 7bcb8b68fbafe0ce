"""A hospital's node: Flower's SuperNode plus the site's warm worker, in one supervised process.

- The worker (client/site_worker.py) starts first and is restarted whenever it exits (backoff 1 s doubling to
  30 s); it is stopped when this process ends.
- The SuperNode runs in this process with two timing seams (protocol/flower_timing.py): a short idle pull and
  a 10 s heartbeat, so a round starts promptly and a site that dies is out of the round after about 20 s.
- Its node config names the site config and the worker folder; the per-message ClientApp hands each round to
  the worker over the folder's authenticated Unix socket.
- It runs with `--isolation process` and the site's own SuperExec (client/app_gate.py), which runs an app only
  when its FAB hash is on the site's approved list; the list is printed at start.

    python -m client.site_node --site-config FILE [--threads N] [--no-worker] -- <flower-supernode arguments>
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from client.restarts import keep_running
from client.worker_channel import NODE_CONFIG_KEY, WorkerAddress, connect
from protocol import flower_timing


class SupervisedWorker:
    """The warm worker as a child process, restarted when it exits until `stop()`."""

    def __init__(self, site_config: str, threads: int | None):
        self.args = [sys.executable, "-m", "client.site_worker", "--site-config", site_config, "--parent-pid", str(os.getpid())]
        self.args += ["--threads", str(threads)] if threads else []
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.restarts = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.args)
        first = iter([self.process])
        threading.Thread(target=keep_running, daemon=True, kwargs=dict(
            start=lambda: next(first, None) or self._restart(), stop=self.stopping, cap=30.0, healthy_s=60.0,
            report=lambda code, wait: print(f"site worker exited with code {code}; restarting in {wait:.0f} s", flush=True),
        )).start()

    def _restart(self) -> subprocess.Popen:
        self.restarts += 1
        self.process = subprocess.Popen(self.args)
        return self.process

    def stop(self) -> None:
        self.stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def install_timing_seams() -> None:
    """Shorter idle pulls and a 10 s heartbeat for the SuperNode in this process."""
    flower_timing.install_poll_cap(importlib.import_module("flwr.supernode.start_client_internal"))
    flower_timing.install_heartbeat([importlib.import_module("flwr.supernode.fleet_http_connection"),
                                     importlib.import_module("flwr.supercore.heartbeat")])


def node_config(site_config: Path, worker: WorkerAddress | None) -> str:
    config = f'site-config="{site_config}"'
    return config + (f' {NODE_CONFIG_KEY}="{worker.folder}"' if worker else "")


def runtime_address(supernode_args: list[str]) -> str:
    """Where this SuperNode serves its Runtime API (its `--port`; Flower's default otherwise), on loopback."""
    from flwr.supercore.constant import SUPERNODE_UVICORN_DEFAULT_PORT

    port = SUPERNODE_UVICORN_DEFAULT_PORT
    for index, arg in enumerate(supernode_args):
        if arg == "--port" and index + 1 < len(supernode_args):
            port = int(supernode_args[index + 1])
        elif arg.startswith("--port="):
            port = int(arg.split("=", 1)[1])
    return f"127.0.0.1:{port}"


def start_app_gate(address: str, approved: Path) -> subprocess.Popen:
    """The site's SuperExec (client/app_gate.py): Flower's, launching only approved apps."""
    from client.app_gate import APPROVED_APPS_ENV, approved_apps

    entries = approved_apps(approved)
    for entry in entries:
        print(f"approved app {entry['hash']} ({entry['approved_at']}, {entry['operator']}: {entry['note']})", flush=True)
    if not entries:
        print(f"no app approved in {approved}: every study's app is refused until the operator runs "
              "`cardiacfl site approve`", flush=True)
    env = dict(os.environ, **{APPROVED_APPS_ENV: str(approved)})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # cardiacfl-clientapp
    return subprocess.Popen([sys.executable, "-m", "client.app_gate", "superexec", "--insecure", "--runtime-api-address",
                             address, "--parent-pid", str(os.getpid())], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-config", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the worker")
    parser.add_argument("--no-worker", action="store_true", help="train inside each ClientApp process (slower)")
    parser.add_argument("supernode_args", nargs=argparse.REMAINDER, help="arguments for flower-supernode (after --)")
    args = parser.parse_args()
    from sitedata.site_config import load_site_config

    site_config = args.site_config.resolve()
    config = load_site_config(site_config)
    passthrough = [a for a in args.supernode_args if a != "--"]
    if any(a == "--isolation" or a.startswith("--isolation=") for a in passthrough):
        raise SystemExit("--isolation is this launcher's: the site's own SuperExec checks every app (client/app_gate.py)")
    from client.app_gate import approved_path

    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(flower_timing.SUPEREXEC_POLL_S))  # for its SuperExec
    gate = start_app_gate(runtime_address(passthrough), approved_path(config.state_dir))
    atexit.register(gate.terminate)
    worker_address = None
    if not args.no_worker:
        worker_address = WorkerAddress.in_state_dir(config.state_dir)
        worker = SupervisedWorker(str(site_config), args.threads)
        worker.start()
        atexit.register(worker.stop)
        connect(worker_address, wait_s=120).close()  # ready: torch imported, socket bound
    install_timing_seams()
    sys.argv = ["flower-supernode", *passthrough, "--isolation", "process",
                "--node-config", node_config(site_config, worker_address)]
    from flwr.supernode.cli import flower_supernode

    flower_supernode()


if __name__ == "__main__":
    main()
