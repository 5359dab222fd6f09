"""The first schema: deployments, build jobs, log lines, agents.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("observed", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(32)),
        sa.Column("device", sa.String(255)),
        sa.Column("bundle", sa.Text),
        sa.Column("endpoints", sa.JSON, nullable=False),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("created", STAMP, nullable=False),
        sa.Column("updated", STAMP, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("deployment", sa.String(63), nullable=False, index=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("created", STAMP, nullable=False),
        sa.Column("started", STAMP),
        sa.Column("finished", STAMP),
    )
    op.create_table(
        "log_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(63), nullable=False, index=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True),
        sa.Column("time", STAMP, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("address", sa.String(255), primary_key=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("created", STAMP, nullable=False),
    )


def downgrade() -> None:
    for table in ("agents", "log_lines", "jobs", "deployments"):
        op.drop_table(table)
