"""The coordinating lab's side of a deployed study, from the same pieces as `study run`:

- `start_lab_service`: the long-lived SuperLink (loopback only, TLS, SuperNode authentication) and the Fleet
  gateway on the lab's address, each site key of the lab's kit registered, logs in files. The SuperLink keeps
  its state in `superlink.db` in the state folder: a restarted lab keeps its registered sites (same node ids, so
  hospitals reconnect by themselves) and its runs (`study status` still knows them; `study submit --resume`
  continues the study). Its state folder records the ports and the node id of every site, which `submit`,
  `status` and `stop` read. While it runs it watches the kit's revoked.txt: a site revoked with
  `provision revoke` is unregistered from the SuperLink by its node id (the SuperLink then refuses that node)
  and taken out of the state folder, so no later study includes it.
- `submit_study`, `study_status`, `stop_study`: a study sent to, followed on and stopped at a running lab.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from cardiacfl.deployment import (Processes, SiteKeyRefused, StudyPaths, flower_environment, flower_run_status,
                                  flower_run_statuses, flwr, free_port, interrupt_on_signals, register_site, start_lab,
                                  study_run_config, submit, StudyInterrupted)
from cardiacfl.provision import split_address

STATE_FILE = "lab.json"
SUPERLINK_DATABASE = "superlink.db"


def _kit_paths(kit: Path) -> dict:
    if not (kit / "ca.crt").is_file() or not (kit / "superlink.key").is_file():
        raise FileNotFoundError(f"{kit}: not a lab kit (expected ca.crt, superlink.crt, superlink.key, site-keys/)")
    keys = {p.stem: p for p in sorted((kit / "site-keys").glob("*.pub"))}
    return {"ca": kit / "ca.crt", "superlink_cert": kit / "superlink.crt", "superlink_key": kit / "superlink.key",
            "site_keys": keys}


def prepare_run_database(db: str, *, reader_role: str | None = None) -> str:
    """Create or upgrade the run database before any study, so that a wrong URL, password or privilege fails
    the lab's start and not a study's first round; then give the dashboard's role read-only access."""
    from sqlalchemy.engine import make_url

    from rundb.access import grant_reader
    from rundb.engine import PASSWORD_FILE_ENV
    from rundb.migrate import upgrade
    from rundb.url import database_url, display_url

    if make_url(database_url(db)).password:
        # The URL travels in the study's run config, and Flower hands a run's config to every SuperNode.
        raise RuntimeError(f"{display_url(db)}: keep the database password out of the URL (the sites can read a "
                           f"study's run config); put it in a file and name it with {PASSWORD_FILE_ENV}")
    upgrade(db)
    if reader_role:
        grant_reader(db, reader_role)
    return display_url(db)


def start_lab_service(kit: Path, state: Path, *, db: str | None = None, fleet_listen: str | None = None,
                      db_reader: str | None = None, status: Callable[[str], None] = print,
                      ready: Callable[[dict], None] | None = None) -> None:
    """Run the lab until SIGINT/SIGTERM/SIGHUP; every process it started is stopped on the way out."""
    pki = _kit_paths(kit)
    paths = StudyPaths.under(state)
    paths.work.mkdir(parents=True, exist_ok=True)
    db = db or str(paths.db)
    status(f"run database {prepare_run_database(db, reader_role=db_reader)} is at the newest schema"
           + (f"; role {db_reader} may read it" if db_reader else ""))
    host, port = split_address(fleet_listen or _kit_address(kit))
    superlink_port = free_port()
    env = flower_environment(paths.flwr_home)
    paths.flwr_home.mkdir(parents=True, exist_ok=True)
    (paths.flwr_home / "config.toml").write_text(f'[superlink.study]\naddress = "127.0.0.1:{superlink_port}"\n'
                                                 f'root-certificates = "{pki["ca"].resolve()}"\n')
    processes = Processes()
    try:
        with interrupt_on_signals():
            start_lab(processes, pki, env, paths.logs, superlink_port=superlink_port, fleet_listen=f"{host}:{port}",
                      database=paths.work / SUPERLINK_DATABASE)
            # a revoked site's key is gone from site-keys/, so it is never registered here
            nodes = register_sites(pki["site_keys"], _previous_nodes(paths.work), env)
            record = {"superlink_port": superlink_port, "fleet": f"{host}:{port}", "db": db,
                      "checkpoints": str(paths.checkpoints), "site_nodes": nodes, "flwr_home": str(paths.flwr_home)}
            (paths.work / STATE_FILE).write_text(json.dumps(record, indent=2))
            end_orphaned_runs(paths.work, db, env, status)
            status(f"lab ready: Fleet API on {host}:{port} for {', '.join(nodes) or 'no site'}; logs in {paths.logs}")
            status(f"lab state in {paths.work}: pass --lab-state {paths.work} to `study submit`, `status` and `stop`")
            if ready:
                ready(record)
            while True:
                processes.check(status)
                apply_revocations(kit, paths.work, env, status)
                time.sleep(1.0)
    except (KeyboardInterrupt, StudyInterrupted):
        status("stopping the lab")
    finally:
        processes.stop()


