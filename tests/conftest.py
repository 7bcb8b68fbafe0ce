"""Shared fixtures: the real PhysioNet records and a tiny synthetic cohort."""

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = Path(os.environ.get("CARDIACFL_PHYSIONET_DIR", REPO.parent / "shared" / "data" / "physionet"))


@pytest.fixture(scope="session")
def physionet() -> Path:
    if not (PHYSIONET / "s0010_re.hea").is_file():
        pytest.fail(f"real PhysioNet test records not found in {PHYSIONET} (set CARDIACFL_PHYSIONET_DIR)")
    return PHYSIONET


@pytest.fixture(scope="session")
def tiny_cohort_template(tmp_path_factory) -> Path:
    from synthetic.cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, n_sites=3, subjects=8, seed=1, workers=1)
    return out


@pytest.fixture
def tiny_cohort(tiny_cohort_template, tmp_path) -> Path:
    """A private copy tests may corrupt."""
    target = tmp_path / "cohort"
    shutil.copytree(tiny_cohort_template, target)
    return target


@pytest.fixture
def tiny_dp_study():
    """study.toml text for the tiny cohort's 3 sites (copied to `cohort/` beside it): DP fine-tuning, no SecAgg+."""
    def text(name: str, rounds: int) -> str:
        sites = ", ".join(f'"cohort/site_configs/hospital-{s}.toml"' for s in "abc")
        return (f'[study]\nname = "{name}"\npreset = "tiny"\nsites = [{sites}]\ndp = true\n\n'
                f'[secagg]\nenabled = false\n\n[[phase]]\nname = "finetune"\nrounds = {rounds}\nlocal_epochs = 1\n')
    return text


POSTGRES_ENV = "CARDIACFL_TEST_POSTGRES_URL"  # scripts/test_postgres.sh prints it
REQUIRE_POSTGRES_ENV = "CARDIACFL_REQUIRE_POSTGRES"  # CI sets it: a missing server fails instead of skipping


@pytest.fixture
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        message = f"no PostgreSQL server for the tests: export {POSTGRES_ENV}=$(scripts/test_postgres.sh)"
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_admin_url):
    """A fresh, empty database on the test server; dropped afterwards, with its reader role (`reader_role`)."""
    from uuid import uuid4

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cardiacfl_test_{uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(text(f'DROP ROLE IF EXISTS "{reader_role(name)}"'))
        admin.dispose()


def reader_role(database: str) -> str:
    """The one read-only role a test may create for a test database (roles are server-wide)."""
    from sqlalchemy.engine import make_url

    return f"{make_url(database).database if '://' in database else database}_reader"


@pytest.fixture(params=["sqlite", "postgresql"])
def run_db_url(request, tmp_path) -> str:
    """The run database's URL on each backend the lab supports."""
    if request.param == "sqlite":
        return str(tmp_path / "run.db")
    return request.getfixturevalue("postgres_url")


def legacy_run_database(url: str, version: int) -> None:
    """A database as the code before Alembic left it: the tables of `version` and a schema_info table."""
    from alembic import command
    from sqlalchemy import text

    from rundb.engine import create_run_engine
    from rundb.migrate import alembic_config

    engine = create_run_engine(url)
    with engine.begin() as c:
        command.upgrade(alembic_config(c), {1: "0001", 2: "0002"}[version])
        c.execute(text("DROP TABLE alembic_version"))
        c.execute(text("CREATE TABLE schema_info (version INTEGER PRIMARY KEY)"))
        c.execute(text("INSERT INTO schema_info (version) VALUES (1)" + (", (2)" if version == 2 else "")))
        reason = ", status_reason" if version == 2 else ""
        c.execute(text(f"INSERT INTO studies (name, preset, config, status, current_phase, current_round, total_rounds, "
                       f"started{reason}) VALUES ('old', 'small', '{{}}', 'interrupted', 'finetune', 3, 9, 1.7e9"
                       f"{', :why' if version == 2 else ''})"), {"why": "stopped by SIGTERM"} if version == 2 else {})
    engine.dispose()
