"""Review store: review tasks and append-only decision events (SQLAlchemy: SQLite or PostgreSQL)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Iterable

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DECISIONS = ("approve", "reject", "correct")
TASK_KINDS = ("escalation", "audit")


def utcnow() -> datetime:
    """Timezone-aware now, stored as UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ReviewTask(Base):
    """One image waiting for (or given) a human look. Double review = two tasks, slots 0 and 1."""

    __tablename__ = "review_tasks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    batch: Mapped[str] = mapped_column(sa.String(120), index=True)
    image_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    slot: Mapped[int] = mapped_column(default=0)
    sku: Mapped[str] = mapped_column(sa.String(200), default="")
    category: Mapped[str] = mapped_column(sa.String(60), default="unknown")
    file: Mapped[str] = mapped_column(sa.String(500), default="")
    image_key: Mapped[str] = mapped_column(sa.String(500))
    mask_key: Mapped[str] = mapped_column(sa.String(500))
    composite_key: Mapped[str] = mapped_column(sa.String(500), default="")
    width: Mapped[int] = mapped_column(default=0)
    height: Mapped[int] = mapped_column(default=0)
    reasons: Mapped[str] = mapped_column(sa.String(500), default="")
    signals: Mapped[str] = mapped_column(sa.Text, default="{}")
    policy_version: Mapped[str] = mapped_column(sa.String(40), default="")
    model_version: Mapped[str] = mapped_column(sa.String(40), default="")
    status: Mapped[str] = mapped_column(sa.String(20), default="open", index=True)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(120), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    closed_reason: Mapped[str] = mapped_column(sa.String(120), default="")


