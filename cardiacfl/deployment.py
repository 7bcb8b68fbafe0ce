"""`cardiacfl study run`: a whole study on one machine with Flower's Deployment Engine, as real processes on
loopback: a SuperLink with TLS and SuperNode authentication listening on loopback only, the Fleet gateway
(the only port sites reach; it serves the Fleet API and nothing else), one SuperNode per site with its kit, the
study submitted with `flwr run` over the lab's loopback connection, progress read from the run database, and
every started process stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cardiacfl.provision import provision
from server.study_config import StudyConfig
from protocol import flower_timing
from protocol.procfs import command_line, descendants, is_alive

REPO = Path(__file__).resolve().parents[1]


@dataclass
class StudyPaths:
    work: Path
    db: Path
    checkpoints: Path
    logs: Path
    flwr_home: Path

    @classmethod
    def under(cls, work: Path) -> StudyPaths:
        work = work.resolve()  # Flower's connection config wants absolute paths
        return cls(work=work, db=work / "study.db", checkpoints=work / "checkpoints", logs=work / "logs",
                   flwr_home=work / "flwr-home")


def study_run_config(study: StudyConfig, paths: StudyPaths, reference_panel: Path | None, *, resume: bool = False,
                     site_nodes: dict[str, int] | None = None, extra: str = "") -> str:
    """The ServerApp's run config (`flwr run --run-config`), as both engines pass it."""
    nodes = ",".join(f"{site}={node}" for site, node in (site_nodes or {}).items())
    return (f'study-config="{study.path.resolve()}" run-db="{paths.db}" out-dir="{paths.checkpoints}" '
            f'reference-panel="{reference_panel.resolve() if reference_panel else ""}" '
            f'resume="{str(resume).lower()}" site-nodes="{nodes}" {extra}').strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_environment(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONPATH=str(REPO),
               FLWR_SUPEREXEC_TASK_POLL_INTERVAL=str(flower_timing.SUPEREXEC_POLL_S),
               PYTHONUNBUFFERED="1",  # logs reach their files as they happen
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))  # Flower starts its own helpers
    return env


