"""Review store: review tasks and append-only decision events (SQLAlchemy: SQLite or PostgreSQL).

The schema is owned by Alembic (``resources/migrations/``): the store brings the database to the
newest revision on first use, under a lock, so several processes starting at once (Dagster's
multiprocess executor, the daemon's sensors, the review app) never race on DDL.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DECISIONS = ("approve", "reject", "correct")
TASK_KINDS = ("escalation", "audit", "gold")
USER_ROLES = ("reviewer", "admin")

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# Its own version table: the review store may share a database with other Alembic users (MLflow).
VERSION_TABLE = "review_alembic_version"
# The first revision creates exactly the tables ``Base.metadata.create_all`` used to create.
BASELINE_REVISION = "0001"
# Key of the PostgreSQL advisory lock that serialises migrations (any constant bigint).
_MIGRATION_LOCK_KEY = 7_151_962_840_113


def utcnow() -> datetime:
    """Timezone-aware now, stored as UTC."""
    return datetime.now(timezone.utc)


# A dropped connection (server restart, network cut, idle timeout) mid-transaction: the transaction is
# rolled back by the database and retried here, a few times with backoff. Only errors SQLAlchemy marks as
# a lost connection are retried; constraint violations and bad SQL are not.
RETRY_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.1


def is_transient(err: BaseException) -> bool:
    """A lost connection, or PostgreSQL's serialization/deadlock answers: safe to retry the whole transaction."""
    if isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated:
        return True
    code = getattr(getattr(err, "orig", None), "pgcode", None)
    return code in ("40001", "40P01", "57P01", "08006", "08003", "08001")


def _retrying(operation, *, attempts: int = RETRY_ATTEMPTS, base: float = RETRY_BASE_SECONDS):
    """Run ``operation()`` (one whole transaction), retrying it on a transient database error with backoff."""
    for attempt in range(attempts):
        try:
            return operation()
        except sa.exc.DBAPIError as err:
            if attempt == attempts - 1 or not is_transient(err):
                raise
            time.sleep(base * 2**attempt)


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
    # The claim (batch of tasks handed to a reviewer at once) the task is in (revision 0002).
    claim_id: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)


class ReviewEvent(Base):
    """An append-only decision: who decided what, when, how long it took, and which event it replaced."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("review_tasks.id"), index=True)
    reviewer: Mapped[str] = mapped_column(sa.String(120))
    decision: Mapped[str] = mapped_column(sa.String(20))
    failure_mode: Mapped[str] = mapped_column(sa.String(300), default="")  # comma-separated tags
    corrected_mask_key: Mapped[str] = mapped_column(sa.String(500), default="")
    note: Mapped[str] = mapped_column(sa.Text, default="")
    seconds: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    replaces_event_id: Mapped[int | None] = mapped_column(nullable=True)
    # Client-supplied idempotency key (revision 0002): a retried decision is recorded once.
    request_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, unique=True, index=True)


class ReviewUser(Base):
    """A review app account (revision 0002). Only the password's argon2 hash is stored."""

    __tablename__ = "review_users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


class ReviewStoreError(ValueError):
    """A request the review store refuses (unknown task, bad decision, task not yours)."""


