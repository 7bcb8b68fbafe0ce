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
