"""Read-only access to the run database, for the summary table, the progress poller and the dashboard: it
never creates tables, and it says plainly when there is nothing to read or the schema is another revision."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from rundb.engine import create_run_engine
from rundb.migrate import current_revision, head_revision, known_revisions, legacy_version
from rundb.url import database_url, sqlite_path


class RunDbUnavailable(RuntimeError):
    """A run database that cannot be read (yet); the message says what to do."""


def open_readonly(path_or_url: str) -> Engine:
    file = sqlite_path(database_url(path_or_url))
    if file is not None and not file.is_file():
        raise RunDbUnavailable(f"Run database {file} not found. Run a study first (scripts/run_study.sh) or check the path.")
    try:
        return create_run_engine(path_or_url, read_only=True)
    except ValueError as err:
        raise RunDbUnavailable(str(err)) from err


def check_schema(engine: Engine) -> None:
    upgrade = "the lab upgrades it in place when it next starts a study, or now with `cardiacfl rundb upgrade --db URL`"
    with engine.connect() as connection:
        if not inspect(connection).get_table_names():
            raise RunDbUnavailable("The run database is empty: no study has been recorded yet.")
        revision = current_revision(connection)
        legacy = legacy_version(connection) if revision is None else None  # asked only where it can explain
    if revision is None:
        raise RunDbUnavailable(f"This run database has an older schema (version {legacy}, from before Alembic); {upgrade}."
                               if legacy is not None else "This is not a run database (no schema revision).")
    if revision == head_revision():
        return
    if revision in known_revisions():
        raise RunDbUnavailable(f"This run database is at schema revision {revision}, older than this reader's "
                               f"{head_revision()}; {upgrade}.")
    raise RunDbUnavailable(f"This run database is at schema revision {revision}, newer than this reader knows "
                           f"({head_revision()}): update cardiacfl.")
