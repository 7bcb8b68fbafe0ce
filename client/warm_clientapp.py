"""A warm start for Flower's per-message ClientApp process.

Flower 1.41 runs every message a site receives in a new `flwr-clientapp` process (its long-running ClientApp was
removed in 1.21): the site's SuperExec (client/app_gate.py) starts a Python interpreter, which imports Flower's
runner (≈ 1.1 s on an idle core, several seconds when every site starts one on 2 cores) before it pulls the
message. SecAgg+ is four messages per site per round, so that start is most of a round.

Here the SuperExec starts, once, a *launcher* that has already imported Flower's ClientApp runner and the entry
point of the command Flower's table names for ClientApp tasks (`cardiacfl-clientapp`, the site's app gate, see
client/app_gate.py); for each ClientApp task the launcher forks a child that calls that entry point with exactly
the arguments Flower's SubprocessExecutor would have passed (Runtime API address, the task's token, TLS flags,
--parent-pid). So each message still gets its own process, with Flower's lifetime, token and exit code
handling, and the app gate still checks the FAB before anything of the app is installed; only the interpreter
start and the imports are paid once per site instead of once per message.

- `WarmClientAppExecutor`: Flower's Executor protocol around its SubprocessExecutor; ClientApp tasks go to the
  launcher, every other task, and every ClientApp task the launcher cannot take, to Flower's own start.
- `install(run_superexec_module)`: the seam, the SuperExec's `get_executor` name (checked: a Flower without it
  keeps its own start). CARDIACFL_WARM_CLIENTAPP=0 turns it off.
- `serve` (`python -m client.warm_clientapp --entry MODULE:FUNCTION --fd N`): the launcher, one JSON request
  per task on its socket.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback

ENABLE_ENV = "CARDIACFL_WARM_CLIENTAPP"
REPLY_TIMEOUT_S = 10.0


class LauncherUnavailable(RuntimeError):
    """The launcher did not take a task (not started, gone, or no reply in time)."""


# --- the SuperExec's side --------------------------------------------------------------------------------------

def clientapp_arguments(spec) -> list[str]:
    """The `flwr-clientapp` arguments Flower's SubprocessExecutor passes for this task (its `launch`, 1.41)."""
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG

    args = [TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type], spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        args.append("--insecure")
    elif spec.root_certificates_path is not None:
        args += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        args += ["--parent-pid", str(spec.parent_pid)]
    if spec.runtime_dependency_install:
        args.append("--allow-runtime-dependency-installation")
    return args


def entry_point(command: str) -> str:
    """`module:function` of a console command installed with this interpreter's packages."""
    from importlib.metadata import entry_points

    found = [e.value for e in entry_points(group="console_scripts", name=command)]
    if not found:
        raise LauncherUnavailable(f"{command} is not a console command of this Python environment")
    return found[0]


