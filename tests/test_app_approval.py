"""A hospital runs only the app its operator approved (client/app_gate.py). Before: any app submitted to the lab's
Control API ran at every SuperNode with the site's file access; a 30-line app sent back the manifest, the
ground-truth file, both ledger copies, the site's private key and the worker's HMAC key."""

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from client import app_gate
from client.app_gate import AppNotApproved, app_hash, approve, approved_path, check_fab

REPO = Path(__file__).resolve().parents[1]


def test_only_a_fab_whose_bytes_hash_to_an_approved_hash_passes(tmp_path):
    approved = approved_path(tmp_path)
    fab, altered = b"the approved app", b"the approved app, one line changed"
    with pytest.raises(AppNotApproved, match="not approved"):
        check_fab(fab, path=approved)  # nothing approved yet
    digest = approve(approved, hashlib.sha256(fab).hexdigest(), note="study 1")
    assert check_fab(fab, path=approved) == digest
    with pytest.raises(AppNotApproved, match="not approved"):
        check_fab(altered, path=approved)
    with pytest.raises(AppNotApproved, match="declared hash"):  # an approved name on other content
        check_fab(altered, declared_hash=digest, path=approved)
    fab_file = tmp_path / "app.fab"
    fab_file.write_bytes(fab)
    assert app_hash(fab_file) == digest == app_hash(digest.upper())
    with pytest.raises(ValueError, match="neither"):
        app_hash(tmp_path / "missing.fab")
    assert json.loads(approved.read_text())[0]["note"] == "study 1"


def test_the_gate_refuses_before_flower_installs_anything(tmp_path, monkeypatch):
    installed = []
    runner = SimpleNamespace(install_from_fab=lambda content, **kwargs: installed.append(content))
    app_gate.install_clientapp_gate(runner)
    monkeypatch.setenv(app_gate.APPROVED_APPS_ENV, str(approved_path(tmp_path)))
    with pytest.raises(AppNotApproved):
        runner.install_from_fab(b"an app nobody approved", skip_prompt=True)
    assert installed == []  # never unpacked
    approve(approved_path(tmp_path), hashlib.sha256(b"approved").hexdigest())
    runner.install_from_fab(b"approved", skip_prompt=True)
    assert installed == [b"approved"]


def test_the_site_superexec_launches_clientapps_through_the_gate():
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    table = dict(TASK_TYPE_TO_COMMAND)
    app_gate.install_launcher(table, TaskType.CLIENT_APP)
    assert table[TaskType.CLIENT_APP] == app_gate.CLIENTAPP_COMMAND
    assert all(table[t] == TASK_TYPE_TO_COMMAND[t] for t in table if t != TaskType.CLIENT_APP)
    assert shutil.which(app_gate.CLIENTAPP_COMMAND, path=str(Path(__import__("sys").executable).parent))
    with pytest.raises(RuntimeError, match="seam moved"):
        app_gate.install_launcher({}, TaskType.CLIENT_APP)


def _altered_copy(target: Path) -> Path:
    """The project's app as git tracks it, with one line added to the ClientApp: what a lab could submit."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    client = target / "client" / "client_app.py"
    client.write_text(client.read_text() + "\n# read the site's files and send them back\n")
    return target


@pytest.mark.slow
def test_every_site_refuses_an_altered_app_from_the_lab_and_runs_the_approved_one(tmp_path, tiny_cohort_template):
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from cardiacfl.deployment import (Processes, StudyPaths, approve_for_sites, flower_environment, free_port,
                                      follow_study, register_site, site_node_command, start_lab, study_run_config, submit)
    from cardiacfl.provision import provision
    from rundb.schema import Round, Study
    from server.study_config import load_study_config

    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    sites = {s: tmp_path / "cohort" / "site_configs" / f"{s}.toml" for s in ("hospital-a", "hospital-b")}
    listed = ", ".join(f'"{p}"' for p in sites.values())
    (tmp_path / "study.toml").write_text(f'[study]\nname = "approval"\npreset = "tiny"\nsites = [{listed}]\ndp = true\n\n'
                                         '[secagg]\nenabled = false\n\n[[phase]]\nname = "finetune"\nrounds = 1\n')
    study = load_study_config(tmp_path / "study.toml")
    altered = _altered_copy(tmp_path / "altered")
    approved = approve_for_sites(sites.values(), note="the study's app")  # each hospital's operator
    assert app_hash(altered) != approved

    paths = StudyPaths.under(tmp_path / "run")
    pki = provision(paths.work / "pki", list(sites))
    env, site_env = flower_environment(paths.flwr_home), flower_environment(tmp_path / "site-flwr-home")
    port, fleet = free_port(), free_port()
    paths.flwr_home.mkdir(parents=True)
    (paths.flwr_home / "config.toml").write_text(f'[superlink.study]\naddress = "127.0.0.1:{port}"\n'
                                                 f'root-certificates = "{pki["ca"]}"\n')
    processes = Processes()
    try:
        start_lab(processes, pki, env, paths.logs, superlink_port=port, fleet_listen=f"127.0.0.1:{fleet}")
        nodes = {site: register_site(str(key), site, env) for site, key in pki["site_keys"].items()}
        for site, config in sites.items():
            kit = pki["kits"][site]
            processes.start(f"supernode {site}", site_node_command(config, threads=1, supernode_args=[
                "--superlink", f"127.0.0.1:{fleet}", "--port", str(free_port()), "--root-certificates",
                str(kit / "ca.crt"), "--auth-supernode-private-key", str(kit / f"{site}.key")]),
                site_env, paths.logs / f"supernode-{site}.log")
        run_config = study_run_config(study, paths, None, site_nodes=nodes)
        for app in (altered, REPO):  # the altered app first, from the lab host; then the approved one
            started = time.time()
            run_id = submit(run_config, env, app=app)
            follow_study(paths, processes, run_id, env, after=started, status=lambda _: None, progress=None)
    finally:
        processes.stop()

    with Session(create_engine(f"sqlite:///{paths.db}")) as session:
        first, second = session.scalars(select(Study).order_by(Study.id)).all()
        refused = session.scalars(select(Round).where(Round.study_id == first.id, Round.phase == "finetune")).one()
        ran = session.scalars(select(Round).where(Round.study_id == second.id, Round.phase == "finetune")).one()
    assert first.config["app"]["fab_hash"] == app_hash(altered) and second.config["app"]["fab_hash"] == approved
    assert set(refused.participants["refused"]) == set(sites)  # every site refused, with the reason
    assert all("not approved" in reason for reason in refused.participants["refused"].values())
    assert not refused.participants.get("trained")
    assert sorted(ran.participants["trained"]) == sorted(sites) and not ran.participants.get("refused")
    installed = [p.name for p in (tmp_path / "site-flwr-home" / "apps").glob("*")]
    assert installed and not any(app_hash(altered)[:8] in name for name in installed)  # never unpacked at a site
