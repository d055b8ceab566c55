"""The review store on a real PostgreSQL: Alembic migrations, and claims under concurrency (SKIP LOCKED)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from resources.review_store import VERSION_TABLE, Base, ReviewStore, engine_url, head_revision, upgrade_schema

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def task(batch: str, image_id: str, slot: int = 0) -> dict:
    return {
        "task_key": f"{batch}:{image_id}:{slot}", "batch": batch, "image_id": image_id, "kind": "escalation", "slot": slot,
        "image_key": f"originals/{image_id}.png", "mask_key": f"outputs/{image_id}/mask.png", "reasons": "low_confidence",
    }


def schema_drift(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_alembic_upgrade_from_empty_creates_the_schema_and_is_idempotent(make_database):
    url = make_database("migrate")
    engine = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    assert upgrade_schema(engine) == (None, head_revision())
    tables = set(sa.inspect(engine).get_table_names())
    assert {"review_tasks", "review_events", VERSION_TABLE} <= tables
    assert schema_drift(engine) == []
    assert upgrade_schema(engine) == (head_revision(), head_revision())
    # The alembic command line, on the same database: nothing left to do, still at head.
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "resources" / "migrations" / "alembic.ini"), "upgrade", "head"],
        env={**os.environ, "HITL_REVIEW_DB_URL": url}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"select version_num from {VERSION_TABLE}")).scalar_one() == head_revision()


def test_many_processes_starting_at_once_migrate_once(make_database):
    url = make_database("race")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def first_use():
        try:
            barrier.wait()
            ReviewStore(url=url).tasks()
        except BaseException as err:  # noqa: BLE001 - asserted below
            errors.append(err)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_drift(sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)) == []


def test_concurrent_claims_never_give_a_task_to_two_reviewers(make_database):
    url = make_database("claims")
    store = ReviewStore(url=url)
    assert store.engine.dialect.name == "postgresql"
    rows = [task("b1", f"img{i:03d}") for i in range(200)] + [task("b1", f"img{i:03d}", slot=1) for i in range(0, 200, 4)]
    assert store.create_tasks(rows) == 250

    reviewers = [f"reviewer-{n}" for n in range(8)]
    claimed: dict[str, list[tuple[int, str, int]]] = {name: [] for name in reviewers}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(reviewers))

    def work(name: str) -> None:
        own = ReviewStore(url=url)  # a pool of its own, like a separate review-app worker
        try:
            barrier.wait()
            idle = 0
            while idle < 20:
                got = own.claim(name, 5)
                if got:
                    claimed[name].extend((t.id, t.image_id, t.slot) for t in got)
                    idle = 0
                else:
                    idle += 1  # rows locked by others are skipped, not waited for: look again shortly
                    time.sleep(0.02)
        except BaseException as err:  # noqa: BLE001 - asserted below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in reviewers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a claim blocked"
    assert errors == []
    elapsed = time.monotonic() - started

    counts = Counter(task_id for items in claimed.values() for task_id, _, _ in items)
    assert counts and max(counts.values()) == 1, "a task was handed to two reviewers"
    busy = [name for name, items in claimed.items() if items]
    assert len(busy) >= 2, f"no contention: only {busy} claimed anything"
    for name, items in claimed.items():  # never both slots of one image to the same person
        images = Counter(image for _, image, _ in items)
        assert not images or max(images.values()) == 1, name

    # The database agrees with what each reviewer was told, and nothing was left behind.
    tasks = store.tasks(batch="b1")
    holder = {task_id: name for name, items in claimed.items() for task_id, _, _ in items}
    assert (tasks["status"] == "claimed").all(), tasks["status"].value_counts().to_dict()
    assert all(holder[row.id] == row.claimed_by for row in tasks.itertuples())
    assert len(holder) == 250, f"{250 - len(holder)} task(s) never claimed in {elapsed:.1f} s"


def test_claim_skips_rows_another_transaction_has_locked(make_database):
    url = make_database("skiplocked")
    store = ReviewStore(url=url)
    store.create_tasks([task("b1", f"img{i}") for i in range(6)])
    ids = sorted(store.tasks()["id"])
    engine = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    with engine.connect() as holder:
        # Another reviewer's claim in flight: its transaction holds the first three rows.
        holder.execute(sa.text("select id from review_tasks where id = any(:ids) for update"), {"ids": ids[:3]}).all()
        result: dict = {}
        worker = threading.Thread(target=lambda: result.setdefault("tasks", store.claim("ann", 10)))
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "claim waited for a locked row instead of skipping it"
        assert sorted(t.id for t in result["tasks"]) == ids[3:]
        holder.rollback()
    assert sorted(t.id for t in store.claim("bob", 10)) == ids[:3]
