"""The warm ClientApp launcher (client/warm_clientapp.py): the same arguments Flower's SubprocessExecutor passes,
one forked process per task whose parent is the launcher, Flower's own start for every other task and whenever
the launcher is gone, and the seam refusing a Flower without `get_executor`."""

import os
import types

import pytest
from flwr.supercore.constant import ExecutorType, TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResultStatus
from flwr.supercore.superexec.executor import subprocess_executor

from client import warm_clientapp
from protocol.procfs import is_alive


def _spec(task_type=TaskType.CLIENT_APP, **changes) -> ExecutionSpec:
    fields = dict(task_type=task_type, runtime_api_address="127.0.0.1:9094", token="tok-123", insecure=True,
                  root_certificates_path=None, runtime_dependency_install=False, parent_pid=4242,
                  suppress_output=False, task_id=7)
    return ExecutionSpec(**{**fields, **changes})


@pytest.mark.parametrize("changes", [{}, {"insecure": False, "root_certificates_path": "/kit/ca.crt"},
                                     {"parent_pid": None, "runtime_dependency_install": True}])
def test_a_forked_clientapp_gets_the_arguments_flower_would_have_passed(monkeypatch, changes):
    started = []
    monkeypatch.setattr(subprocess_executor.subprocess, "Popen", lambda args, **kwargs: started.append(args))
    spec = _spec(**changes)
    subprocess_executor.SubprocessExecutor().launch(spec)
    assert started[0][1:] == warm_clientapp.clientapp_arguments(spec)


class RecordingExecutor:
    def __init__(self):
        self.launched, self.closed = [], False

    def launch(self, spec):
        self.launched.append(spec)
        return "flower's own start"

    def close(self):
        self.closed = True


def test_each_clientapp_task_is_its_own_forked_process_and_other_tasks_start_as_flower_starts_them():
    """The launcher forks for real; the child runs `flwr-clientapp` against a Runtime API address where nothing
    listens, so it exits on its own after Flower's connection attempt."""
    fallback = RecordingExecutor()
    executor = warm_clientapp.WarmClientAppExecutor(fallback)
    try:
        launcher = executor.launcher
        assert launcher is not None and launcher.process.poll() is None
        pids = [launcher.fork(["--runtime-api-address", "127.0.0.1:1", "--token", "t", "--insecure",
                               "--parent-pid", str(os.getpid())], quiet=True) for _ in range(3)]
        assert len(set(pids)) == 3 and launcher.process.pid not in pids
        for pid in pids:  # children of the launcher, running Flower's ClientApp main
            status = open(f"/proc/{pid}/status").read() if is_alive(pid) else ""
            assert not status or f"PPid:\t{launcher.process.pid}" in status
        other = executor.launch(_spec(task_type=TaskType.SERVER_APP))
        assert other == "flower's own start" and fallback.launched[-1].task_type == TaskType.SERVER_APP
        assert executor.launch(_spec()).status == LaunchResultStatus.ACCEPTED and len(fallback.launched) == 1
    finally:
        executor.close()
    assert fallback.closed and launcher.process.poll() is not None


def test_a_dead_launcher_hands_the_task_to_flowers_own_start():
    fallback = RecordingExecutor()
    executor = warm_clientapp.WarmClientAppExecutor(fallback)
    executor.launcher.process.kill()
    executor.launcher.process.wait()
    assert executor.launch(_spec()) == "flower's own start"  # this task is not lost
    assert executor.launcher is None and len(fallback.launched) == 1
    executor.close()


def test_a_launcher_that_cannot_start_leaves_flowers_start_in_place():
    def broken(command):
        raise warm_clientapp.LauncherUnavailable(f"no fork here for {command}")

    fallback = RecordingExecutor()
    executor = warm_clientapp.WarmClientAppExecutor(fallback, launcher_factory=broken)
    assert executor.launcher is None and executor.launch(_spec()) == "flower's own start"


def test_the_seam_wraps_only_the_subprocess_executor_and_refuses_a_flower_without_it(monkeypatch):
    module = types.SimpleNamespace(get_executor=lambda executor_type, *a, **k: RecordingExecutor())
    assert warm_clientapp.install(module)
    kubernetes = module.get_executor(ExecutorType.KUBERNETES)
    assert isinstance(kubernetes, RecordingExecutor)
    local = module.get_executor(ExecutorType.SUBPROCESS)
    try:
        assert isinstance(local, warm_clientapp.WarmClientAppExecutor)
    finally:
        local.close()
    assert not warm_clientapp.install(types.SimpleNamespace())  # moved in a later Flower: keep its own start
    monkeypatch.setenv(warm_clientapp.ENABLE_ENV, "0")
    assert not warm_clientapp.install(types.SimpleNamespace(get_executor=None))


def test_the_launcher_runs_the_command_flowers_table_names_and_refuses_one_it_cannot_resolve():
    assert warm_clientapp.entry_point("flwr-clientapp").endswith(":flwr_clientapp")
    assert warm_clientapp.entry_point("cardiacfl-clientapp") == "client.app_gate:clientapp"  # the gated one
    with pytest.raises(warm_clientapp.LauncherUnavailable, match="not a console command"):
        warm_clientapp.entry_point("no-such-clientapp")