def threads_per_site(sites_on_this_host: int) -> int:
    """torch threads per site worker: the cores shared out (more threads than cores slows every site down)."""
    return max(1, (os.cpu_count() or 1) // sites_on_this_host)


def site_node_command(site_config: Path, *, supernode_args: list[str], threads: int | None = None,
                      worker: bool = True) -> list[str]:
    """A hospital's node: the SuperNode with its warm worker (client/site_node.py)."""
    command = [sys.executable, "-m", "client.site_node", "--site-config", str(site_config.resolve())]
    command += ["--threads", str(threads)] if threads else []
    command += [] if worker else ["--no-worker"]
    return command + ["--", *supernode_args]


def flower_bin(name: str) -> str:
    """A Flower command from this interpreter's environment (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class Processes:
    """Started processes, stopped (TERM, then KILL) in reverse order."""

    def __init__(self):
        self.running: list[tuple[str, subprocess.Popen]] = []
        self.reported: set[str] = set()
        self.serverapp: int | None = None

    def start(self, name: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "wb")
        process = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((name, process))
        return process

    def stop(self, grace_s: float = 10.0) -> None:
        """TERM each started process with everything it started (Flower's SuperExec starts the ServerApp and the
        ClientApps in sessions of their own), newest first; KILL whatever is left after `grace_s`."""
        trees = [(process, [process.pid, *descendants(process.pid)]) for _, process in reversed(self.running)]
        for process, tree in trees:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
            for pid in tree[1:]:
                _signal(pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        for process, tree in trees:
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
        while time.time() < deadline and any(is_alive(pid) for _, tree in trees for pid in tree[1:]):
            time.sleep(0.1)
        for _, tree in trees:
            for pid in tree[1:]:
                if is_alive(pid):
                    _signal(pid, signal.SIGKILL)
        self.running.clear()

    def serverapp_exited(self) -> bool:
        """True once the ServerApp (started by Flower under one of these processes) has been seen and is gone."""
        if self.serverapp is None:
            for pid in (child for _, process in self.running for child in descendants(process.pid)):
                if b"flwr-serverapp" in command_line(pid):
                    self.serverapp = pid
            return False
        return not is_alive(self.serverapp)

    def check(self, warn: Callable[[str], None] = print) -> None:
        """The SuperLink is required; a site that exits is a dropout the study may survive (SecAgg+ threshold)."""
        for name, process in self.running:
            if process.poll() is None:
                continue
            if name in ("superlink", "fleet gateway"):
                raise RuntimeError(f"{name} exited with code {process.returncode}")
            if name not in self.reported:
                self.reported.add(name)
                warn(f"{name} exited with code {process.returncode}; the study goes on while enough sites remain")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_study(study: StudyConfig, work: Path, *, insecure: bool = False, reference_panel: Path | None = None, resume: bool = False,
              status: Callable[[str], None] = print, progress: Callable[[dict], None] | None = None) -> StudyPaths:
    from sitedata.site_config import load_site_config

    paths = StudyPaths.under(work)
    sites = {load_site_config(p).site_id: p for p in study.sites}
    if len(sites) < 2:
        raise ValueError(f"{study.path}: study.sites lists {len(sites)} site(s); a federated study needs at least 2")
    pki = provision(paths.work / "pki", list(sites))
    env = flower_environment(paths.flwr_home)
    port = free_port()  # flwr 1.41 serves the Fleet, Control and Runtime APIs on this one port: loopback only
    fleet_port = free_port()  # the Fleet gateway: the only port a site connects to
    paths.flwr_home.mkdir(parents=True, exist_ok=True)
    connection = f'[superlink.study]\naddress = "127.0.0.1:{port}"\n'
    connection += "insecure = true\n" if insecure else f'root-certificates = "{pki["ca"]}"\n'
    (paths.flwr_home / "config.toml").write_text(connection)

    with ExitStack() as stack:
        processes = Processes()
        stack.callback(processes.stop)
        status(f"starting SuperLink on 127.0.0.1:{port}{' (INSECURE)' if insecure else ' with TLS and site authentication'}")
        start_lab(processes, pki, env, paths.logs, superlink_port=port, fleet_listen=f"127.0.0.1:{fleet_port}", insecure=insecure)
        status(f"Fleet gateway on 127.0.0.1:{fleet_port} (Fleet API only; the Control API stays on loopback)")
        # One operator runs every site here: each approves the app it is about to run (client/app_gate.py).
        digest = approve_for_sites(sites.values(), note=f"local study {study.name}")
        status(f"app {digest} approved for {len(sites)} local sites")
        site_nodes = {}
        if not insecure:
            for site, public_key in pki["site_keys"].items():
                site_nodes[site] = register_site(str(public_key), site, env)
        for site, config in sites.items():
            kit = pki["kits"][site]
            auth = ["--insecure"] if insecure else ["--root-certificates", str(kit / "ca.crt"),
                                                    "--auth-supernode-private-key", str(kit / f"{site}.key")]
            processes.start(f"supernode {site}", site_node_command(Path(config), threads=threads_per_site(len(sites)),
                                                                  supernode_args=["--superlink", f"127.0.0.1:{fleet_port}",
                                                                                  "--port", str(free_port()), *auth]),
                            env, paths.logs / f"supernode-{site}.log")
            status(f"started SuperNode and warm worker for {site}")
        run_config = study_run_config(study, paths, reference_panel, resume=resume, site_nodes=site_nodes)
        resumed = resumable_study(paths.db, study.name) if resume else None
        submitted = time.time()
        run_id = submit(run_config, env)
        status(f"study submitted as Flower run {run_id}" + (f", resuming study #{resumed}" if resumed else ""))
        follow_study(paths, processes, run_id, env, after=submitted, status=status, progress=progress, resumed=resumed)
    return paths


def approve_for_sites(site_configs, note: str, app: Path | None = None) -> str:
    """Approve this project's app (its FAB hash) at each of these sites; returns the hash."""
    from client.app_gate import app_hash, approve, approved_path
    from sitedata.site_config import load_site_config

    digest = app_hash(app or REPO)
    for config in site_configs:
        approve(approved_path(load_site_config(config).state_dir), digest, note=note)
    return digest


def resumable_study(db_path: Path, name: str) -> int | None:
    """The study row a resumed run continues (the ServerApp picks the same one)."""
    from rundb import queries
    from rundb.reader import open_readonly

    if not db_path.exists():
        return None
    engine = open_readonly(str(db_path))
    try:
        return queries.resumable_study(engine, name)
    finally:
        engine.dispose()


def flwr(args: list[str], env: dict) -> str:
    result = subprocess.run([flower_bin("flwr"), *args], env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"flwr {' '.join(args[:2])} failed: {result.stdout[-800:]}{result.stderr[-800:]}")
    return result.stdout


def start_lab(processes: Processes, pki: dict, env: dict, logs: Path, *, superlink_port: int, fleet_listen: str,
              insecure: bool = False, database: Path | None = None) -> None:
    """The lab's long-lived processes: the SuperLink on loopback (its Control API must not be reachable from the
    network) and the Fleet gateway on `fleet_listen`, the only address hospitals connect to. With `database` the
    SuperLink keeps its state (registered sites, runs, messages) in that SQLite file, so a restarted lab knows
    its sites and runs; without it, in memory."""
    tls = ["--insecure"] if insecure else ["--ssl-ca-certfile", str(pki["ca"]), "--ssl-certfile", str(pki["superlink_cert"]),
                                           "--ssl-keyfile", str(pki["superlink_key"]), "--enable-supernode-auth"]
    state = ["--database", str(database)] if database else []
    processes.start("superlink", [flower_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(superlink_port),
                                  "--disable-runtime-dependency-installation", *state, *tls], env, logs / "superlink.log")
    wait_for_port(superlink_port, processes)
    gateway_tls = ["--insecure"] if insecure else ["--ca", str(pki["ca"]), "--cert", str(pki["superlink_cert"]),
                                                   "--key", str(pki["superlink_key"])]
    processes.start("fleet gateway", [sys.executable, "-m", "cardiacfl.fleet_gateway", "--listen", fleet_listen,
                                      "--upstream", f"127.0.0.1:{superlink_port}", *gateway_tls], env, logs / "fleet-gateway.log")
    host, _, port = fleet_listen.rpartition(":")
    wait_for_port(int(port), processes, host="127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]"))


