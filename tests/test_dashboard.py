"""Every dashboard page with Streamlit's AppTest against a database written by the project's own writer,
plus the sign-in gate and the empty/broken states."""

import json
import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import legacy_run_database
from rundb.seed import seed_study
from rundb.access import grant_reader
from rundb.scratch import reader_role

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ["views/overview.py", "views/sites.py", "views/privacy.py", "views/generations.py", "views/audit.py"]


@pytest.fixture(autouse=True)
def kiosk_token(monkeypatch):
    from dashboard import auth

    monkeypatch.setenv("CARDIACFL_DASHBOARD_URL_TOKEN", "1")  # the kiosk opt-in these tests sign in with
    auth.throttle.clear()  # one throttle per server process: each test starts without earlier failures
    yield
    auth.throttle.clear()


@pytest.fixture
def seeded_db(run_db_url, tmp_path, monkeypatch):
    """A seeded study on each backend; the writer's URL. On PostgreSQL the dashboard reads it as its own
    read-only role, the way a lab deploys it."""
    seed_study(run_db_url, rounds=6, sites=3)
    monkeypatch.setenv("CARDIACFL_RUN_DB", _dashboard_url(run_db_url, tmp_path, monkeypatch))
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    return run_db_url


def _dashboard_url(writer_url: str, tmp_path, monkeypatch) -> str:
    if "://" not in writer_url:
        return writer_url
    (tmp_path / "reader-password").write_text("reader-secret\n")
    monkeypatch.setenv("CARDIACFL_DB_PASSWORD_FILE", str(tmp_path / "reader-password"))
    return grant_reader(writer_url, reader_role(writer_url), password="reader-secret")


def _signed_in(timeout=30):
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.query_params["token"] = "s3cret"
    return at.run()


def _text(at) -> str:
    parts = [e.value for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error")
             for e in getattr(at, kind)]
    return " ".join(str(p) for p in parts)


def test_no_study_data_without_the_credential(seeded_db):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "Sign in" in _text(at) and "Study seeded" not in _text(at)
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in _text(at)
    time.sleep(1.1)  # the first failure costs this client a second
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    assert "Study seeded" in _text(at)


@pytest.mark.parametrize("page, expected", [
    ("views/overview.py", "Validation, round by round"),
    ("views/sites.py", "Cross-site evaluation"),
    ("views/privacy.py", "lifetime budget"),
    ("views/generations.py", "Reference ECG"),
    ("views/audit.py", "Audit"),
])
def test_every_page_renders_its_key_elements(seeded_db, page, expected):
    at = _signed_in()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert expected in _text(at)
    if page == "views/overview.py":
        assert "without DP" in _text(at) and "pretrain 60" in _text(at)  # the public data is declared
    if page == "views/sites.py":  # the cross-site matrix: the global row and each site's own (local) cell
        assert "never leaves it" in _text(at)
    if page in ("views/overview.py", "views/sites.py"):  # an enrolled site that never reported is still listed
        health = at.dataframe[0].value.set_index("site")
        assert health.loc["hospital-silent", "state"] == "never reported"
        assert health.loc["hospital-silent", "rounds missed"] == 6 and health.loc["hospital-00", "state"] == "online"
    if page == "views/privacy.py":
        assert "hospital-silent" in list(at.dataframe[0].value["site"])
    if page == "views/privacy.py":
        assert any("out of budget" in w.value or "near budget" in w.value for w in at.warning)
    if page == "views/audit.py":
        assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 9  # 6 rounds and the 3 public steps
        assert "not a registered site" in _text(at) and "went down" in _text(at)
        assert "refused the lab's app" in _text(at) and "5e" * 32 in _text(at)  # and the app the study ran


