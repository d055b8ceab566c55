"""Claims, expiry, double review, breaks, progress, and decisions as append-only, idempotent events."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from resources.review_store import ReviewTask, utcnow


def test_claim_is_limited_by_the_policy_and_shows_progress(review_env, make_policy, login):
    make_app, seed = review_env
    seed(12)
    app = make_app(make_policy(batch_size=4))
    rita = login(app, "rita")
    claimed = rita.claim()
    assert len(claimed) == 4
    assert rita.claim() == claimed  # claiming again while holding a full batch adds nothing
    queue = rita.get("/api/queue").json()
    assert (queue["total"], queue["decided"], queue["next_task_id"]) == (4, 0, claimed[0])
    assert rita.decide(claimed[0]).status_code == 200
    queue = rita.get("/api/queue").json()
    assert (queue["total"], queue["decided"], queue["next_task_id"]) == (4, 1, claimed[1])
    page = rita.get("/").text
    assert "1 of 4 decided" in page
    item = rita.get(f"/api/tasks/{claimed[1]}").json()
    assert (item["position"], item["total"], item["decided"]) == (2, 4, 1)
    assert item["prev_id"] == claimed[0] and item["next_id"] == claimed[2]
    # Topping up: after deciding one, a claim fills the batch back to the policy's size.
    more = rita.post("/api/claim").json()
    assert more["claimed"] == 1
    assert sum(1 for t in more["tasks"] if t["status"] == "todo") == 4


def test_no_two_reviewers_hold_the_same_task_and_double_review_goes_to_two_people(review_env, make_policy, login, review_store):
    make_app, seed = review_env
    seed(8, double_every=2)  # images 0, 2, 4, 6 have two slots
    app = make_app(make_policy(batch_size=20))
    rita, sam = login(app, "rita"), login(app, "sam")
    ritas, sams = rita.claim(), sam.claim()
    assert not set(ritas) & set(sams)
    tasks = review_store.tasks().set_index("id")
    assert tasks.loc[ritas, "image_id"].is_unique  # one reviewer never holds both slots of an image
    assert tasks.loc[sams, "image_id"].is_unique
    doubled = tasks[tasks["slot"] == 1]["image_id"]
    for image in doubled:
        holders = set(tasks[tasks["image_id"] == image]["claimed_by"])
        assert holders == {"rita", "sam"}, image
    # Everything is claimed exactly once.
    assert len(ritas) + len(sams) == len(tasks) and (tasks["status"] == "claimed").all()
    # Even after deciding, the same reviewer never gets the second slot of an image.
    for task in ritas:
        assert rita.decide(task).status_code == 200
    with review_store.engine.begin() as conn:  # sam walks away: the second slots return to the queue
        conn.execute(sa.update(ReviewTask).where(ReviewTask.claimed_by == "sam").values(claimed_at=utcnow() - timedelta(hours=2)))
    again = rita.claim()
    assert not set(tasks.loc[again, "image_id"]) & set(tasks.loc[ritas, "image_id"])


def test_unfinished_claims_expire_and_return_to_the_queue(review_env, make_policy, login, review_store):
    make_app, seed = review_env
    seed(3)
    app = make_app(make_policy(batch_size=3, claim_timeout_minutes=30))
    rita, sam = login(app, "rita"), login(app, "sam")
    held = rita.claim()
    assert len(held) == 3 and sam.claim() == []
    with review_store.engine.begin() as conn:
        conn.execute(sa.update(ReviewTask).values(claimed_at=utcnow() - timedelta(minutes=31)))
    taken = sam.claim()
    assert sorted(taken) == sorted(held)
    # Rita's expired claim is gone: her view no longer shows those tasks and she cannot decide them.
    assert rita.get("/api/queue").json()["total"] == 0
    assert rita.decide(held[0]).status_code == 404
    assert sam.decide(held[0]).status_code == 200


def test_decisions_are_append_only_events_and_review_decisions_reads_the_latest(review_env, login, review_store):
    make_app, seed = review_env
    seed(3)
    rita = login(make_app(), "rita")
    task = rita.claim()[0]
    first = rita.decide(task, "approve", failure_modes=["edge_halo"], note="fine", seconds=4.25)
    assert first.status_code == 200, first.text
    second = rita.decide(task, "reject", failure_modes=["missing_part", "background_residue"], note="strap gone", seconds=7)
    assert second.status_code == 200
    events = review_store.task_events(task)
    assert [e.decision for e in events] == ["approve", "reject"]  # nothing overwritten
    assert events[0].failure_mode == "edge_halo" and events[0].note == "fine" and events[0].seconds == 4.25
    assert events[1].replaces_event_id == events[0].id and events[1].reviewer == "rita"
    assert events[1].created_at >= events[0].created_at
    latest = review_store.latest_decisions().set_index("task_id").loc[task]
    assert latest["decision"] == "reject" and latest["failure_mode"] == "missing_part,background_residue"
    assert latest["seconds"] == 7 and latest["note"] == "strap gone"
    item = rita.get(f"/api/tasks/{task}").json()
    assert item["mine"]["decision"] == "reject" and item["mine"]["failure_modes"] == ["missing_part", "background_residue"]


def test_a_retried_decision_is_recorded_once(review_env, login, review_store):
    make_app, seed = review_env
    seed(3)
    rita = login(make_app(), "rita")
    a, b = rita.claim()[:2]
    body = {"request_id": "req-0123456789abcdef"}
    one = rita.decide(a, "approve", **body)
    two = rita.decide(a, "approve", **body)
    assert one.status_code == two.status_code == 200
    assert one.json()["event_id"] == two.json()["event_id"] and two.json()["replayed"] is True
    assert len(review_store.task_events(a)) == 1
    # The same key for another task is a conflict, not a second decision.
    assert rita.decide(b, "approve", **body).status_code == 409
    assert review_store.task_events(b) == []


def test_bad_decision_bodies_are_refused(review_env, login, review_store):
    make_app, seed = review_env
    seed(3)
    rita = login(make_app(), "rita")
    task = rita.claim()[0]
    for body in (
        {"decision": "delete"},
        {"decision": "correct"},  # a correction is an upload
        {"decision": "approve", "failure_modes": ["not_in_the_taxonomy"]},
        {"decision": "approve", "failure_modes": "edge_halo,../../x"},
        {"decision": "approve", "note": "x" * 2001},
        {"decision": "approve", "seconds": "soon"},
        {"decision": "approve", "request_id": "../../etc"},
    ):
        answer = rita.post(f"/api/tasks/{task}/decision", json=body)
        assert answer.status_code == 400, (body, answer.status_code)
    assert rita.post(f"/api/tasks/{task}/decision", content=b"not json", headers={"content-type": "application/json"}).status_code == 400
    assert review_store.task_events(task) == []


def test_the_break_is_enforced_after_the_policys_number_of_items(review_env, make_policy, login, review_store):
    make_app, seed = review_env
    seed(6)
    rita = login(make_app(make_policy(batch_size=5, break_after_items=2, break_seconds=300)), "rita")
    tasks = rita.claim()
    assert rita.decide(tasks[0]).json()["break"]["until"] is None
    second = rita.decide(tasks[1]).json()
    assert second["break"]["until"] is not None and 0 < second["break"]["remaining_s"] <= 300
    refused = rita.decide(tasks[2])
    assert refused.status_code == 423 and refused.json()["detail"]["message"] == "break time"
    assert rita.post("/api/claim").status_code == 423
    assert "Break time" in rita.get("/").text
    assert len(review_store.events()) == 2
    # The break is over once break_seconds have passed since the last decision.
    with review_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE review_events SET created_at = :t"), {"t": utcnow() - timedelta(seconds=301)})
    assert rita.decide(tasks[2]).status_code == 200


def test_item_payload_shows_reasons_signals_and_the_taxonomy(review_env, login):
    make_app, seed = review_env
    seed(5)
    rita = login(make_app(), "rita")
    tasks = rita.claim()
    item = rita.get(f"/api/tasks/{tasks[1]}").json()
    assert item["reasons"] == ["boundary_uncertain"]
    assert set(item["signals"]) == {"confidence", "boundary_uncertainty", "components"}
    assert item["failure_modes"][:3] == ["edge_halo", "missing_part", "background_residue"]
    audit = rita.get(f"/api/tasks/{tasks[0]}").json()
    assert audit["reasons"] == ["spot_check"]  # audits and hidden gold checks look alike
    page = rita.get(f"/tasks/{tasks[1]}").text
    for shortcut in ("Approve &amp; next <kbd>A</kbd>", "Reject <kbd>R</kbd>", "Brush <kbd>B</kbd>", "Eraser <kbd>E</kbd>", "Undo <kbd>Z</kbd>", "Overlay <kbd>M</kbd>"):
        assert shortcut in page
    assert 'data-mode="shadow_artifact"' in page