def register_site(public_key: str, site: str, env: dict) -> int:
    """Register a site's SuperNode key with the SuperLink (lab credentials: the loopback connection) and return
    the node id the SuperLink assigned, which is how the server knows who a reply came from."""
    reply = json.loads(flwr(["supernode", "register", public_key, "study", "--name", site, "--format", "json"], env))
    if "node-id" not in reply:  # Flower answers a refusal as JSON too ("Public key already in use", ...)
        raise SiteKeyRefused(f"registering {site}'s key with the SuperLink failed: {reply.get('error', reply)}")
    return int(reply["node-id"])


class SiteKeyRefused(RuntimeError):
    """The SuperLink did not register a site key (for one: it is registered already)."""


def wait_for_port(port: int, processes: Processes, timeout: float = 60, host: str = "127.0.0.1") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        processes.check()
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s (see the logs)")


class StudyInterrupted(Exception):
    """SIGTERM or SIGHUP reached `study run`: stop like Ctrl-C does."""


@contextmanager
def interrupt_on_signals():
    """Turn SIGTERM and SIGHUP into StudyInterrupted, so the ExitStack stops every started process (Ctrl-C
    raises KeyboardInterrupt already). The processes run in their own sessions: a signal to this process group
    reaches only this process, which then stops them in order."""
    def handler(signum, frame):
        raise StudyInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def submit(run_config: str, env: dict, federation_config: str | None = None, app: Path | None = None) -> int:
    """`flwr run` the project (or another app folder) as the study's app; returns Flower's run id."""
    args = ["run", str(app or REPO), "study", "--run-config", run_config, "--format", "json"]
    if federation_config:
        args += ["--federation-config", federation_config]
    output = flwr(args, env)
    return int(json.loads(output[output.index("{"):])["run-id"])


def flower_run_statuses(env: dict) -> dict[int, str]:
    """Flower's status of every run the SuperLink knows, from one `flwr ls`."""
    reply = json.loads(flwr(["ls", "study", "--format", "json"], env))
    return {int(run["run-id"]): str(run["status"]) for run in reply.get("runs", [])}


def flower_run_status(run_id: int, env: dict) -> str:
    """Flower's own status of the run ('running', 'finished:completed', 'finished:failed', ...)."""
    reply = json.loads(flwr(["ls", "study", "--run-id", str(run_id), "--format", "json"], env))
    if not reply.get("runs"):  # a SuperLink that lost its state (no --database) or a run id it never had
        return f"unknown to the SuperLink ({reply.get('error', 'no such run')})"
    return str(reply["runs"][0]["status"])