def test_the_references_page_shows_the_study_beside_the_benchmark_arms(seeded_db, tmp_path, monkeypatch):
    row = {"eval": "pooled", "auroc_ci": [0.7, 0.8], "r2_mean": 0.2, "retrieval_top1": None, "retrieval_chance": None,
           "ssim": None, "ssim_mean_clip": None, "ef_mae": None, "ef_mae_mean_clip": None, "seconds": 1.0}
    rows = [row | {"setting": s, "epsilon": e, "encoder": enc, "auroc_mean": 0.75}
            for s, e in (("centralized", None), ("federated-dp", 8.0)) for enc in ("ecg-only", "cmr-aligned")]
    (tmp_path / "utility.json").write_text(json.dumps(rows))
    monkeypatch.setenv("CARDIACFL_UTILITY_JSON", str(tmp_path / "utility.json"))
    at = _signed_in()
    at.switch_page("views/references.py").run()
    assert not at.exception, at.exception
    assert "ecg-only encoder" in _text(at) and "cmr-aligned encoder" in _text(at)
    assert at.metric[0].value == "0.750"  # the seeded study's last fine-tune round on the lab's panel
    assert len(at.dataframe[0].value) == 4


def test_a_simulated_study_shows_the_full_cross_site_matrix(seeded_db):
    from protocol.round_record import SiteReport
    from rundb.writer import add_site_reports

    sites = ["hospital-00", "hospital-01", "hospital-02"]
    add_site_reports(str(seeded_db), 1, "finetune", 2, [SiteReport(site, "cross", 10, {"scored_model": f"{owner} (local)", "loss": 0.5})
                                                        for owner in sites for site in sites])
    at = _signed_in()
    at.switch_page("views/sites.py").run()
    assert not at.exception, at.exception
    assert "a simulation fills it" in _text(at)


def test_missing_database_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIACFL_RUN_DB", str(tmp_path / "nope.db"))
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    at = _signed_in()
    assert not at.exception and "not found" in _text(at)


def test_an_unreachable_database_server_is_a_clear_message_without_the_password(monkeypatch):
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CARDIACFL_RUN_DB", f"postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:{port}/cardiacfl")
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    at = _signed_in()
    assert not at.exception
    assert f"Cannot read the run database at postgresql+psycopg://reader:***@127.0.0.1:{port}/cardiacfl" in _text(at)
    assert "s3cr3t-pw" not in _text(at)


def test_empty_and_older_databases_are_clear_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("CARDIACFL_RUN_DB", str(empty))
    at = _signed_in()
    assert not at.exception and "empty" in _text(at)
    old = tmp_path / "old.db"
    legacy_run_database(str(old), 1)
    monkeypatch.setenv("CARDIACFL_RUN_DB", str(old))
    at = _signed_in()
    assert not at.exception and "older schema" in _text(at) and "cardiacfl rundb upgrade" in _text(at)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("create table studies (id integer primary key, name text)")
    monkeypatch.setenv("CARDIACFL_RUN_DB", str(foreign))
    at = _signed_in()
    assert not at.exception and "not a run database" in _text(at)


def test_a_study_without_generations_says_so(tmp_path, monkeypatch):
    path = tmp_path / "study.db"
    seed_study(str(path), rounds=3, sites=2, generations=False)
    monkeypatch.setenv("CARDIACFL_RUN_DB", str(path))
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    at = _signed_in()
    at.switch_page("views/generations.py").run()
    assert not at.exception and "No generations yet" in _text(at)


def test_a_url_token_is_refused_unless_the_kiosk_opt_in_is_set_and_leaves_the_address(seeded_db, monkeypatch):
    monkeypatch.delenv("CARDIACFL_DASHBOARD_URL_TOKEN")
    at = _signed_in()
    assert "Study seeded" not in _text(at) and "token" not in at.query_params


def test_wrong_passwords_are_throttled_then_locked_out():
    from dashboard.throttle import SignInThrottle

    now = [0.0]
    throttle = SignInThrottle(client_limit=5, global_limit=8, clock=lambda: now[0])
    waits = []
    for _ in range(4):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait_s("10.0.0.1"))
    assert waits == [1.0, 2.0, 4.0, 8.0]  # each failure doubles the wait
    assert throttle.wait_s("10.0.0.2") == 0  # another client is not slowed by this one
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 900  # locked out
    for i in range(3):  # guesses spread over addresses: the server-wide limit locks everyone out
        throttle.failed(f"10.0.1.{i}")
    assert throttle.wait_s("10.0.0.9") > 0
    now[0] += 901
    assert throttle.wait_s("10.0.0.9") == 0 and throttle.wait_s("10.0.0.1") == 0


