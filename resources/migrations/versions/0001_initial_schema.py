"""Initial schema: review_tasks and review_events.

Exactly the tables (columns, types, nullability, constraints and indexes) that
``Base.metadata.create_all`` created before the review store had migrations, so a database made
that way is stamped with this revision and upgraded from here.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_key", sa.String(length=200), nullable=False),
        sa.Column("batch", sa.String(length=120), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=60), nullable=False),
        sa.Column("file", sa.String(length=500), nullable=False),
        sa.Column("image_key", sa.String(length=500), nullable=False),
        sa.Column("mask_key", sa.String(length=500), nullable=False),
        sa.Column("composite_key", sa.String(length=500), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.String(length=500), nullable=False),
        sa.Column("signals", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.String(length=40), nullable=False),
        sa.Column("model_version", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("claimed_by", sa.String(length=120), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_reason", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_key"),
    )
    op.create_index("ix_review_tasks_batch", "review_tasks", ["batch"], unique=False)
    op.create_index("ix_review_tasks_image_id", "review_tasks", ["image_id"], unique=False)
    op.create_index("ix_review_tasks_status", "review_tasks", ["status"], unique=False)

    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=120), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("failure_mode", sa.String(length=60), nullable=False),
        sa.Column("corrected_mask_key", sa.String(length=500), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaces_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["review_tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_review_events_task_id", "review_events", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_review_events_task_id", table_name="review_events")
    op.drop_table("review_events")
    op.drop_index("ix_review_tasks_status", table_name="review_tasks")
    op.drop_index("ix_review_tasks_image_id", table_name="review_tasks")
    op.drop_index("ix_review_tasks_batch", table_name="review_tasks")
    op.drop_table("review_tasks")