def end_orphaned_runs(state: Path, db: str, env: dict, status: Callable[[str], None] = print) -> list[int]:
    """A lab that stops mid-study takes the study's ServerApp with it, while the SuperLink's database still says
    the run is running (and would forever). At start, before any new study: stop such runs in Flower and mark
    their study interrupted in the run database, so that `study status` tells the truth and `study submit
    --resume` continues it. Returns the run ids stopped."""
    from rundb.writer import mark_study_ended

    runs = state / "runs.json"
    submitted = json.loads(runs.read_text()) if runs.is_file() else []
    if not submitted:
        return []
    statuses = flower_run_statuses(env)  # one `flwr ls` for every run, not one per run ever submitted
    orphaned = [entry["run_id"] for entry in submitted
                if statuses.get(entry["run_id"], "").split(":")[0] in ("pending", "starting", "running")]
    for run_id in orphaned:
        flwr(["stop", str(run_id), "study"], env)
    snapshot = latest_study(db) if orphaned else {}
    if snapshot.get("status") == "running":
        mark_study_ended(db, snapshot["id"], "interrupted", "the lab stopped while the study ran")
    if orphaned:
        status(f"run(s) {', '.join(map(str, orphaned))} lost their ServerApp when the lab stopped: stopped; "
               f"`study submit --resume` continues study {snapshot.get('study', '')} from its last checkpoint")
    return orphaned


def _previous_nodes(state: Path) -> dict[str, int]:
    record_file = state / STATE_FILE
    return json.loads(record_file.read_text()).get("site_nodes", {}) if record_file.is_file() else {}


def register_sites(site_keys: dict[str, Path], previous: dict[str, int], env: dict) -> dict[str, int]:
    """Each site's node id: registered now, or, for a key the SuperLink's database already holds (a restarted
    lab), the id recorded when it was registered. A key registered with no record of its id is an error: the
    lab could not tell that site's replies apart."""
    listed = {int(n["node-id"]): n["status"] for n in
              json.loads(flwr(["supernode", "list", "study", "--format", "json"], env)).get("nodes", [])}
    nodes = {}
    for site, key in site_keys.items():
        try:
            nodes[site] = register_site(str(key), site, env)
        except SiteKeyRefused as refused:
            known = previous.get(site)
            if known is None or listed.get(int(known)) in (None, "unregistered"):
                raise RuntimeError(f"{refused}; lab.json has no live node id for {site} (remove {SUPERLINK_DATABASE} "
                                   "from the lab state to register every site afresh)") from None
            nodes[site] = int(known)
    return nodes


def _kit_address(kit: Path) -> str:
    import tomllib

    return str(tomllib.loads((kit / "lab.toml").read_text())["lab"]["address"]) if (kit / "lab.toml").is_file() else "0.0.0.0"


def revoked_sites(kit: Path) -> set[str]:
    revoked_file = kit / "revoked.txt"
    if not revoked_file.is_file():
        return set()
    return {line.split("\t")[0] for line in revoked_file.read_text().splitlines() if line.strip()}


