"""The run database on both backends the lab supports (SQLite, PostgreSQL through psycopg 3): Alembic's
migrations build exactly the tables the code declares, older databases are upgraded in place without losing
a row, readers only read and say what is wrong, and the dashboard's role cannot write."""

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from conftest import legacy_run_database
from protocol.participants import Participants
from protocol.round_record import RoundRecord, SiteReport
from rundb.access import grant_reader
from rundb.engine import create_run_engine
from rundb.migrate import alembic_config, current_revision, head_revision
from rundb.reader import RunDbUnavailable, check_schema, open_readonly
from rundb.schema import Base
from rundb.scratch import reader_role
from rundb.url import with_user
from rundb.writer import RunDatabase


def test_the_migrations_build_exactly_the_declared_tables(run_db_url):
    db = RunDatabase(run_db_url)
    with db.engine.connect() as c:
        assert current_revision(c) == head_revision()
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    check_schema(open_readonly(run_db_url))


def test_every_write_reads_back_on_each_backend(run_db_url):
    db = RunDatabase(run_db_url)
    study = db.start_study("s", "tiny", {"sites": ["a", "b"], "nan": float("nan")}, total_rounds=2)
    first = RoundRecord("finetune", 1, started=1.0, participants=Participants(trained=["a"]))
    db.record_round(study, first)  # an attempt cut off before it aggregated ...
    db.record_round(study, RoundRecord("finetune", 1, started=2.0, seconds=3.5, checkpoint="c.pt",  # ... run again
                                       participants=Participants(trained=["a"], declined={"b": "budget"}),
                                       site_reports=[SiteReport("a", "fit", 7, {"examples": 7, "epsilon": 1.25})]))
    db.add_generations(study, "generator", 1, [{"reference": "ref-1", "ecg": b"\x00" * 10, "generated": b"\x01" * 10}])
    assert db.last_aggregated_round(study, "finetune") == 1
    assert db.last_epsilon_by_site() == {"a": 1.25}
    db.update_study(study, status="failed", status_reason="a site sent NaN")
    assert db.resumable_study("s") == study
    with open_readonly(run_db_url).connect() as c:
        participants = c.execute(text("SELECT participants FROM rounds")).scalar_one()
        config = c.execute(text("SELECT config FROM studies")).scalar_one()
    if isinstance(participants, str):  # SQLite hands JSON back as text
        import json
        participants, config = json.loads(participants), json.loads(config)
    assert Participants.from_json(participants) == Participants(trained=["a"], declined={"b": "budget"})  # one row, the latest attempt
    assert set(participants) >= {"trained", "declined", "outcome"}
    assert config["nan"] is None  # no NaN in JSON on either backend


@pytest.mark.parametrize("version", [1, 2])
def test_a_database_from_before_alembic_is_upgraded_in_place(run_db_url, version):
    legacy_run_database(run_db_url, version)
    with pytest.raises(RunDbUnavailable, match=f"older schema \\(version {version}"):
        check_schema(open_readonly(run_db_url))  # readers never upgrade; they say who does
    db = RunDatabase(run_db_url)
    db.update_study(1, status_reason="kept" if version == 1 else "stopped by SIGTERM")
    with db.engine.connect() as c:
        assert current_revision(c) == head_revision()
        assert "schema_info" not in inspect(c).get_table_names()
        assert c.execute(text("SELECT name, current_round, status_reason FROM studies")).all() == [
            ("old", 3, "kept" if version == 1 else "stopped by SIGTERM")]
    check_schema(open_readonly(run_db_url))


def test_readers_name_an_older_and_a_newer_revision(run_db_url):
    engine = create_run_engine(run_db_url)
    with engine.begin() as c:
        command.upgrade(alembic_config(c), "0002")
    with pytest.raises(RunDbUnavailable, match="revision 0002, older .* `cardiacfl rundb upgrade"):
        check_schema(open_readonly(run_db_url))
    RunDatabase(run_db_url)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(RunDbUnavailable, match="revision 9999, newer than this reader knows"):
        check_schema(open_readonly(run_db_url))
    engine.dispose()


def test_an_empty_database_is_a_clear_message(run_db_url):
    create_run_engine(run_db_url).connect().close()  # the SQLite file exists, with no tables
    with pytest.raises(RunDbUnavailable, match="empty"):
        check_schema(open_readonly(run_db_url))


def test_a_read_only_engine_cannot_write(run_db_url):
    RunDatabase(run_db_url).start_study("s", "tiny", {}, total_rounds=1)
    with pytest.raises((OperationalError, DBAPIError), match="readonly|read-only"):
        with open_readonly(run_db_url).begin() as c:
            c.execute(text("UPDATE studies SET status = 'finished'"))


