"""Throwaway PostgreSQL run databases for the tests and benchmarks: a fresh database under a unique name,
dropped afterwards (with the sessions still in it) together with its reader role, `<database>_reader`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator
from uuid import uuid4

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def reader_role(url: str) -> str:
    """The one read-only role a scratch database may be given (roles are server-wide, databases are not)."""
    return f"{make_url(url).database}_reader"


@contextmanager
def scratch_database(admin_url: str, prefix: str = "cardiacfl_test") -> Iterator[str]:
    """Yields the new database's URL, as the admin role (which needs CREATEDB, and pg_signal_backend to end
    other roles' sessions when it drops the database)."""
    name = f"{prefix}_{uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(text(f'DROP ROLE IF EXISTS "{reader_role(url)}"'))
        admin.dispose()
