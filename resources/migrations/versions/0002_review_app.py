"""The review app: user accounts, decision idempotency keys, claim batches, several failure-mode tags.

* ``review_users``: reviewer and admin accounts (argon2 password hashes, never passwords);
* ``review_events.request_id``: a client-supplied idempotency key, unique, so a decision retried
  after a lost response is recorded once;
* ``review_tasks.claim_id``: which claim (batch of tasks handed to a reviewer at once) a task is in;
* ``review_events.failure_mode`` widened to hold several comma-separated tags.

Written defensively: a database made by ``Base.metadata.create_all`` (which already has all of
this) and then stamped with the baseline revision upgrades without error.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns(table: str) -> dict[str, dict]:
    return {column["name"]: column for column in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("review_users"):
        op.create_table(
            "review_users",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("name", sa.String(length=120), nullable=False),
            sa.Column("role", sa.String(length=20), nullable=False),
            sa.Column("password_hash", sa.String(length=255), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        )
    failure_mode = _columns("review_events")["failure_mode"]
    if getattr(failure_mode["type"], "length", None) != 300:
        with op.batch_alter_table("review_events") as batch:
            batch.alter_column(
                "failure_mode", existing_type=sa.String(length=60), type_=sa.String(length=300), existing_nullable=False
            )
    if "request_id" not in _columns("review_events"):
        op.add_column("review_events", sa.Column("request_id", sa.String(length=64), nullable=True))
    if "ix_review_events_request_id" not in _indexes("review_events"):
        op.create_index("ix_review_events_request_id", "review_events", ["request_id"], unique=True)
    if "claim_id" not in _columns("review_tasks"):
        op.add_column("review_tasks", sa.Column("claim_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_tasks") as batch:
        batch.drop_column("claim_id")
    op.drop_index("ix_review_events_request_id", table_name="review_events")
    with op.batch_alter_table("review_events") as batch:
        batch.drop_column("request_id")
        batch.alter_column(
            "failure_mode", existing_type=sa.String(length=300), type_=sa.String(length=60), existing_nullable=False
        )
    op.drop_table("review_users")