def test_two_writers_starting_at_once_both_find_the_newest_schema(postgres_url):
    errors: list[BaseException] = []

    def open_writer():
        try:
            RunDatabase(postgres_url)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=open_writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with create_run_engine(postgres_url).connect() as c:
        assert current_revision(c) == head_revision()


def test_the_dashboards_role_reads_everything_and_writes_nothing(postgres_url, tmp_path, monkeypatch):
    db = RunDatabase(postgres_url)
    db.start_study("s", "tiny", {}, total_rounds=1)
    role = reader_role(postgres_url)
    (tmp_path / "reader-password").write_text("p'w; DROP ROLE x --\n")  # quoting is the library's job
    monkeypatch.setenv("CARDIACFL_DB_PASSWORD_FILE", str(tmp_path / "reader-password"))
    reader_url = grant_reader(postgres_url, role, password="p'w; DROP ROLE x --")
    assert make_url(reader_url).password is None and make_url(reader_url).username == role
    reader = create_run_engine(reader_url)  # the password comes from the file, not the URL
    check_schema(reader)
    with reader.connect() as c:
        assert c.execute(text("SELECT name FROM studies")).scalar_one() == "s"
    db.record_round(1, RoundRecord("finetune", 1, started=0.0))  # a table row written after the grant is readable too
    with reader.connect() as c:
        assert c.execute(text("SELECT count(*) FROM rounds")).scalar_one() == 1
    for statement in ("UPDATE studies SET status = 'finished'", "DELETE FROM site_metrics",
                      "CREATE TABLE x (i integer)"):
        with pytest.raises(DBAPIError, match="read-only transaction"):
            with reader.begin() as c:
                c.execute(text(statement))
    with pytest.raises(ProgrammingError, match="permission denied"):  # even a session that turns read-only off
        with reader.begin() as c:
            c.execute(text("SET TRANSACTION READ WRITE"))
            c.execute(text("UPDATE studies SET status = 'finished'"))
    reader.dispose()


