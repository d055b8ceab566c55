"""Fault: the review-store connection drops mid-transaction. Rolled back, retried, nothing lost or doubled."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from resources.review_store import ReviewStore

pytestmark = pytest.mark.faults


def make_tasks(store: ReviewStore, n: int) -> None:
    store.create_tasks([
        {"task_key": f"b1:i{i}:0", "batch": "b1", "image_id": f"i{i}", "slot": 0, "kind": "escalation", "image_key": f"originals/i{i}.png", "mask_key": f"outputs/i{i}/mask.png"} for i in range(n)
    ])


def drop_connection_on(store: ReviewStore, needle: str, every: int) -> dict:
    """Close the real database connection just before every ``every``-th statement containing ``needle``."""
    seen = {"statements": 0, "dropped": 0}

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def drop(conn, cursor, statement, parameters, context, executemany):
        if needle not in statement:
            return
        seen["statements"] += 1
        if seen["statements"] % every == 1:
            seen["dropped"] += 1
            conn.connection.dbapi_connection.close()  # the server went away: this statement fails, mid-transaction

    return seen


def test_review_store_connection_dropped_mid_transaction(tmp_path, fault_report):
    store = ReviewStore(url=f"sqlite:///{tmp_path / 'review.db'}")
    make_tasks(store, 20)
    seen = drop_connection_on(store, "INSERT INTO review_events", every=3)
    claimed = store.claim("ann", limit=20)
    acknowledged = []
    for task in claimed:
        acknowledged.append(store.record_decision(task.id, "ann", "approve", seconds=2.0).id)

    # a commit whose acknowledgement was lost: the event is stored, the caller saw an error; the retry must not double it
    task_drops = drop_connection_on(store, "INSERT INTO review_tasks", every=100)
    make_tasks(store, 25)  # dropped once, retried: the 5 new tasks exist once
    assert task_drops["dropped"] == 1
    extra = store.claim("bob", limit=5)
    real = store._append_decision
    lost_ack = {"left": 2}

    def commit_then_drop(*args, **kwargs):
        event = real(*args, **kwargs)
        if lost_ack["left"]:
            lost_ack["left"] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"), connection_invalidated=True)
        return event

    object.__setattr__(store, "_append_decision", commit_then_drop)
    for task in extra:
        acknowledged.append(store.record_decision(task.id, "bob", "reject", seconds=3.0).id)

    events = store.latest_decisions()
    with store.engine.connect() as conn:
        per_task = conn.execute(sa.text("select task_id, count(*) from review_events group by task_id")).all()
    stored_ids = {int(i) for i in events["event_id"]} if "event_id" in events.columns else set()
    lost = len(set(acknowledged) - stored_ids) if stored_ids else len(acknowledged) - len(per_task)
    duplicated = sum(count - 1 for _, count in per_task)
    survived = seen["dropped"] >= 5 and lost_ack["left"] == 0 and lost == 0 and duplicated == 0 and len(per_task) == 25
    fault_report("review_store_connection_dropped_mid_transaction", survived=survived, lost=lost, duplicated=duplicated)
    assert seen["dropped"] >= 5 and lost_ack["left"] == 0
    assert len(per_task) == 25 and duplicated == 0 and lost == 0
    assert (store.tasks()["status"] == "decided").all()
