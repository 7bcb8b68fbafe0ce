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

from rundb.schema import Round, Study

STUDY = """
[study]
name = "stops"
preset = "tiny"
sites = ["cohort/site_configs/hospital-a.toml", "cohort/site_configs/hospital-b.toml", "cohort/site_configs/hospital-c.toml"]
dp = true

[secagg]
enabled = false

[[phase]]
name = "finetune"
rounds = 30
local_epochs = 1
"""


def _children(pid: int) -> dict[int, str]:
    """Every live descendant of `pid` with its command line (read from /proc)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands.get(child, "")
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, FileNotFoundError):
        return False


def _start(tmp_path, tiny_cohort_template):
    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    (tmp_path / "study.toml").write_text(STUDY)
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
def test_sigterm_stops_every_started_process_and_marks_the_study_interrupted(tmp_path, tiny_cohort_template):
    cli = _start(tmp_path, tiny_cohort_template)
    try:
        _wait_for_round(tmp_path / "run" / "study.db", cli)
        started = _children(cli.pid)
        assert any("flower-superlink" in c for c in started.values()) and sum("flower-supernode" in c for c in started.values()) == 3
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=60)
        time.sleep(1)
        assert [f"{p}: {c}" for p, c in started.items() if _alive(p)] == []
        study = _study(tmp_path / "run" / "study.db")
        assert study.status == "interrupted" and "SIGTERM" in study.status_reason
    finally:
        if cli.poll() is None:
            cli.kill()


@pytest.mark.slow
def test_a_killed_serverapp_is_noticed_and_the_study_marked_failed(tmp_path, tiny_cohort_template):
    cli = _start(tmp_path, tiny_cohort_template)
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
        if cli.poll() is None:
            cli.kill()
