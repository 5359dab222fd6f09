"""Bench runs: one row per (experiment, application, target, measurement, optimization) run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bench_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("batch", sa.String(64), nullable=False, index=True),
        sa.Column("experiment", sa.String(128), nullable=False, index=True),
        sa.Column("application", sa.String(128), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("device", sa.String(255), nullable=False),
        sa.Column("build_target", sa.String(32)),
        sa.Column("predicted", sa.Boolean, nullable=False),
        sa.Column("measurement", sa.String(128), nullable=False),
        sa.Column("scenario", sa.String(32)),
        sa.Column("optimization", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("build_job", sa.String(32)),
        sa.Column("measure_job", sa.String(32)),
        sa.Column("created", STAMP, nullable=False),
        sa.Column("finished", STAMP),
    )


def downgrade() -> None:
    op.drop_table("bench_runs")
