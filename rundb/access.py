"""Who may read the run database. On PostgreSQL the dashboard connects as its own role that holds SELECT and
nothing else, and whose sessions start read-only; the lab's writer role owns the tables. A SQLite run database
is read-only to the dashboard through its file's permissions and the mode=ro connection (`rundb.engine`)."""

from __future__ import annotations

from sqlalchemy import Connection, literal, text
from sqlalchemy.engine import make_url

from rundb.engine import create_run_engine
from rundb.url import database_url, display_url, with_user


def _literal(connection: Connection, value: str) -> str:
    # Role DDL takes no bind parameters: the password is rendered as an escaped SQL string literal.
    return str(literal(value).compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def grant_reader(owner_url: str, role: str, password: str | None = None) -> str:
    """Give `role` read-only access to the run database at `owner_url` (connected as the tables' owner, who
    also needs CREATEROLE when the role is new or gets a password). Tables created later are covered too.
    Returns the URL the dashboard connects with (no password in it)."""
    if make_url(database_url(owner_url)).get_backend_name() != "postgresql":
        raise ValueError(f"{display_url(owner_url)}: database roles are a PostgreSQL feature; a SQLite run database "
                         "is protected by its file's permissions")
    engine = create_run_engine(owner_url)
    try:
        with engine.begin() as c:
            ident = c.dialect.identifier_preparer.quote(role)
            exists = c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).scalar()
            if not exists and password is None:
                raise ValueError(f"database role {role!r} does not exist: give a password file to create it")
            if not exists:
                c.execute(text(f"CREATE ROLE {ident} LOGIN"))
            if password is not None:
                c.execute(text(f"ALTER ROLE {ident} PASSWORD {_literal(c, password)}"))
                c.execute(text(f"ALTER ROLE {ident} SET default_transaction_read_only = on"))
            database = c.dialect.identifier_preparer.quote(c.execute(text("SELECT current_database()")).scalar())
            c.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {ident}"))
            c.execute(text(f"GRANT USAGE ON SCHEMA public TO {ident}"))
            c.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident}"))
            c.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ident}"))
    finally:
        engine.dispose()
    return with_user(owner_url, role)
