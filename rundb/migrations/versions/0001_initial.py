"""The run database as first released: studies, rounds, per-site metrics and reference-panel generations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _per_round_columns() -> list[sa.Column]:
    return [sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
            sa.Column("phase", sa.String(20), nullable=False),
            sa.Column("server_round", sa.Integer, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("preset", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("current_phase", sa.String(20), nullable=False),
        sa.Column("current_round", sa.Integer, nullable=False),
        sa.Column("total_rounds", sa.Integer, nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("finished", sa.Float, nullable=True),
    )
    op.create_table(
        "rounds", *_per_round_columns(),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("participants", sa.JSON, nullable=False),
        sa.Column("global_metrics", sa.JSON, nullable=False),
        sa.Column("model_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.String(500), nullable=False),
        sa.UniqueConstraint("study_id", "phase", "server_round"),
    )
    op.create_table(
        "site_metrics", *_per_round_columns(),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("examples", sa.Integer, nullable=False),
        sa.Column("epsilon", sa.Float, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    op.create_table(
        "generations", *_per_round_columns(),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("ecg", sa.LargeBinary, nullable=False),
        sa.Column("generated", sa.LargeBinary, nullable=False),
        sa.Column("real", sa.LargeBinary, nullable=True),
        sa.Column("ssim", sa.Float, nullable=True),
        sa.Column("psnr", sa.Float, nullable=True),
    )
    for table in ("rounds", "site_metrics", "generations"):
        op.create_index(f"ix_{table}_study_id", table, ["study_id"])
    op.create_index("ix_site_metrics_site", "site_metrics", ["site"])


def downgrade() -> None:
    for table in ("generations", "site_metrics", "rounds", "studies"):
        op.drop_table(table)
