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
    """A fresh, empty database on the test server; dropped afterwards, with its reader role."""
    from rundb.scratch import scratch_database

    with scratch_database(postgres_admin_url) as url:
        yield url


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
    from rundb.migrate import LEGACY_REVISIONS, alembic_config

    engine = create_run_engine(url)
    with engine.begin() as c:
        command.upgrade(alembic_config(c), LEGACY_REVISIONS[version])
        c.execute(text("DROP TABLE alembic_version"))
        c.execute(text("CREATE TABLE schema_info (version INTEGER PRIMARY KEY)"))
        c.execute(text("INSERT INTO schema_info (version) VALUES (1)" + (", (2)" if version == 2 else "")))
        c.execute(text("INSERT INTO studies (name, preset, config, status, current_phase, current_round, total_rounds, "
                       "started) VALUES ('old', 'small', '{}', 'interrupted', 'finetune', 3, 9, 1.7e9)"))
        if version == 2:
            c.execute(text("UPDATE studies SET status_reason = 'stopped by SIGTERM'"))
    engine.dispose()


@pytest.fixture
def server_task_identity():
    """Messages take their run and sender from the process's task identity, as in a ServerApp process
    (tests that build server messages outside one use it)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before
