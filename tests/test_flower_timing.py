"""The timing seams on Flower 1.41's own modules: they find what they replace (and say so when a Flower
version moves it), cap only that module's sleeps, and make the SuperNode declare a 10 s heartbeat."""

import importlib
import time
import types

import pytest

from protocol import flower_timing


def test_the_poll_cap_shortens_only_that_modules_sleeps(monkeypatch):
    module = importlib.import_module("flwr.supernode.start_client_internal")
    assert module.time is time  # what the seam replaces is there in this Flower version
    monkeypatch.setattr(module, "time", module.time)  # restored after the test
    flower_timing.install_poll_cap(module, 0.05)
    started = time.perf_counter()
    module.time.sleep(3)  # the SuperNode's idle pull
    assert time.perf_counter() - started < 1.0
    assert abs(module.time.time() - time.time()) < 1.0  # everything else is the real time module
    assert type(time.sleep).__name__ == "builtin_function_or_method"  # the process's own time.sleep is untouched


def test_the_grid_poll_and_heartbeat_seams_find_their_targets(monkeypatch):
    grid = importlib.import_module("flwr.superlink.grid.http_grid")
    monkeypatch.setattr(grid, "time", grid.time)
    flower_timing.install_poll_cap(grid)
    modules = [importlib.import_module("flwr.supernode.fleet_http_connection"), importlib.import_module("flwr.supercore.heartbeat")]
    for module in modules:
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    flower_timing.install_heartbeat(modules)
    assert all(module.HEARTBEAT_DEFAULT_INTERVAL == 10.0 for module in modules)


def test_a_moved_target_is_an_error_not_a_silent_no_op():
    with pytest.raises(RuntimeError, match="poll seam moved"):
        flower_timing.install_poll_cap(types.ModuleType("elsewhere"))
    with pytest.raises(RuntimeError, match="heartbeat seam moved"):
        flower_timing.install_heartbeat([types.ModuleType("elsewhere")])
