"""Final status, dataset membership and loop metrics on hand-built decisions with known answers."""

import pandas as pd

from hitl_assets.assets.dataset import dataset_items, gold_share
from hitl_assets.assets.metrics import loop_metrics
from hitl_assets.assets.publish import final_status, publish_key


def queue():
    return pd.DataFrame({
        "image_id": ["auto", "audit_ok", "audit_bad", "esc_ok", "esc_fix", "esc_rej", "double", "pending"],
        "category": ["shoe", "shoe", "bag", "bag", "bag", "shoe", "shoe", "bag"],
        "route": ["auto_approve", "auto_approve", "auto_approve", "escalate", "escalate", "escalate", "escalate", "escalate"],
        "audit": [False, True, True, False, False, False, False, False],
        "double_review": [False, False, False, False, False, False, True, False],
    })


def decisions():
    rows = [
        ("audit_ok", "approve", "", 4.0), ("audit_bad", "correct", "c/audit_bad.png", 12.0),
        ("esc_ok", "approve", "", 5.0), ("esc_fix", "correct", "c/esc_fix.png", 20.0), ("esc_rej", "reject", "", 3.0),
        ("double", "approve", "", 6.0), ("double", "correct", "c/double.png", 10.0),
    ]
    frame = pd.DataFrame(rows, columns=["image_id", "decision", "corrected_mask_key", "seconds"])
    frame["event_id"] = range(1, len(frame) + 1)
    frame["batch"] = "b1"
    for column in ("sku", "category", "file", "image_key", "mask_key", "policy_version"):
        frame[column] = frame["image_id"] + "-" + column
    return frame


def test_final_status_never_approves_what_a_person_has_not_finished():
    status = final_status(queue(), decisions()).set_index("image_id")["final_status"].to_dict()
    assert status == {
        "auto": "approved_auto",
        "audit_ok": "approved_human",
        "audit_bad": "approved_corrected",
        "esc_ok": "approved_human",
        "esc_fix": "approved_corrected",
        "esc_rej": "rejected",
        "double": "approved_corrected",  # two reviewers, one corrected: the correction is used
        "pending": "pending",  # escalated, nobody decided yet: not published
    }
    only_one = decisions()[lambda d: ~((d.image_id == "double") & (d.decision == "correct"))]
    assert final_status(queue(), only_one).set_index("image_id").loc["double", "final_status"] == "pending"


def test_dataset_takes_corrections_and_verified_approvals_but_not_rejections():
    items = dataset_items(decisions()).set_index("image_id")
    assert set(items.index) == {"audit_ok", "audit_bad", "esc_ok", "esc_fix", "double"}
    assert items.loc["esc_fix", "mask_key"] == "c/esc_fix.png" and items.loc["esc_fix", "source"] == "corrected"
    assert items.loc["esc_ok", "mask_key"] == "esc_ok-mask_key" and items.loc["esc_ok", "source"] == "verified"
    assert items.loc["double", "mask_key"] == "c/double.png"


def test_gold_split_is_a_stable_hash_of_the_image_id():
    ids = pd.Series([f"img{i}" for i in range(2000)])
    share = gold_share(ids)
    assert share.between(0, 1).all()
    assert gold_share(ids.iloc[::-1]).iloc[::-1].tolist() == share.tolist()  # order does not matter
    assert abs((share < 0.2).mean() - 0.2) < 0.03


def test_loop_metrics_match_hand_counts():
    overall = loop_metrics(queue().assign(scope="all"), decisions(), ["scope"]).iloc[0]
    assert overall["images"] == 8 and overall["auto_approved"] == 3 and overall["escalated"] == 5
    assert overall["automation_rate"] == 3 / 8
    # reviewed images: audit_ok, audit_bad, esc_ok, esc_fix, esc_rej, double = 6; corrected: audit_bad, esc_fix, double
    assert overall["reviewed_images"] == 6 and overall["corrected"] == 3 and overall["correction_rate"] == 0.5
    # audits: audit_ok passed, audit_bad needed a correction -> false-negative rate 1/2
    assert overall["audited"] == 2 and overall["audit_failures"] == 1 and overall["false_negative_rate"] == 0.5
    assert overall["review_seconds_per_item"] == sum([4, 12, 5, 20, 3, 6, 10]) / 7
    by_category = loop_metrics(queue(), decisions(), ["category"]).set_index("category")
    assert by_category.loc["bag", "false_negative_rate"] == 1.0 and by_category.loc["shoe", "false_negative_rate"] == 0.0


def test_publish_key_is_safe():
    assert publish_key("b1", "../../etc/passwd", "abc") == "published/b1/etc_passwd__abc.jpg"
    assert publish_key("b1", "SKU 12/é", "abc") == "published/b1/SKU_12__abc.jpg"


def test_gold_checks_never_change_an_outcome_and_people_always_count():
    gold = decisions()
    gold["kind"] = "escalation"
    extra = gold.iloc[[0]].assign(image_id="auto", decision="reject", kind="gold", event_id=99)
    status = final_status(queue(), pd.concat([gold, extra])).set_index("image_id")["final_status"]
    assert status["auto"] == "approved_auto"  # the hidden gold check's verdict scores the reviewer only
    assert "auto" not in set(dataset_items(pd.concat([gold, extra]))["image_id"])
    rescored = queue()
    rescored.loc[rescored.image_id == "esc_rej", "route"] = "auto_approve"  # a new champion is happy with it
    assert final_status(rescored, gold).set_index("image_id").loc["esc_rej", "final_status"] == "rejected"