class ReviewEvent(Base):
    """An append-only decision: who decided what, when, how long it took, and which event it replaced."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("review_tasks.id"), index=True)
    reviewer: Mapped[str] = mapped_column(sa.String(120))
    decision: Mapped[str] = mapped_column(sa.String(20))
    failure_mode: Mapped[str] = mapped_column(sa.String(60), default="")
    corrected_mask_key: Mapped[str] = mapped_column(sa.String(500), default="")
    note: Mapped[str] = mapped_column(sa.Text, default="")
    seconds: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    replaces_event_id: Mapped[int | None] = mapped_column(nullable=True)


class ReviewStoreError(ValueError):
    """A request the review store refuses (unknown task, bad decision, task not yours)."""


class ReviewStore(dg.ConfigurableResource):
    """Tasks and decisions in a SQL database: a SQLite file by default, PostgreSQL by URL."""

    url: str = "sqlite:///.hitl/review.db"

    _engine = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "ReviewStore":
        """Configure from HITL_REVIEW_DB_URL (default: a SQLite file under HITL_HOME)."""
        home = os.environ.get("HITL_HOME", ".hitl")
        return cls(url=os.environ.get("HITL_REVIEW_DB_URL", f"sqlite:///{os.path.join(home, 'review.db')}"))

    def describe(self) -> str:
        """The database URL without its password, for logs and metadata."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, created (with the schema) on first use."""
        if self._engine is None:
            url = sa.engine.make_url(self.url)
            kwargs: dict = {"future": True}
            if url.get_backend_name() == "sqlite":
                if url.database and url.database != ":memory:":
                    os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
                kwargs["connect_args"] = {"timeout": 30}
            else:
                kwargs["pool_pre_ping"] = True
            engine = sa.create_engine(url, **kwargs)
            if url.get_backend_name() == "sqlite":

                @sa.event.listens_for(engine, "connect")
                def _sqlite_pragmas(dbapi_connection, _record):  # WAL lets the app read while the pipeline writes
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA foreign_keys=ON")
                    cursor.close()

            Base.metadata.create_all(engine)
            self._engine = engine
        return self._engine

    def session(self) -> Session:
        """A new ORM session (use as a context manager)."""
        return Session(self.engine, expire_on_commit=False)

    # -- tasks ------------------------------------------------------------------------------

    def create_tasks(self, rows: Iterable[dict]) -> int:
        """Insert tasks in bulk, skipping any whose ``task_key`` exists; returns how many were new."""
        rows = list(rows)
        if not rows:
            return 0
        table = ReviewTask.__table__
        now = utcnow()
        for row in rows:
            row.setdefault("created_at", now)
            row.setdefault("status", "open")
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - other databases are not supported targets
            raise ReviewStoreError(f"unsupported review database {dialect!r}")
        inserted = 0
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                chunk = rows[start : start + 5000]
                statement = insert(table).on_conflict_do_nothing(index_elements=["task_key"])
                inserted += conn.execute(statement, chunk).rowcount or 0
        return inserted

    def tasks(self, batch: str | None = None, status: str | None = None) -> pd.DataFrame:
        """Tasks as a DataFrame, optionally filtered by batch and status."""
        query = sa.select(ReviewTask.__table__)
        if batch is not None:
            query = query.where(ReviewTask.batch == batch)
        if status is not None:
            query = query.where(ReviewTask.status == status)
        with self.engine.connect() as conn:
            return pd.read_sql(query.order_by(ReviewTask.id), conn)

    def claim(self, reviewer: str, limit: int, claim_timeout: timedelta = timedelta(minutes=30), batch: str | None = None) -> list[ReviewTask]:
        """Claim up to ``limit`` open tasks for ``reviewer`` (expired claims return to the queue first).

        A reviewer never gets both slots of a double-reviewed image.
        """
        now = utcnow()
        with self.session() as session, session.begin():
            session.execute(
                sa.update(ReviewTask)
                .where(ReviewTask.status == "claimed", ReviewTask.claimed_at < now - claim_timeout)
                .values(status="open", claimed_by=None, claimed_at=None)
            )
            held_images = sa.select(ReviewTask.image_id).where(
                ReviewTask.claimed_by == reviewer, ReviewTask.status.in_(("claimed", "decided"))
            )
            query = (
                sa.select(ReviewTask)
                .where(ReviewTask.status == "open", ReviewTask.image_id.not_in(held_images))
                .order_by(ReviewTask.id)
            )
            if batch is not None:
                query = query.where(ReviewTask.batch == batch)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            claimed: list[ReviewTask] = []
            seen_images: set[str] = set()
            for task in session.scalars(query.limit(limit * 2 + 2)):
                if task.image_id in seen_images:
                    continue
                task.status, task.claimed_by, task.claimed_at = "claimed", reviewer, now
                seen_images.add(task.image_id)
                claimed.append(task)
                if len(claimed) >= limit:
                    break
            return claimed

    def record_decision(
        self,
        task_id: int,
        reviewer: str,
        decision: str,
        *,
        seconds: float,
        failure_mode: str = "",
        corrected_mask_key: str = "",
        note: str = "",
    ) -> ReviewEvent:
        """Append a decision event for a task the reviewer holds; the task becomes ``decided``."""
        if decision not in DECISIONS:
            raise ReviewStoreError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
        if decision == "correct" and not corrected_mask_key:
            raise ReviewStoreError("a 'correct' decision needs the corrected mask's key")
        with self.session() as session, session.begin():
            task = session.get(ReviewTask, task_id)
            if task is None:
                raise ReviewStoreError(f"review task {task_id} does not exist")
            if task.status == "closed":
                raise ReviewStoreError(f"review task {task_id} is closed ({task.closed_reason})")
            if task.claimed_by not in (None, reviewer):
                raise ReviewStoreError(f"review task {task_id} is claimed by another reviewer")
            previous = session.scalar(
                sa.select(ReviewEvent.id).where(ReviewEvent.task_id == task_id).order_by(ReviewEvent.id.desc()).limit(1)
            )
            event = ReviewEvent(
                task_id=task_id,
                reviewer=reviewer,
                decision=decision,
                failure_mode=failure_mode or "",
                corrected_mask_key=corrected_mask_key or "",
                note=note or "",
                seconds=float(seconds),
                created_at=utcnow(),
                replaces_event_id=previous,
            )
            session.add(event)
            task.status, task.claimed_by = "decided", reviewer
            task.claimed_at = task.claimed_at or utcnow()
            return event

    def close_tasks(self, task_ids: Iterable[int], reason: str) -> int:
        """Close undecided tasks without a human decision (e.g. re-scored by a new champion)."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(ReviewTask)
                .where(ReviewTask.id.in_(ids), ReviewTask.status.in_(("open", "claimed")))
                .values(status="closed", closed_reason=reason, claimed_by=None, claimed_at=None)
            )
            return result.rowcount or 0

    # -- decisions --------------------------------------------------------------------------

    def latest_decisions(self, batch: str | None = None) -> pd.DataFrame:
        """The latest decision event of every decided task, joined with the task (one row per task)."""
        events = ReviewEvent.__table__
        tasks = ReviewTask.__table__
        latest = sa.select(sa.func.max(events.c.id).label("event_id")).group_by(events.c.task_id).subquery()
        query = (
            sa.select(
                tasks.c.id.label("task_id"),
                tasks.c.batch,
                tasks.c.image_id,
                tasks.c.kind,
                tasks.c.slot,
                tasks.c.sku,
                tasks.c.category,
                tasks.c.file,
                tasks.c.image_key,
                tasks.c.mask_key,
                tasks.c.width,
                tasks.c.height,
                tasks.c.policy_version,
                tasks.c.model_version,
                events.c.id.label("event_id"),
                events.c.reviewer,
                events.c.decision,
                events.c.failure_mode,
                events.c.corrected_mask_key,
                events.c.note,
                events.c.seconds,
                events.c.created_at.label("decided_at"),
            )
            .select_from(events.join(latest, events.c.id == latest.c.event_id).join(tasks, tasks.c.id == events.c.task_id))
            .order_by(tasks.c.id)
        )
        if batch is not None:
            query = query.where(tasks.c.batch == batch)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def batch_progress(self) -> pd.DataFrame:
        """Per batch: total tasks, decided, closed and still open or claimed."""
        tasks = ReviewTask.__table__
        query = sa.select(
            tasks.c.batch,
            sa.func.count().label("total"),
            sa.func.sum(sa.case((tasks.c.status == "decided", 1), else_=0)).label("decided"),
            sa.func.sum(sa.case((tasks.c.status == "closed", 1), else_=0)).label("closed"),
            sa.func.sum(sa.case((tasks.c.status.in_(("open", "claimed")), 1), else_=0)).label("pending"),
        ).group_by(tasks.c.batch)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)
