"""Alembic keeps the version from here on: the hand-kept schema_info table of older databases goes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "schema_info" in sa.inspect(op.get_bind()).get_table_names():
        op.drop_table("schema_info")


def downgrade() -> None:
    op.create_table("schema_info", sa.Column("version", sa.Integer, primary_key=True))
    op.bulk_insert(sa.table("schema_info", sa.column("version", sa.Integer)), [{"version": 1}, {"version": 2}])
