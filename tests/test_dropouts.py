"""A hospital that dies mid-study, on a real one-machine deployment with SecAgg+ and DP: its node (SuperNode,
warm worker and ClientApp) is killed once a round has started. The round completes with the other two sites
within about one heartbeat (10 s, lapsed after 2 x 10 s), not Flower's 2 x 30 s or the stage timeout, and the
dashboard shows the site offline with the rounds it missed."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from rundb.schema import Round, Study
from tests.test_clean_stops import _children, _stop_tree

REPO = Path(__file__).resolve().parents[1]


def _study_text(rounds: int) -> str:
    sites = ", ".join(f'"cohort/site_configs/hospital-{s}.toml"' for s in "abc")
    return (f'[study]\nname = "dropout"\npreset = "tiny"\nsites = [{sites}]\ndp = true\n\n'
            f'[secagg]\nenabled = true\ntimeout_s = 300\n\n'
            f'[[phase]]\nname = "finetune"\nrounds = {rounds}\nlocal_epochs = 1\nmin_sites = 2\n')


def _rounds(db: Path) -> list[Round]:
    try:
        with Session(create_engine(f"sqlite:///{db}")) as s:
            return list(s.scalars(select(Round).order_by(Round.server_round)))
    except Exception:  # tables not created yet
        return []


@pytest.mark.slow
def test_a_site_killed_mid_round_costs_about_one_heartbeat(tmp_path, tiny_cohort_template):
    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    (tmp_path / "study.toml").write_text(_study_text(rounds=3))
    db = tmp_path / "run" / "study.db"
    cli = subprocess.Popen([sys.executable, "-m", "cardiacfl.cli", "study", "run", "--study", str(tmp_path / "study.toml"),
                            "--work", str(tmp_path / "run")], stdout=(tmp_path / "cli.log").open("wb"),
                           stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not any(r.server_round == 2 for r in _rounds(db)):  # round 2 has started
            assert cli.poll() is None, (tmp_path / "cli.log").read_text()[-2000:]
            time.sleep(0.5)
        node = [pid for pid, command in _children(cli.pid).items()
                if "client.site_node" in command and "hospital-b.toml" in command]
        assert len(node) == 1, _children(cli.pid)
        for pid in [node[0], *_children(node[0])]:  # the SuperNode, its SuperExec, ClientApp and warm worker
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert cli.wait(timeout=600) == 0, (tmp_path / "cli.log").read_text()[-3000:]
    finally:
        _stop_tree(cli)

    rounds = {r.server_round: r for r in _rounds(db)}
    assert sorted(rounds) == [1, 2, 3]
    assert sorted(rounds[1].participants["trained"]) == ["hospital-a", "hospital-b", "hospital-c"]
    for later in (2, 3):
        assert sorted(rounds[later].participants["trained"]) == ["hospital-a", "hospital-c"], rounds[later].participants
    assert rounds[2].participants["dropped"] == ["hospital-b"]  # the audit names the site that dropped out
    extra = rounds[2].seconds - rounds[3].seconds
    print(f"round seconds: {[round(rounds[i].seconds, 1) for i in (1, 2, 3)]}; the dropout round took {extra:.1f} s more")
    assert extra < 40, f"the dropout cost {extra:.0f} s"

    from dashboard import data

    url = f"sqlite:///{db}"
    with Session(create_engine(url)) as s:
        study_id = s.scalars(select(Study.id)).one()
    health = data.site_health(url, study_id).set_index("site")
    assert health.loc["hospital-b", "state"] == "offline" and health.loc["hospital-b", "rounds missed"] == 2
    assert health.loc["hospital-b", "last round trained"] == "finetune 1"
    assert (health.loc[["hospital-a", "hospital-c"], "state"] == "online").all()
