"""A lab operator's faults, replayed on a real one-machine deployment: SIGTERM to `cardiacfl study run` stops every
process it started and marks the study interrupted; a ServerApp killed mid-study is noticed and the study marked
failed with Flower's reason, instead of `running` for hours."""

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

from protocol.procfs import command_line, is_alive
from rundb.schema import Round, Study

def _children(pid: int) -> dict[int, str]:
    """Every live descendant of `pid` with its command line."""
    from protocol.procfs import descendants

    return {child: command_line(child).replace(b"\0", b" ").decode() for child in descendants(pid)}


def _stop_tree(cli: subprocess.Popen) -> None:
    """Cleanup when a test fails midway: SIGTERM `study run` (it stops what it started, in order), then SIGKILL
    whatever of its process tree is left (its children run in sessions of their own and would outlive it)."""
    from protocol.procfs import descendants

    tree = descendants(cli.pid)
    if cli.poll() is None:
        cli.send_signal(signal.SIGTERM)
        try:
            cli.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cli.kill()
            cli.wait()
    for pid in tree:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _commands_naming(path: Path) -> dict[int, str]:
    """Live processes whose command line names `path` (this test's own folder)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        command = command_line(int(entry.name)).replace(b"\0", b" ").decode()
        if str(path) in command and int(entry.name) != os.getpid() and is_alive(int(entry.name)):
            found[int(entry.name)] = command
    return found


def _start(tmp_path, tiny_cohort_template, study):
    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    (tmp_path / "study.toml").write_text(study)
    cli = subprocess.Popen([sys.executable, "-m", "cardiacfl.cli", "study", "run", "--study", str(tmp_path / "study.toml"),
                            "--work", str(tmp_path / "run")], stdout=(tmp_path / "cli.log").open("wb"),
                           stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    return cli


def _wait_for_round(db: Path, cli, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert cli.poll() is None, "study run exited early"
        if db.exists():
            try:
                with Session(create_engine(f"sqlite:///{db}")) as s:
                    if s.scalars(select(Round).where(Round.seconds.is_not(None))).first() is not None:
                        return
            except Exception:  # tables not created yet
                pass
        time.sleep(1)
    raise AssertionError("no round finished in time")


def _study(db: Path) -> Study:
    with Session(create_engine(f"sqlite:///{db}")) as s:
        return s.scalars(select(Study)).one()


@pytest.mark.slow
def test_sigterm_stops_every_started_process_and_marks_the_study_interrupted(tmp_path, tiny_cohort_template, tiny_dp_study):
    cli = _start(tmp_path, tiny_cohort_template, tiny_dp_study("stops", rounds=30))
    try:
        _wait_for_round(tmp_path / "run" / "study.db", cli)
        started = _children(cli.pid)
        assert any("flower-superlink" in c for c in started.values())
        assert sum("client.site_node" in c for c in started.values()) == 3  # SuperNode + warm worker per site
        assert sum("client.site_worker" in c for c in started.values()) == 3
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=60)
        time.sleep(3)
        assert [f"{p}: {c}" for p, c in started.items() if is_alive(p)] == []  # nothing it started survives
        # nor anything started during the stop (a site worker restarted by its supervisor would name the cohort)
        assert [c for c in _commands_naming(tmp_path).values()] == []
        study = _study(tmp_path / "run" / "study.db")
        assert study.status == "interrupted" and "SIGTERM" in study.status_reason
    finally:
        _stop_tree(cli)


@pytest.mark.slow
def test_a_killed_serverapp_is_noticed_and_the_study_marked_failed(tmp_path, tiny_cohort_template, tiny_dp_study):
    cli = _start(tmp_path, tiny_cohort_template, tiny_dp_study("stops", rounds=30))
    try:
        _wait_for_round(tmp_path / "run" / "study.db", cli)
        serverapps = [p for p, c in _children(cli.pid).items() if "flwr-serverapp" in c]
        assert len(serverapps) == 1
        os.kill(serverapps[0], signal.SIGKILL)
        killed = time.time()
        cli.wait(timeout=60)  # the lab watches the ServerApp's PID: noticed within a poll, not Flower's ~50 s
        noticed = time.time() - killed
        output = (tmp_path / "cli.log").read_text()
        assert cli.returncode != 0 and "ServerApp process exited" in output, output[-2000:]
        study = _study(tmp_path / "run" / "study.db")
        assert study.status == "failed" and "ServerApp process exited" in study.status_reason
        assert noticed < 30, f"noticed {noticed:.0f} s after the kill"
    finally:
        _stop_tree(cli)


def _rounds(db: Path):
    with Session(create_engine(f"sqlite:///{db}")) as s:
        studies = s.scalars(select(Study)).all()
        rows = [(r.phase, r.server_round, sorted(r.participants.get("trained", [])), r.seconds is not None)
                for r in s.scalars(select(Round).order_by(Round.phase, Round.server_round))]
        return studies, rows


def _ledger_rounds(root: Path) -> dict[str, list[int]]:
    """Each site's ledger: the rounds it recorded DP training for."""
    from client.site_round import open_ledger
    from sitedata.site_config import load_site_config

    rounds = {}
    for config in sorted((root / "cohort" / "site_configs").glob("*.toml")):
        site = load_site_config(config)
        with open_ledger(site) as ledger:
            rounds[site.site_id] = [entry["round"] for entry in ledger.rounds if "epsilon" in entry]  # one per round
    return rounds


@pytest.mark.slow
def test_resume_goes_on_from_the_last_round_in_the_same_study_row(tmp_path, tiny_cohort_template, tiny_dp_study):
    short = tiny_dp_study("stops", rounds=4)
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    shutil.copytree(tiny_cohort_template, reference / "cohort")
    (reference / "study.toml").write_text(short)
    subprocess.run([sys.executable, "-m", "cardiacfl.cli", "study", "run", "--study", str(reference / "study.toml"),
                    "--work", str(reference / "run")], check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])

    cli = _start(tmp_path, tiny_cohort_template, short)
    try:
        _wait_for_round(tmp_path / "run" / "study.db", cli)
        serverapp = next(p for p, c in _children(cli.pid).items() if "flwr-serverapp" in c)
        os.kill(serverapp, signal.SIGKILL)
        cli.wait(timeout=60)
    finally:
        _stop_tree(cli)
    studies, before = _rounds(tmp_path / "run" / "study.db")
    assert [s.status for s in studies] == ["failed"]
    finished_before = [r for r in before if r[3]]
    assert 1 <= len(finished_before) < 4

    resumed = subprocess.run([sys.executable, "-m", "cardiacfl.cli", "study", "run", "--study", str(tmp_path / "study.toml"),
                              "--work", str(tmp_path / "run"), "--resume"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    studies, after = _rounds(tmp_path / "run" / "study.db")
    _, expected = _rounds(reference / "run" / "study.db")
    assert len(studies) == 1 and studies[0].status == "finished"  # the same row, finished
    assert studies[0].config["resumes"][0]["after"] == "failed"  # the audit keeps the stop
    assert after[:len(finished_before)] == finished_before  # finished rounds were kept, not run again
    assert after == expected  # every round once, aggregated, with every site
    ledgers, reference_ledgers = _ledger_rounds(tmp_path), _ledger_rounds(reference)
    for site, rounds in ledgers.items():
        # every round the study aggregated is in the ledger; an attempt cut off by the kill may be there too
        assert set(rounds) == set(reference_ledgers[site]) and len(rounds) - len(reference_ledgers[site]) <= 1
