"""The site's warm worker and its channel: only the site's own user can reach it, it gives the same answers as
work done inside the ClientApp process, it comes back after it dies, and it never outlives its launcher."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

import numpy as np
import pytest

from protocol.procfs import is_alive

from client.worker_channel import WorkerAddress, call, connect, listen

ROUND = {"study": "t", "phase": "finetune", "server_round": 1, "preset": "tiny", "plan": "finetune:2:1",
         "local_epochs": 1, "dp": True, "max_site_examples": 1000}


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_channel_is_private_and_refuses_a_caller_without_the_key(tmp_path):
    address = WorkerAddress(tmp_path / "state" / "worker")
    listener = listen(address)
    served = []

    def serve_once():
        try:
            with listener.accept() as connection:
                served.append(connection.recv())
                connection.send(("ok", "pong"))
        except AuthenticationError:
            served.append("refused")

    server = threading.Thread(target=serve_once)
    server.start()
    with pytest.raises(AuthenticationError):
        Client(str(address.socket_path), family="AF_UNIX", authkey=b"x" * 32)
    server.join(timeout=10)
    assert served == ["refused"]
    assert (_mode(address.folder), _mode(address.key_path), _mode(address.socket_path)) == (0o700, 0o600, 0o600)

    server = threading.Thread(target=serve_once)
    server.start()
    assert call(address, {"op": "ping"}) == "pong"
    server.join(timeout=10)
    listener.close()


def test_a_long_state_path_gets_a_private_short_socket(tmp_path):
    address = WorkerAddress(tmp_path / ("x" * 120) / "worker")
    assert len(str(address.socket_path)) <= 100
    assert _mode(address.socket_path.parent) == 0o700


def _site_client(config, worker):
    from client.client_app import SiteClient

    return SiteClient(str(config), worker, run_id=7)


@pytest.fixture
def supervised_worker(tiny_cohort):
    from client.site_node import SupervisedWorker
    from sitedata.site_config import load_site_config

    config = tiny_cohort / "site_configs" / "hospital-a.toml"
    worker = SupervisedWorker(str(config), threads=1)
    worker.start()
    try:
        address = WorkerAddress.in_state_dir(load_site_config(config).state_dir)
        connect(address, wait_s=120).close()
        yield config, address, worker
    finally:
        worker.stop()


def test_the_worker_answers_as_the_clientapp_process_would_and_comes_back_after_it_dies(supervised_worker):
    from shared_models.cardiacnets import build_model
    from protocol.codec import encode_weights

    config, address, worker = supervised_worker
    parameters = encode_weights({k: v.numpy() for k, v in build_model("tiny").state_dict().items()})
    via_worker = _site_client(config, address)
    in_process = _site_client(config, None)
    loss_w, n_w, metrics_w = via_worker.evaluate(parameters, ROUND)
    loss_p, n_p, metrics_p = in_process.evaluate(parameters, ROUND)
    assert (loss_w, n_w) == pytest.approx((loss_p, n_p))
    assert {k: v for k, v in metrics_w.items()} == pytest.approx(metrics_p)

    arrays, weight, metrics = via_worker.fit(parameters, ROUND)
    assert metrics["epsilon"] > 0 and metrics["site"] == "hospital-a" and weight == 1
    assert metrics["work_s"] >= 0 and all(np.all(np.isfinite(a)) for a in arrays)

    first = worker.process.pid
    worker.process.kill()
    second_round = dict(ROUND, server_round=2)
    arrays, _, metrics = via_worker.fit(parameters, second_round)  # waits for the restarted worker
    assert worker.process.pid != first and worker.restarts == 1
    assert metrics["epsilon"] > 0 and metrics["declined"] == 0


def test_a_worker_exits_when_its_launcher_is_gone(tiny_cohort):
    """A launcher killed with SIGKILL cannot stop its worker; the worker notices and exits by itself."""
    config = tiny_cohort / "site_configs" / "hospital-a.toml"
    launcher = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-m', 'client.site_worker', '--site-config', {str(config)!r}, "
        "'--parent-pid', str(__import__('os').getpid())]); "
        "print(p.pid, flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    worker_pid = int(launcher.stdout.readline())
    try:
        launcher.kill()
        launcher.wait()
        deadline = time.time() + 30
        while time.time() < deadline and is_alive(worker_pid):
            time.sleep(0.2)
        assert not is_alive(worker_pid)
    finally:
        if is_alive(worker_pid):
            os.kill(worker_pid, 9)


def test_a_peer_that_leaves_mid_handshake_does_not_stop_the_worker(supervised_worker):
    """Found by the hospital container's healthcheck (a bare connect to the socket, then close): the worker died
    with BrokenPipeError in the key challenge every 10 s and the site's rounds failed ("worker not reachable")."""
    import socket

    from client.worker_channel import call

    config, address, worker = supervised_worker
    pid = worker.process.pid
    for _ in range(5):  # a liveness probe, or a ClientApp killed during the handshake
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(address.socket_path))
        probe.close()
    overlap = call(address, {"op": "overlap", "run": 7, "fingerprints": {}}, wait_s=5)
    assert worker.process.pid == pid and worker.process.poll() is None and worker.restarts == 0
    assert overlap is not None
