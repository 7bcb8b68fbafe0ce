"""Alembic environment: migrations run on the connection `rundb.migrate` hands over, inside its transaction."""

from alembic import context

from rundb.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the run database's migrations through rundb.migrate.upgrade_to_head")

# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