def review_db_url_from_env() -> str:
    """HITL_REVIEW_DB_URL, or the embedded SQLite file under HITL_HOME."""
    home = os.environ.get("HITL_HOME", ".hitl")
    return os.environ.get("HITL_REVIEW_DB_URL", f"sqlite:///{os.path.join(home, 'review.db')}")


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL to connect with.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; where only psycopg2 is installed (it
    comes with dagster-postgres) such a URL is given the psycopg2 driver instead of failing.
    """
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def alembic_config():
    """An Alembic ``Config`` for the review store's migrations (no ini file, no logging set-up)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision of the schema."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def lock_for_migration(connection: sa.Connection) -> None:
    """Begin the migration transaction holding a database-wide lock (released at commit or rollback).

    PostgreSQL: a transaction-level advisory lock. SQLite: ``BEGIN IMMEDIATE`` (the write lock, so a
    second process waits up to the connection's timeout instead of failing on "table exists").
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _set_wal(cursor) -> None:
    """``PRAGMA journal_mode=WAL``, waiting out another connection's transaction.

    Switching a new database file to WAL needs a moment of exclusive access, and SQLite answers
    "database is locked" at once (no busy timeout) while another process holds a transaction, such
    as a migration on first use. WAL is a property of the file: once any connection set it, it stays.
    """
    import sqlite3

    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == 99:
                raise
            time.sleep(0.1)


def upgrade_schema(engine: sa.Engine) -> tuple[str | None, str]:
    """``alembic upgrade head`` on ``engine``'s database, safe to call from many processes at once.

    A database made by ``create_all`` before migrations existed (tables, no version table) is
    stamped with the baseline revision first. Returns (revision before, revision after).
    """
    from alembic import command

    head = head_revision()
    with engine.connect() as connection:
        before = current_revision(connection)
    if before == head:
        return before, head
    with engine.connect() as connection:
        lock_for_migration(connection)
        before = current_revision(connection)  # another process may have migrated meanwhile
        if before != head:
            config = alembic_config()
            config.attributes["connection"] = connection
            if before is None and sa.inspect(connection).has_table(ReviewTask.__tablename__):
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")
        connection.commit()
    return before, head


class ReviewStore(dg.ConfigurableResource):
    """Tasks and decisions in a SQL database: a SQLite file by default, PostgreSQL by URL."""

    url: str = "sqlite:///.hitl/review.db"

    _engine = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "ReviewStore":
        """Configure from HITL_REVIEW_DB_URL (default: a SQLite file under HITL_HOME)."""
        return cls(url=review_db_url_from_env())

    def describe(self) -> str:
        """The database URL without its password, for logs and metadata."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, created on first use, with the schema migrated to the newest revision."""
        if self._engine is None:
            url = engine_url(self.url)
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
                    try:
                        _set_wal(cursor)
                        cursor.execute("PRAGMA foreign_keys=ON")
                    finally:
                        cursor.close()

            upgrade_schema(engine)
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
        def transaction() -> int:  # idempotent (task_key): safe to run again after a dropped connection
            inserted = 0
            with self.engine.begin() as conn:
                for start in range(0, len(rows), 5000):
                    chunk = rows[start : start + 5000]
                    statement = insert(table).on_conflict_do_nothing(index_elements=["task_key"])
                    inserted += conn.execute(statement, chunk).rowcount or 0
            return inserted

        return _retrying(transaction)

    def tasks(self, batch: str | None = None, status: str | None = None) -> pd.DataFrame:
        """Tasks as a DataFrame, optionally filtered by batch and status."""
        query = sa.select(ReviewTask.__table__)
        if batch is not None:
            query = query.where(ReviewTask.batch == batch)
        if status is not None:
            query = query.where(ReviewTask.status == status)
        with self.engine.connect() as conn:
            return pd.read_sql(query.order_by(ReviewTask.id), conn)

    def claim(
        self,
        reviewer: str,
        limit: int,
        claim_timeout: timedelta = timedelta(minutes=30),
        batch: str | None = None,
        claim_id: str | None = None,
    ) -> list[ReviewTask]:
        """Claim up to ``limit`` open tasks for ``reviewer`` (expired claims return to the queue first).

        A reviewer never gets both slots of a double-reviewed image. ``claim_id`` labels the claimed
        tasks as one batch of work (the review app shows a reviewer's progress through it).
        """
        return _retrying(lambda: self._claim(reviewer, limit, claim_timeout, batch, claim_id))

    def _claim(self, reviewer: str, limit: int, claim_timeout: timedelta, batch: str | None, claim_id: str | None) -> list[ReviewTask]:
        now = utcnow()
        with self.session() as session, session.begin():
            session.execute(
                sa.update(ReviewTask)
                .where(ReviewTask.status == "claimed", ReviewTask.claimed_at < now - claim_timeout)
                .values(status="open", claimed_by=None, claimed_at=None, claim_id=None)
            )
            # Within a batch, a reviewer never gets a second slot of an image they hold or decided
            # (double review needs two people); an image re-sent in a later batch is fair game.
            held = sa.orm.aliased(ReviewTask)
            already_held = (
                sa.select(held.id)
                .where(
                    held.image_id == ReviewTask.image_id, held.batch == ReviewTask.batch,
                    held.claimed_by == reviewer, held.status.in_(("claimed", "decided")),
                )
                .exists()
            )
            query = (
                sa.select(ReviewTask)
                .where(ReviewTask.status == "open", ~already_held)
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
                task.claim_id = claim_id
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
        request_id: str | None = None,
    ) -> ReviewEvent:
        """Append a decision event for a task the reviewer holds; the task becomes ``decided``.

        ``request_id`` (optional, unique) makes the call idempotent: a second call with the same key
        for the same task and reviewer returns the event recorded the first time and appends nothing.
        """
        if request_id:
            existing = self.event_by_request_id(request_id)
            if existing is not None:
                return self._same_request(existing, task_id, reviewer, request_id)
        # A connection dropped mid-transaction is rolled back and retried (``_retrying``). A drop during
        # COMMIT is ambiguous (the event may be stored): the retry looks the request id up first, so a
        # decision is never appended twice. Without a caller's id, one is made for this call.
        key = request_id or f"auto-{uuid.uuid4().hex}"

        def attempt() -> ReviewEvent:
            stored = self.event_by_request_id(key)
            if stored is not None:
                return self._same_request(stored, task_id, reviewer, key)
            return self._append_decision(
                task_id, reviewer, decision, seconds=seconds, failure_mode=failure_mode,
                corrected_mask_key=corrected_mask_key, note=note, request_id=key,
            )

        try:
            return _retrying(attempt)
        except sa.exc.IntegrityError:
            existing = self.event_by_request_id(request_id) if request_id else None
            if existing is None:
                raise
            return self._same_request(existing, task_id, reviewer, request_id)  # a concurrent retry won

    @staticmethod
    def _same_request(event: ReviewEvent, task_id: int, reviewer: str, request_id: str) -> ReviewEvent:
        if event.task_id != task_id or event.reviewer != reviewer:
            raise ReviewStoreError(f"request id {request_id!r} was already used for another decision")
        return event

    def event_by_request_id(self, request_id: str) -> ReviewEvent | None:
        """The decision event recorded with this idempotency key, if any."""
        with self.session() as session:
            return session.scalar(sa.select(ReviewEvent).where(ReviewEvent.request_id == request_id))

    def _append_decision(
        self,
        task_id: int,
        reviewer: str,
        decision: str,
        *,
        seconds: float,
        failure_mode: str,
        corrected_mask_key: str,
        note: str,
        request_id: str | None,
    ) -> ReviewEvent:
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
                request_id=request_id,
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

    # -- the review app ---------------------------------------------------------------------

    def get_task(self, task_id: int) -> ReviewTask | None:
        """One task by id (None if there is none)."""
        with self.session() as session:
            return session.get(ReviewTask, task_id)

    def task_events(self, task_id: int) -> list[ReviewEvent]:
        """Every decision event of a task, oldest first (the append-only history)."""
        with self.session() as session:
            return list(session.scalars(sa.select(ReviewEvent).where(ReviewEvent.task_id == task_id).order_by(ReviewEvent.id)))

    def held_tasks(self, reviewer: str) -> list[ReviewTask]:
        """The reviewer's current work: tasks still claimed by them plus those of their latest claim."""
        with self.session() as session:
            latest_claim = session.scalar(
                sa.select(ReviewTask.claim_id)
                .where(ReviewTask.claimed_by == reviewer, ReviewTask.claim_id.is_not(None))
                .order_by(ReviewTask.claimed_at.desc(), ReviewTask.id.desc())
                .limit(1)
            )
            condition = sa.and_(ReviewTask.claimed_by == reviewer, ReviewTask.status == "claimed")
            if latest_claim is not None:
                condition = sa.or_(
                    condition,
                    sa.and_(ReviewTask.claimed_by == reviewer, ReviewTask.claim_id == latest_claim, ReviewTask.status == "decided"),
                )
            return list(session.scalars(sa.select(ReviewTask).where(condition).order_by(ReviewTask.id)))

    def latest_events_by(self, reviewer: str, task_ids: Iterable[int]) -> dict[int, ReviewEvent]:
        """The reviewer's latest decision event on each of ``task_ids`` (tasks they have not decided are absent)."""
        ids = list(task_ids)
        if not ids:
            return {}
        latest = (
            sa.select(sa.func.max(ReviewEvent.id))
            .where(ReviewEvent.reviewer == reviewer, ReviewEvent.task_id.in_(ids))
            .group_by(ReviewEvent.task_id)
        )
        with self.session() as session:
            return {event.task_id: event for event in session.scalars(sa.select(ReviewEvent).where(ReviewEvent.id.in_(latest)))}

    def reviewer_activity(self, reviewer: str, last: int) -> tuple[int, list[datetime]]:
        """How many decisions the reviewer has recorded, and the times of the latest ``last`` of them."""
        with self.session() as session:
            count = session.scalar(sa.select(sa.func.count()).select_from(ReviewEvent).where(ReviewEvent.reviewer == reviewer)) or 0
            times = list(
                session.scalars(
                    sa.select(ReviewEvent.created_at).where(ReviewEvent.reviewer == reviewer).order_by(ReviewEvent.id.desc()).limit(max(1, last))
                )
            )
            return int(count), times

    def events(self, since: datetime | None = None) -> pd.DataFrame:
        """Decision events (optionally from ``since`` on), without joins: the audit log."""
        query = sa.select(ReviewEvent.__table__)
        if since is not None:
            query = query.where(ReviewEvent.created_at >= since)
        with self.engine.connect() as conn:
            return pd.read_sql(query.order_by(ReviewEvent.id), conn)

    def status_counts(self) -> dict[str, int]:
        """Tasks per status (open, claimed, decided, closed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(ReviewTask.status, sa.func.count()).group_by(ReviewTask.status)).all()
        return {status: int(count) for status, count in rows}

    # -- accounts ---------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str, *, replace: bool = False) -> ReviewUser:
        """Create an account (or, with ``replace``, change an existing one's role and password)."""
        if role not in USER_ROLES:
            raise ReviewStoreError(f"unknown role {role!r}; expected one of {', '.join(USER_ROLES)}")
        if not name or len(name) > 120 or not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ReviewStoreError("a user name is 1-120 letters, digits, '-', '_' or '.'")
        with self.session() as session, session.begin():
            user = session.scalar(sa.select(ReviewUser).where(ReviewUser.name == name))
            if user is not None and not replace:
                raise ReviewStoreError(f"user {name!r} exists")
            if user is None:
                user = ReviewUser(name=name, role=role, password_hash=password_hash, created_at=utcnow())
                session.add(user)
            else:
                user.role, user.password_hash = role, password_hash
            return user

    def get_user(self, name: str) -> ReviewUser | None:
        """The account called ``name`` (None if there is none)."""
        with self.session() as session:
            return session.scalar(sa.select(ReviewUser).where(ReviewUser.name == name))

    def users(self) -> list[ReviewUser]:
        """Every account, by name."""
        with self.session() as session:
            return list(session.scalars(sa.select(ReviewUser).order_by(ReviewUser.name)))
