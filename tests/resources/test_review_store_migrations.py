"""The review store's schema comes from Alembic migrations (SQLite here; PostgreSQL in tests/integration)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from resources.review_store import VERSION_TABLE, Base, ReviewStore, head_revision, upgrade_schema

REPO = Path(__file__).resolve().parents[2]


def schema_drift(engine: sa.Engine) -> list:
    """Differences between the migrated database and the ORM's tables (empty: they match)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return [diff for diff in compare_metadata(context, Base.metadata)]


def test_upgrade_from_empty_creates_the_schema_and_is_idempotent(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    assert upgrade_schema(engine) == (None, head_revision())
    assert {"review_tasks", "review_events", VERSION_TABLE} <= set(sa.inspect(engine).get_table_names())
    assert schema_drift(engine) == []
    assert upgrade_schema(engine) == (head_revision(), head_revision())  # second time: nothing to do


def test_store_migrates_on_first_use(tmp_path):
    store = ReviewStore(url=f"sqlite:///{tmp_path / 'sub' / 'r.db'}")
    store.create_tasks([{"task_key": "b:a:0", "batch": "b", "image_id": "a", "kind": "escalation", "image_key": "x", "mask_key": "y"}])
    with store.engine.connect() as conn:
        assert conn.execute(sa.text(f"select version_num from {VERSION_TABLE}")).scalar_one() == head_revision()


def test_database_made_before_migrations_is_stamped_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    Base.metadata.create_all(old)  # how the store made its tables before Alembic
    with old.begin() as conn:
        conn.execute(sa.text("insert into review_tasks (task_key, batch, image_id, kind, slot, sku, category, file, image_key, mask_key, composite_key, width, height, reasons, signals, policy_version, model_version, status, created_at, closed_reason) values ('k', 'b', 'i', 'audit', 0, '', '', '', 'x', 'y', '', 0, 0, '', '{}', '', '', 'open', '2026-01-01', '')"))
    old.dispose()
    store = ReviewStore(url=url)
    assert len(store.tasks()) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.text(f"select version_num from {VERSION_TABLE}")).scalar_one() == head_revision()


def test_concurrent_first_use_does_not_race(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def first_use():
        try:
            barrier.wait()
            ReviewStore(url=url).tasks()
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_drift(sa.create_engine(url)) == []


def test_alembic_command_line_upgrades_the_configured_database(tmp_path):
    db = tmp_path / "cli.db"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "resources" / "migrations" / "alembic.ini"), "upgrade", "head"],
        env={"PATH": "/usr/bin:/bin", "HITL_REVIEW_DB_URL": f"sqlite:///{db}"}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert schema_drift(sa.create_engine(f"sqlite:///{db}")) == []