def apply_revocations(kit: Path, state: Path, env: dict, status: Callable[[str], None] = print) -> list[str]:
    """Unregister every site of the running lab (state/lab.json) that the kit now lists as revoked, by the node
    id its registration returned (Flower reports no owner name to match on), and drop it from lab.json."""
    record_file = state / STATE_FILE
    record = json.loads(record_file.read_text())
    revoked = sorted(revoked_sites(kit) & set(record["site_nodes"]))
    for site in revoked:
        node = record["site_nodes"][site]
        try:
            flwr(["supernode", "unregister", str(node), "study"], env)
        except RuntimeError as err:  # already gone from the SuperLink: still never offered a study again
            status(f"revoked site {site}: the SuperLink did not unregister node {node} ({err})")
        del record["site_nodes"][site]
        status(f"revoked site {site}: node {node} unregistered; no later study includes it")
    if revoked:
        record_file.write_text(json.dumps(record, indent=2))
    return revoked


def lab_record(state: Path) -> dict:
    path = state.resolve() / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no running lab in {state.resolve()} (looked for {STATE_FILE} there): pass the folder "
                                "the lab was started with as --lab-state (`lab start` prints it; without the option it "
                                "is lab-state/ under the folder `lab start` ran in)")
    return json.loads(path.read_text())


def submit_study(state: Path, study, reference_panel: Path | None = None, *, resume: bool = False,
                 app: Path | None = None) -> tuple[int, str]:
    """Send a study to the running lab -> (Flower's run id, the SHA-256 of the app's FAB, which each site must
    have approved). `app`: the app folder (default: this project)."""
    from client.app_gate import app_hash
    from cardiacfl.deployment import REPO

    record = lab_record(state)
    paths = StudyPaths.under(state)
    paths.db = record["db"]  # a path or an SQLAlchemy URL: the ServerApp takes either
    run_config = study_run_config(study, paths, reference_panel, resume=resume, site_nodes=record["site_nodes"])
    digest = app_hash(app or REPO)
    run_id = submit(run_config, flower_environment(Path(record["flwr_home"])), app=app)
    runs = paths.work / "runs.json"
    history = json.loads(runs.read_text()) if runs.is_file() else []
    runs.write_text(json.dumps(history + [{"run_id": run_id, "study": study.name, "submitted": time.time(),
                                           "app": digest}], indent=2))
    return run_id, digest


def latest_study(db: str) -> dict:
    """The latest study in a run database: name, id, status, phase, round and why it stopped ({} if none)."""
    from rundb import queries
    from rundb.reader import open_readonly

    engine = open_readonly(db)
    try:  # `study status --follow` asks every 5 s: no connection pool may outlive its question
        study = queries.latest_study(engine)
    finally:
        engine.dispose()
    return {} if study is None else {"study": study.name, "id": study.id, "status": study.status,
                                     "phase": study.current_phase, "round": study.current_round,
                                     "total_rounds": study.total_rounds, "reason": study.status_reason}


def study_status(state: Path) -> dict:
    """The latest study in the lab's run database, and Flower's own status of the latest submitted run."""
    record = lab_record(state)
    snapshot = latest_study(record["db"])
    runs = state.resolve() / "runs.json"
    submitted = json.loads(runs.read_text()) if runs.is_file() else []
    if submitted:
        run_id = submitted[-1]["run_id"]
        snapshot["flower_run"] = {"id": run_id, "status": flower_run_status(run_id, flower_environment(Path(record["flwr_home"])))}
    return snapshot


def stop_study(state: Path) -> int:
    """Stop the latest submitted run at the lab (`flwr stop`) and mark its study interrupted."""
    from rundb.writer import mark_study_ended

    record = lab_record(state)
    runs = json.loads((state.resolve() / "runs.json").read_text())
    run_id = runs[-1]["run_id"]
    flwr(["stop", str(run_id), "study"], flower_environment(Path(record["flwr_home"])))
    snapshot = latest_study(record["db"])  # the study row only: Flower's run status would cost one more `flwr`
    if snapshot.get("status") == "running":
        mark_study_ended(record["db"], snapshot["id"], "interrupted", "stopped by `study stop`")
    return run_id

