"""Alembic's migration environment for the run database (run through `rundb.migrate`, not the alembic CLI)."""
