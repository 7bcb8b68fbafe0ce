"""The one place a run-database argument becomes a SQLAlchemy engine: SQLite files for a study on one machine,
PostgreSQL (psycopg 3) for a lab server. A password can come from a file named by CARDIACFL_DB_PASSWORD_FILE
(a container secret), so that it never sits in a URL, a process list or the lab's state files."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from rundb.url import database_url, sqlite_path

PASSWORD_FILE_ENV = "CARDIACFL_DB_PASSWORD_FILE"


def _with_password_file(url: str) -> str:
    parsed = make_url(url)
    password_file = os.environ.get(PASSWORD_FILE_ENV, "")
    if parsed.password or not password_file or parsed.get_backend_name() == "sqlite":
        return url
    try:
        password = Path(password_file).read_text().strip()
    except OSError as err:
        raise ValueError(f"{PASSWORD_FILE_ENV}={password_file}: cannot read the database password ({err.strerror})") from err
    return parsed.set(password=password).render_as_string(hide_password=False)


def create_run_engine(path_or_url: str | Path, *, read_only: bool = False) -> Engine:
    """Read-only engines cannot write: SQLite opens the file with mode=ro, PostgreSQL sessions start read-only
    (the dashboard's database role should also hold nothing but SELECT: `cardiacfl rundb grant-reader`)."""
    url = _with_password_file(database_url(path_or_url))
    backend = make_url(url).get_backend_name()
    if read_only and backend == "sqlite":
        file = sqlite_path(url)
        if file is not None:
            url = f"sqlite:///file:{file}?mode=ro&uri=true"
    if read_only and backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, connect_args={"options": "-c default_transaction_read_only=on"})
    return create_engine(url, pool_pre_ping=backend != "sqlite")
