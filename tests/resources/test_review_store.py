from datetime import timedelta

import pytest

from resources.review_store import ReviewStoreError


def task(batch, image_id, slot=0, kind="escalation"):
    return {
        "task_key": f"{batch}:{image_id}:{slot}", "batch": batch, "image_id": image_id, "kind": kind, "slot": slot,
        "sku": f"sku-{image_id}", "category": "shoe", "file": f"{image_id}.png", "image_key": f"originals/{image_id}.png",
        "mask_key": f"outputs/{image_id}/mask.png", "reasons": "low_confidence",
    }


def test_create_tasks_is_idempotent(review_store):
    rows = [task("b1", "a"), task("b1", "b"), task("b1", "b", slot=1)]
    assert review_store.create_tasks(rows) == 3
    assert review_store.create_tasks(rows) == 0
    assert len(review_store.tasks(batch="b1")) == 3


def test_claims_are_exclusive_and_double_review_goes_to_two_people(review_store):
    review_store.create_tasks([task("b1", "a"), task("b1", "a", slot=1), task("b1", "b")])
    first = review_store.claim("ann", 10)
    assert sorted(t.image_id for t in first) == ["a", "b"]  # one slot of "a" only
    second = review_store.claim("bob", 10)
    assert [(t.image_id, t.slot) for t in second] == [("a", 1)]
    assert review_store.claim("ann", 10) == []
    assert review_store.claim("cat", 10) == []


def test_expired_claims_return_to_the_queue(review_store):
    review_store.create_tasks([task("b1", "a")])
    assert len(review_store.claim("ann", 5)) == 1
    assert review_store.claim("bob", 5, claim_timeout=timedelta(minutes=30)) == []
    reclaimed = review_store.claim("bob", 5, claim_timeout=timedelta(seconds=-1))
    assert [t.image_id for t in reclaimed] == ["a"]


def test_decisions_are_append_only_and_latest_wins(review_store):
    review_store.create_tasks([task("b1", "a"), task("b2", "z")])
    (claimed,) = review_store.claim("ann", 1, batch="b1")
    first = review_store.record_decision(claimed.id, "ann", "approve", seconds=4.0)
    second = review_store.record_decision(claimed.id, "ann", "correct", seconds=9.5, corrected_mask_key="corrections/a.png", failure_mode="edge_halo")
    assert second.replaces_event_id == first.id
    latest = review_store.latest_decisions(batch="b1")
    assert len(latest) == 1
    row = latest.iloc[0]
    assert (row.decision, row.corrected_mask_key, row.failure_mode, row.seconds, row.reviewer) == ("correct", "corrections/a.png", "edge_halo", 9.5, "ann")
    progress = review_store.batch_progress().set_index("batch")
    assert progress.loc["b1", "decided"] == 1 and progress.loc["b2", "pending"] == 1


def test_bad_decisions_are_refused(review_store):
    review_store.create_tasks([task("b1", "a")])
    (claimed,) = review_store.claim("ann", 1)
    with pytest.raises(ReviewStoreError, match="unknown decision"):
        review_store.record_decision(claimed.id, "ann", "maybe", seconds=1)
    with pytest.raises(ReviewStoreError, match="corrected mask"):
        review_store.record_decision(claimed.id, "ann", "correct", seconds=1)
    with pytest.raises(ReviewStoreError, match="another reviewer"):
        review_store.record_decision(claimed.id, "bob", "approve", seconds=1)
    with pytest.raises(ReviewStoreError, match="does not exist"):
        review_store.record_decision(999, "ann", "approve", seconds=1)


def test_an_image_resent_in_a_later_batch_can_be_reviewed_again_by_the_same_person(review_store):
    review_store.create_tasks([task("b1", "a")])
    (first,) = review_store.claim("ann", 5)
    review_store.record_decision(first.id, "ann", "approve", seconds=2)
    review_store.create_tasks([task("b2", "a")])
    assert [(t.batch, t.image_id) for t in review_store.claim("ann", 5)] == [("b2", "a")]
