"""The one place a run-database argument becomes a SQLAlchemy URL: a URL passes through, a path is SQLite."""

from __future__ import annotations

from pathlib import Path


def database_url(path_or_url: str | Path) -> str:
    text = str(path_or_url)
    return text if "://" in text else f"sqlite:///{text}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases or in-memory SQLite)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:"):
        return Path(url[len(prefix):].split("?", 1)[0])
    return None


def display_url(url: str) -> str:
    """A URL fit for logs and state files: the password masked."""
    from sqlalchemy.engine import make_url

    return make_url(database_url(url)).render_as_string(hide_password=True)


def with_user(url: str, username: str | None = None) -> str:
    """The same database as another user (or the same one), with no password in the URL. (SQLAlchemy's
    URL.set(password=None) keeps the old password.)"""
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(database_url(url))
    return URL.create(parsed.drivername, username=username or parsed.username, host=parsed.host, port=parsed.port,
                      database=parsed.database, query=parsed.query).render_as_string(hide_password=False)