def test_sqlite_run_databases_have_no_roles(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL feature"):
        grant_reader(str(tmp_path / "run.db"), "dashboard", password="x")


def test_the_lab_refuses_a_database_password_in_the_url():
    from cardiacfl.lab import prepare_run_database

    # Flower hands a run's config, which carries this URL, to every site's SuperNode.
    with pytest.raises(RuntimeError, match=r"\*\*\*.*out of the URL.*CARDIACFL_DB_PASSWORD_FILE") as err:
        prepare_run_database("postgresql+psycopg://lab:hunter2@127.0.0.1:1/cardiacfl")
    assert "hunter2" not in str(err.value)


def test_the_lab_prepares_the_database_and_the_dashboards_role(postgres_url, tmp_path, monkeypatch):
    from cardiacfl.lab import prepare_run_database

    legacy_run_database(postgres_url, 2)
    role = reader_role(postgres_url)
    grant_reader(postgres_url, role, password="reader")  # the role exists before the lab starts (compose's init)
    admin = make_url(postgres_url)
    (tmp_path / "pw").write_text(admin.password)
    monkeypatch.setenv("CARDIACFL_DB_PASSWORD_FILE", str(tmp_path / "pw"))
    shown = prepare_run_database(with_user(postgres_url), reader_role=role)
    assert admin.password not in shown
    with create_run_engine(postgres_url).connect() as c:
        assert current_revision(c) == head_revision()
    (tmp_path / "pw").write_text("reader")
    reader = create_run_engine(with_user(postgres_url, role))
    check_schema(reader)  # the tables the upgrade rebuilt are still granted
    reader.dispose()


def test_rundb_upgrade_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from cardiacfl.cli import app

    legacy_run_database(str(tmp_path / "old.db"), 1)
    result = CliRunner().invoke(app, ["rundb", "upgrade", "--db", str(tmp_path / "old.db")])
    assert result.exit_code == 0, result.output
    assert f"schema revision {head_revision()}" in result.output
    check_schema(open_readonly(str(tmp_path / "old.db")))


def _lab_state(state, db_url: str, monkeypatch) -> None:
    """A lab's state folder for `db_url`, kept as the lab keeps it: a PostgreSQL password in a file, not the URL."""
    import json

    from cardiacfl.lab import STATE_FILE

    if db_url.startswith("postgresql"):
        (state / "pw").write_text(make_url(db_url).password)
        monkeypatch.setenv("CARDIACFL_DB_PASSWORD_FILE", str(state / "pw"))
        db_url = with_user(db_url)
    (state / STATE_FILE).write_text(json.dumps({"db": db_url, "flwr_home": str(state)}))


def test_study_status_reads_a_postgresql_lab_with_the_password_file_and_keeps_no_connection(postgres_url, tmp_path, monkeypatch):
    from cardiacfl.lab import study_status

    db = RunDatabase(postgres_url)
    db.update_study(db.start_study("s", "tiny", {}, total_rounds=3), current_phase="finetune", current_round=2)
    _lab_state(tmp_path, postgres_url, monkeypatch)
    for _ in range(3):  # as `study status --follow` asks
        assert study_status(tmp_path) == {"study": "s", "id": 1, "status": "running", "phase": "finetune", "round": 2,
                                          "total_rounds": 3, "reason": ""}
    with db.engine.connect() as c:
        others = c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()")).scalar_one()
    assert others == 0


def test_study_stop_stops_the_flower_run_and_marks_only_a_running_study_interrupted(run_db_url, tmp_path, monkeypatch):
    import json

    import cardiacfl.lab as lab

    db = RunDatabase(run_db_url)
    finished = db.start_study("earlier", "tiny", {}, total_rounds=3)
    db.update_study(finished, status="finished")
    running = db.start_study("s", "tiny", {}, total_rounds=3)
    _lab_state(tmp_path, run_db_url, monkeypatch)
    (tmp_path / "runs.json").write_text(json.dumps([{"run_id": 11}, {"run_id": 42}]))
    stopped = []
    monkeypatch.setattr(lab, "flwr", lambda args, env: stopped.append(args) or "")
    monkeypatch.setattr(lab, "flower_run_status", lambda run_id, env: "finished:stopped")

    assert lab.stop_study(tmp_path) == 42
    assert stopped == [["stop", "42", "study"]]  # the latest submitted run, at the lab's federation
    status = lab.study_status(tmp_path)
    assert (status["id"], status["status"], status["reason"]) == (running, "interrupted", "stopped by `study stop`")
    with db.engine.connect() as c:
        statuses = dict(c.execute(text("SELECT id, status FROM studies")).all())
    assert statuses == {finished: "finished", running: "interrupted"}

    lab.stop_study(tmp_path)  # stopping again leaves the interrupted study's reason as it was
    assert lab.study_status(tmp_path)["reason"] == "stopped by `study stop`"


def test_a_restarted_lab_stops_the_runs_its_stop_orphaned_and_marks_their_study_interrupted(run_db_url, tmp_path, monkeypatch):
    """One `flwr ls` for every submitted run (not one per run), `flwr stop` only for those Flower still has
    running, and the study they ran marked interrupted so that `study submit --resume` continues it."""
    import json

    import cardiacfl.lab as lab

    db = RunDatabase(run_db_url)
    running = db.start_study("s", "tiny", {}, total_rounds=3)
    (tmp_path / "runs.json").write_text(json.dumps([{"run_id": 11}, {"run_id": 42}, {"run_id": 7}]))
    calls = []
    monkeypatch.setattr(lab, "flower_run_statuses", lambda env: calls.append("ls") or {11: "finished:completed", 42: "running"})
    monkeypatch.setattr(lab, "flwr", lambda args, env: calls.append(args) or "")

    assert lab.end_orphaned_runs(tmp_path, run_db_url, {}, status=lambda _: None) == [42]
    assert calls == ["ls", ["stop", "42", "study"]]  # run 7 is unknown to the SuperLink: left alone
    with db.engine.connect() as c:
        assert c.execute(text("SELECT status FROM studies WHERE id = :id"), {"id": running}).scalar_one() == "interrupted"

    calls.clear()
    (tmp_path / "runs.json").unlink()  # a lab that never ran a study asks Flower nothing
    assert lab.end_orphaned_runs(tmp_path, run_db_url, {}, status=lambda _: None) == [] and calls == []


def test_flower_run_statuses_reads_one_listing(monkeypatch):
    import json

    import cardiacfl.deployment as deployment

    reply = {"runs": [{"run-id": "11", "status": "finished:completed"}, {"run-id": "42", "status": "running"}]}
    asked = []
    monkeypatch.setattr(deployment, "flwr", lambda args, env: asked.append(args) or json.dumps(reply))
    assert deployment.flower_run_statuses({}) == {11: "finished:completed", 42: "running"}
    assert asked == [["ls", "study", "--format", "json"]]