def test_thirty_wrong_passwords_in_the_app_are_stopped_after_a_few(seeded_db):
    """Before: 30 wrong tokens in 43 s, none slowed. Now the form refuses to even compare after the first."""
    at = AppTest.from_file(APP, default_timeout=30).run()
    messages = []
    for _ in range(30):
        at.text_input[0].input("wrong")
        at.button[0].click().run()
        messages.append(at.error[0].value if at.error else "")
    assert messages[0] == "Wrong password."
    assert sum(m == "Wrong password." for m in messages) <= 5 and "Too many failed sign-ins" in messages[-1]


def test_a_run_database_from_before_alembic_is_shown_once_the_writer_upgraded_it(run_db_url, tmp_path, monkeypatch):
    from rundb.writer import RunDatabase

    legacy_run_database(run_db_url, 1)
    RunDatabase(run_db_url).update_study(1, status_reason="stopped by SIGTERM")
    monkeypatch.setenv("CARDIACFL_RUN_DB", _dashboard_url(run_db_url, tmp_path, monkeypatch))
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "s3cret")
    at = _signed_in()
    assert not at.exception and "stopped by SIGTERM" in _text(at)


def test_the_overview_counts_federated_rounds_and_draws_the_public_model_as_a_reference(run_db_url, monkeypatch):
    from dashboard import charts, data

    seed_study(run_db_url, rounds=4, sites=2, generations=False)
    rounds = data.rounds(run_db_url, 1)
    assert list(charts.federated(rounds)["step"]) == [1, 2, 3, 4] and len(rounds) == 7  # public steps are no rounds
    chart = charts.panel(rounds, "AUROC", charts.PANELS["AUROC"]).to_dict()
    lines, rules = chart["layer"]
    assert chart["title"] == "AUROC" and lines["encoding"]["x"]["axis"]["format"] == "d"  # whole rounds only
    figures = {row["figure"] for row in chart["datasets"][lines["data"]["name"]]}
    assert figures == {"mean AUROC", "mean AUROC (lab panel)"}  # human names, not raw keys
    reference = chart["datasets"][rules["data"]["name"]]
    assert reference == [{"figure": "mean AUROC (lab panel): public model alone", "value": 0.55}]
    assert charts.panel(rounds, "SSIM", charts.PANELS["SSIM"]) is None  # a figure the study does not have

    # a held-out figure with its bootstrap interval gets a band over the rounds that have one
    banded = rounds.assign(**{"global/lab/mean_auroc_low": rounds["global/lab/mean_auroc"] - 0.05,
                              "global/lab/mean_auroc_high": rounds["global/lab/mean_auroc"] + 0.04})
    chart = charts.panel(banded, "AUROC", charts.PANELS["AUROC"]).to_dict()
    band = chart["layer"][2]
    assert band["mark"]["type"] == "area" and band["encoding"]["y2"]["field"] == "high"
    rows = chart["datasets"][band["data"]["name"]]
    assert rows and all(r["figure"] == "mean AUROC (lab panel)" and r["high"] - r["low"] == pytest.approx(0.09)
                        for r in rows)


def test_pages_use_icons_every_machine_can_draw():
    import re

    icons = re.findall(r'icon="([^"]+)"', Path(APP).read_text())
    assert icons and all(icon.startswith(":material/") for icon in icons), icons


def test_the_dashboard_hides_streamlits_developer_toolbar(monkeypatch):
    import subprocess

    from typer.testing import CliRunner

    from cardiacfl.cli import app

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, env: calls.append(args) or 0)
    assert CliRunner().invoke(app, ["dashboard"]).exit_code == 0
    args = calls[0]
    assert args[args.index("--client.toolbarMode") + 1] == "viewer"


def test_the_password_can_come_from_a_secret_file_and_an_unreadable_one_is_an_error(tmp_path, monkeypatch):
    from dashboard import auth

    monkeypatch.delenv("CARDIACFL_DASHBOARD_PASSWORD", raising=False)
    secret = tmp_path / "dashboard_password"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv(auth.PASSWORD_FILE_ENV, str(secret))
    assert auth.configured_secret() == "from-the-file"
    monkeypatch.setenv("CARDIACFL_DASHBOARD_PASSWORD", "from-the-environment")
    assert auth.configured_secret() == "from-the-file"  # the file wins: a container's secret over its environment
    monkeypatch.setenv(auth.PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="missing: cannot read the dashboard password"):
        auth.configured_secret()
