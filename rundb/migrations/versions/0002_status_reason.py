"""studies.status_reason: why a study failed or was stopped.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("status_reason", sa.String(500), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("status_reason")
