"""The run database's schema versions, kept by Alembic (`rundb/migrations/versions/`). The writer brings any
older database up to the newest revision in place when it opens it; readers only check the revision.

Databases written before Alembic kept their version in a `schema_info` table: they are stamped with the
matching revision first, then upgraded like any other."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from rundb.engine import create_run_engine

MIGRATIONS = Path(__file__).with_name("migrations")
LEGACY_REVISIONS = {1: "0001", 2: "0002"}  # schema_info.version -> the revision with the same tables
_UPGRADE_LOCK = 0x43464C  # PostgreSQL advisory lock: two writers starting at once upgrade one after the other


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    # Read once per process: the dashboard checks the revision on every page run.
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _scripts().get_current_head()


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def legacy_version(connection: Connection) -> int | None:
    """The hand-kept schema version of a database from before Alembic (None: not such a database)."""
    if "schema_info" not in inspect(connection).get_table_names():
        return None
    return connection.execute(text("SELECT max(version) FROM schema_info")).scalar()


def upgrade_to_head(engine: Engine) -> str:
    """Create or upgrade the run database; returns the revision it is at. One transaction: a failed
    upgrade leaves the database as it was (SQLite and PostgreSQL both have transactional DDL)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        config = alembic_config(connection)
        legacy = legacy_version(connection)
        if current_revision(connection) is None and legacy is not None:
            if legacy not in LEGACY_REVISIONS:
                raise RuntimeError(f"run database has schema_info version {legacy}, which no migration knows")
            command.stamp(config, LEGACY_REVISIONS[legacy])
        command.upgrade(config, "head")
        return current_revision(connection)


def upgrade(path_or_url: str) -> str:
    """`upgrade_to_head` on a database given by path or URL, with an engine of its own."""
    engine = create_run_engine(path_or_url)
    try:
        return upgrade_to_head(engine)
    finally:
        engine.dispose()
