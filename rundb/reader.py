"""Read-only access to the run database, for the summary table, the progress poller and the dashboard: it
never creates tables, and it says plainly when there is nothing to read or the schema is another version."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.orm import Session

from rundb.schema import SCHEMA_VERSION, SchemaInfo
from rundb.url import database_url, sqlite_path


class RunDbUnavailable(RuntimeError):
    """A run database that cannot be read (yet); the message says what to do."""


def open_readonly(path_or_url: str) -> Engine:
    url = database_url(path_or_url)
    file = sqlite_path(url)
    if file is not None:
        if not file.is_file():
            raise RunDbUnavailable(f"Run database {file} not found. Run a study first (scripts/run_study.sh) or check the path.")
        url = f"sqlite:///file:{file}?mode=ro&uri=true"  # SQLite refuses writes through this connection
    return create_engine(url)


def check_schema(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    if not tables:
        raise RunDbUnavailable("The run database is empty: no study has been recorded yet.")
    if "schema_info" not in tables:
        raise RunDbUnavailable("This run database has an older schema (no schema_info table); open it with the "
                               "version of cardiacfl that wrote it.")
    with Session(engine) as s:
        versions = list(s.scalars(select(SchemaInfo.version)))
    if SCHEMA_VERSION not in versions:
        raise RunDbUnavailable(f"This run database has schema version {versions}, this reader reads version {SCHEMA_VERSION}.")