class WarmLauncher:
    """The launcher process and its socket; `fork(argv)` -> the new ClientApp's pid."""

    def __init__(self, command: str):
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-m", "client.warm_clientapp", "--entry", entry_point(command),
                                         "--command", command, "--fd", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.socket = ours
        self.socket.settimeout(120.0)  # the first reply waits for the launcher's imports
        self.reader = self.socket.makefile("r")
        self.lock = threading.Lock()
        self._ask({"ready": True})
        self.socket.settimeout(REPLY_TIMEOUT_S)

    def _ask(self, request: dict) -> dict:
        with self.lock:
            try:
                self.socket.sendall((json.dumps(request) + "\n").encode())
                line = self.reader.readline()
            except OSError as err:
                raise LauncherUnavailable(f"the warm ClientApp launcher did not answer: {err}") from err
        if not line:
            raise LauncherUnavailable(f"the warm ClientApp launcher exited (code {self.process.poll()})")
        return json.loads(line)

    def fork(self, argv: list[str], quiet: bool = False) -> int:
        return int(self._ask({"argv": argv, "quiet": quiet})["pid"])

    def close(self) -> None:
        self.reader.close()
        self.socket.close()  # the launcher exits at the end of its socket
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WarmClientAppExecutor:
    """Flower's Executor: ClientApps forked by the warm launcher, everything else as Flower starts it."""

    def __init__(self, fallback, launcher_factory=WarmLauncher):
        from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

        self.fallback = fallback
        try:  # the command Flower's own start would run (client/app_gate.py puts the gated one in the table)
            self.launcher: WarmLauncher | None = launcher_factory(TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP])
        except (LauncherUnavailable, OSError) as err:
            print(f"warm ClientApp launcher not started ({err}); Flower starts each ClientApp itself", flush=True)
            self.launcher = None

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP or self.launcher is None:
            return self.fallback.launch(spec)
        try:
            self.launcher.fork(clientapp_arguments(spec), quiet=spec.suppress_output)
            return LaunchResult.accepted()
        except LauncherUnavailable as err:
            print(f"{err}; Flower starts this and every later ClientApp itself", flush=True)
            self.launcher = None
            return self.fallback.launch(spec)

    def get_eligible_capacity(self, *args, **kwargs):
        return self.fallback.get_eligible_capacity(*args, **kwargs)

    def wait_for_capacity(self, *args, **kwargs):
        return self.fallback.wait_for_capacity(*args, **kwargs)

    def reconcile(self) -> None:
        self.fallback.reconcile()

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None
        self.fallback.close()


def install(run_superexec_module) -> bool:
    """Give the SuperExec the warm executor for Flower's subprocess executor. False (Flower's own start kept)
    when turned off or when this Flower has no `get_executor` to wrap."""
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return False
    original = getattr(run_superexec_module, "get_executor", None)
    if original is None:
        print("this Flower's SuperExec has no get_executor: ClientApps start cold", flush=True)
        return False
    from flwr.supercore.constant import ExecutorType

    def get_executor(executor_type, *args, **kwargs):
        executor = original(executor_type, *args, **kwargs)
        return WarmClientAppExecutor(executor) if executor_type == ExecutorType.SUBPROCESS else executor

    run_superexec_module.get_executor = get_executor
    return True


# --- the launcher ----------------------------------------------------------------------------------------------

def _reap(_signum, _frame) -> None:
    """Collect every finished ClientApp (the launcher is their parent); report the ones that failed."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"warm ClientApp {pid} exited with code {code}", file=sys.stderr, flush=True)


def _run_clientapp(main, command: str, argv: list[str], quiet: bool, channel: socket.socket) -> None:
    """In the forked child: the command's entry point with these arguments; never returns."""
    code = 1
    try:
        os.close(channel.fileno())  # the launcher's socket is not the ClientApp's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if quiet:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        sys.argv = [command, *argv]
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported, then the child's exit code says it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(entry: str, command: str, fd: int) -> None:
    """Import what every ClientApp needs, then fork one child per request until the SuperExec closes the socket."""
    import importlib

    module, _, function = entry.partition(":")
    main = getattr(importlib.import_module(module), function)
    for warm in ("flwr.supernode.cli.flwr_clientapp", "flwr.supernode.runtime.run_clientapp"):  # Flower's runner
        importlib.import_module(warm)
    channel = socket.socket(fileno=fd)
    reader = channel.makefile("r")
    signal.signal(signal.SIGCHLD, _reap)
    for line in reader:
        request = json.loads(line)
        if "argv" not in request:
            reply = {"ready": True}
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_clientapp(main, command, [str(a) for a in request["argv"]], bool(request.get("quiet")), channel)
            reply = {"pid": pid}
        channel.sendall((json.dumps(reply) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description="The site's warm ClientApp launcher (started by its SuperExec).")
    parser.add_argument("--entry", required=True, help="MODULE:FUNCTION of the ClientApp command")
    parser.add_argument("--command", required=True, help="the command's name (the child's argv[0])")
    parser.add_argument("--fd", type=int, required=True, help="the socket the SuperExec passed")
    args = parser.parse_args()
    serve(args.entry, args.command, args.fd)


if __name__ == "__main__":
    main()