def follow_study(paths: StudyPaths, processes: Processes, run_id: int, env: dict, *, after: float,
                 status: Callable[[str], None], progress: Callable[[dict], None] | None,
                 resumed: int | None = None) -> None:
    """Follow the study to its end. Raises RuntimeError when it fails; on Ctrl-C, SIGTERM or SIGHUP every started
    process is stopped first and the study is then marked `interrupted` with the round it reached."""
    from rundb.writer import mark_study_ended

    processes.serverapp = None  # this run's ServerApp, not an earlier study's at the same lab
    try:
        with interrupt_on_signals():
            final, reason = _follow(paths.db, processes, progress, after=after, warn=status, resumed=resumed,
                                    flower_status=lambda: flower_run_status(run_id, env))
    except (KeyboardInterrupt, StudyInterrupted) as stop:
        processes.stop()  # before the DB is marked: nothing may write after it
        why = f"stopped by {stop or 'SIGINT'}"
        study_id = resumed or study_started_after(paths.db, after)
        if study_id is not None:
            mark_study_ended(str(paths.db), study_id, "interrupted", why)
        raise RuntimeError(f"study interrupted ({why}); run it again with --resume to continue") from None
    if final != "finished":
        processes.stop()
        study_id = resumed or study_started_after(paths.db, after)
        if study_id is not None and reason:
            mark_study_ended(str(paths.db), study_id, "failed", reason)
        raise RuntimeError(f"study ended with status {final}{f' ({reason})' if reason else ''}; logs in {paths.logs}")


def study_started_after(db_path: Path, after: float) -> int | None:
    from rundb import queries
    from rundb.reader import open_readonly

    if not db_path.exists():
        return None
    engine = open_readonly(str(db_path))
    try:
        study = queries.study_started_after(engine, after)
        return study.id if study is not None else None
    finally:
        engine.dispose()


FLOWER_POLL_S = 10.0  # each `flwr ls` starts a Python process: often enough to notice, cheap enough on 2 cores


def _follow(db_path: Path, processes: Processes, progress: Callable[[dict], None] | None, *, after: float,
            warn: Callable[[str], None] = print, timeout: float = 6 * 3600,
            flower_status: Callable[[], str] | None = None, resumed: int | None = None) -> tuple[str, str]:
    """Poll the run database until the study started after `after` finishes or fails, and Flower's own run
    status every FLOWER_POLL_S: a run Flower ended (a dead ServerApp) while the database still says running is a
    failure. Returns (status, reason)."""
    from rundb import queries
    from rundb.reader import open_readonly

    deadline = time.time() + timeout
    engine = None
    next_flower_check = time.time() + FLOWER_POLL_S
    seen_running = False
    while time.time() < deadline:
        processes.check(warn)
        if engine is None and db_path.exists():
            engine = open_readonly(str(db_path))
        study = _current_study(engine, after, resumed, seen_running) if engine is not None else None
        if study is not None:
            seen_running = seen_running or study.status == "running"
            if progress:
                progress({"phase": study.current_phase, "round": study.current_round, "status": study.status,
                          "total_rounds": study.total_rounds})
            if study.status in ("finished", "failed", "interrupted"):
                return study.status, study.status_reason
        if study is not None and study.status == "running" and processes.serverapp_exited():
            time.sleep(2.0)  # a ServerApp that finished wrote its status just before it exited
            if queries.study_status(engine, study.id) == "running":
                return "failed", "the ServerApp process exited while the study was running"
        if flower_status is not None and time.time() >= next_flower_check:
            next_flower_check = time.time() + FLOWER_POLL_S
            flower = flower_status()
            if flower.startswith("finished"):
                time.sleep(1.0)  # the ServerApp writes its last status just before Flower marks the run
                if study is None or queries.study_status(engine, study.id) == "running":
                    return "failed", f"Flower ended the run as {flower} while the study was still running"
        time.sleep(1.0)
    raise TimeoutError("study did not finish in time")


def _current_study(engine, after: float, resumed: int | None, seen_running: bool):
    """The study this run follows: the one started after `after`, or the resumed row once the ServerApp has set
    it running (before that its old end status is not this run's)."""
    from sqlalchemy.exc import OperationalError

    from rundb import queries

    try:
        if resumed is None:
            return queries.study_started_after(engine, after)
        study = queries.study(engine, resumed)
    except OperationalError:  # the ServerApp has not created the tables yet
        return None
    return study if study is not None and (seen_running or study.status == "running") else None

