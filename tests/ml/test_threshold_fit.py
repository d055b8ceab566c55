"""ml.threshold_fit: constructed review histories whose fitted thresholds are computed by hand."""

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.policy import default_policy_path, parse_policy, policy_yaml, route
from ml.threshold_fit import default_fit_fields, evaluate_policy, fit_thresholds, review_history

Z2 = 1.959963984540054**2  # 3.841459


def base_policy(**defaults):
    """Everything passes except what the test is about: other thresholds wide open."""
    raw = yaml.safe_load(default_policy_path().read_text())
    raw["defaults"] = {
        "min_confidence": 0.85, "max_boundary_uncertainty": 1.0, "min_area_fraction": 0.0, "max_area_fraction": 1.0,
        "max_components": 10, "max_colour_distance": 100.0, **defaults,
    }
    raw["categories"] = {}
    return parse_policy(yaml.safe_dump(raw))


def items(category, confidence, bad, route_="escalate", audit=False, boundary=0.1, batch="b1", start=0, prefix=None):
    n = len(confidence)
    prefix = prefix or category
    return pd.DataFrame({
        "image_id": [f"{prefix}-{start + i}" for i in range(n)],
        "batch": batch,
        "category": category,
        "confidence": confidence,
        "boundary_uncertainty": boundary,
        "mask_area_fraction": 0.3,
        "connected_components": 1,
        "colour_distance": 5.0,
        "route": route_,
        "audit": audit,
        "model_version": "3",
        "needs_correction": bad,
    })


def shoe_history():
    """All escalated and reviewed, so every weight is 1:
    40 items at confidence 0.99, all fine; 10 at 0.90, 1 needed correction;
    10 at 0.80, 5 needed correction; 40 at 0.50, all needed correction."""
    parts = [
        items("shoe", [0.99] * 40, [False] * 40),
        items("shoe", [0.90] * 10, [True] + [False] * 9, start=40),
        items("shoe", [0.80] * 10, [True] * 5 + [False] * 5, start=50),
        items("shoe", [0.50] * 40, [True] * 40, start=60),
    ]
    frame = pd.concat(parts, ignore_index=True)
    return frame.assign(labelled=True, weight=1.0)


def test_fit_one_threshold_by_hand():
    history = shoe_history()
    # candidates for min_confidence (strictest first): 1.0, 0.99, 0.90, 0.85 (base), 0.80, 0.50
    # t = 0.99: 40 auto-approved, 0 bad -> Wilson high = z^2 / (40 + z^2) = 3.841459 / 43.841459 = 0.087622
    # t = 0.90: 50 auto, 1 bad -> centre = (1 + 1.920729) / 53.841459 = 0.054247,
    #           half = 1.959964 / 53.841459 * sqrt(1 * 49 / 50 + 0.960365) = 0.050707 -> high = 0.104954
    # t = 0.80: 60 auto, 6 bad -> high = 0.201495
    # with a 11 % target the most automation is 50 items: any threshold in (0.80, 0.90] gives it; the tie goes
    # to the candidate nearest the base policy, which is the base value 0.85 itself
    result = fit_thresholds(history, base_policy(), target_fn=0.11, fields=("min_confidence",))
    shoe = result.chosen.set_index("category").loc["shoe"]
    assert shoe["min_confidence"] == 0.85 and shoe["status"] == "fitted"
    assert shoe["auto_approved"] == 50 and shoe["failures"] == 1 and shoe["fn_rate"] == pytest.approx(0.02)
    assert shoe["fn_high"] == pytest.approx(0.104954, abs=1e-6)
    assert shoe["automation_rate"] == pytest.approx(0.5)
    # tighter target: 0.104954 > 0.10 >= 0.087622 -> 0.99, 40 % automation
    result = fit_thresholds(history, base_policy(), target_fn=0.10, fields=("min_confidence",))
    shoe = result.chosen.set_index("category").loc["shoe"]
    assert shoe["min_confidence"] == 0.99 and shoe["fn_high"] == pytest.approx(Z2 / (40 + Z2))
    # 5 %: 40 clean items are not enough (73 would be: 3.841459 * 0.95 / 0.05 = 72.99) -> nothing auto-approved
    result = fit_thresholds(history, base_policy(), target_fn=0.05, fields=("min_confidence",))
    shoe = result.chosen.set_index("category").loc["shoe"]
    assert shoe["min_confidence"] == 1.0 and shoe["auto_approved"] == 0
    assert shoe["status"] == "nothing can be auto-approved within the target"
    assert any("escalate nearly everything" in w and "73 labelled" in w for w in result.warnings)
    # the base (0.85) auto-approves 50 with high 0.104954 > 5 %: reported as too loose
    assert any("too loose" in w and "shoe" in w for w in result.warnings)


def test_tradeoff_table_lists_every_candidate():
    result = fit_thresholds(shoe_history(), base_policy(), target_fn=0.11, fields=("min_confidence",))
    table = result.tradeoff[result.tradeoff["category"] == "shoe"]
    assert table["min_confidence"].tolist() == [1.0, 0.99, 0.90, 0.85, 0.80, 0.50]
    assert table["auto_approved"].tolist() == [0, 40, 50, 50, 60, 100]
    assert table["failures"].tolist() == [0, 0, 1, 1, 6, 46]
    assert table["feasible"].tolist() == [True, True, True, True, False, False]
    assert table.loc[table["chosen"], "min_confidence"].tolist() == [0.85]
    assert table.loc[table["current"], "min_confidence"].tolist() == [0.85]
    result = fit_thresholds(shoe_history(), base_policy(), target_fn=0.10, fields=("min_confidence",))
    table = result.tradeoff
    assert table.loc[table["chosen"], "min_confidence"].tolist() == [0.99]
    assert table["fn_high"].iloc[:3].tolist() == pytest.approx([1.0, Z2 / (40 + Z2), 0.104954], abs=1e-6)
    written = parse_policy(policy_yaml(result.policy))
    assert written.thresholds_for("shoe").min_confidence == 0.99


def test_the_written_policy_routes_as_evaluated():
    history = shoe_history()
    result = fit_thresholds(history, base_policy(), target_fn=0.11, fields=("min_confidence",))
    routed = route(history.drop(columns=["route", "audit"]), result.policy)
    assert (routed["route"] == "auto_approve").sum() == 50
    proposed = result.proposed_eval.set_index("category")
    assert proposed.loc["shoe", "auto_approved"] == 50 and proposed.loc["shoe", "fn_high"] == pytest.approx(0.104954, abs=1e-6)
    assert proposed.loc["*", "automation_rate"] == pytest.approx(0.5)
    assert result.policy.name.endswith("-fitted")
    assert parse_policy(policy_yaml(result.policy)).version == result.policy.version


def test_fit_two_thresholds_by_hand():
    # shoe: 50 fine items (conf 0.95, boundary 0.1), 50 bad with a fuzzy edge (conf 0.95, boundary 0.5),
    #       50 bad with low confidence (conf 0.5, boundary 0.1); base: min_confidence 0.85, boundary 0.6
    history = pd.concat([
        items("shoe", [0.95] * 50, [False] * 50, boundary=0.1),
        items("shoe", [0.95] * 50, [True] * 50, boundary=0.5, start=50),
        items("shoe", [0.5] * 50, [True] * 50, boundary=0.1, start=100),
    ], ignore_index=True).assign(labelled=True, weight=1.0)
    base = base_policy(max_boundary_uncertainty=0.6)
    result = fit_thresholds(history, base, target_fn=0.10, fields=("min_confidence", "max_boundary_uncertainty"))
    shoe = result.chosen.set_index("category").loc["shoe"]
    # only confidence >= 0.85 and boundary <= 0.1 isolates the 50 fine items: high = 3.841459 / 53.841459 = 0.071348.
    # min_confidence 0.95 passes the same items as 0.85: the tie goes to the base value 0.85
    assert (shoe["min_confidence"], shoe["max_boundary_uncertainty"]) == (0.85, 0.1)
    assert shoe["auto_approved"] == 50 and shoe["failures"] == 0
    assert shoe["fn_high"] == pytest.approx(Z2 / (50 + Z2))
    # the frontier: 0 auto (strictest), 50 (proposed), 100 (either bad group let in), 150 (everything)
    table = result.tradeoff
    assert table["auto_approved"].tolist()[:1] == [0] and 50 in table["auto_approved"].tolist()
    assert table.loc[table["chosen"], "auto_approved"].tolist() == [50]


def test_audits_stand_for_unreviewed_auto_approvals():
    # bag, old policy: 100 auto-approved at confidence 0.95, 10 of them audited (1 needed correction);
    #                  20 escalated at confidence 0.6, all reviewed, all needed correction
    auto = items("bag", [0.95] * 100, [False] * 100, route_="auto_approve")
    auto["audit"] = [True] * 10 + [False] * 90
    escalated = items("bag", [0.6] * 20, [True] * 20, start=100)
    queue = pd.concat([auto, escalated], ignore_index=True).drop(columns="needs_correction")
    reviewed = pd.concat([auto.iloc[:10].assign(needs_correction=[True] + [False] * 9), escalated])
    decisions = pd.DataFrame({
        "batch": reviewed["batch"], "image_id": reviewed["image_id"], "kind": "escalation", "slot": 0,
        "decision": np.where(reviewed["needs_correction"], "correct", "approve"), "model_version": "3",
    })
    history = review_history(queue, decisions)
    # weights: audited 100 / 10 = 10 each, escalated 20 / 20 = 1 each, the 90 unaudited 0
    weights = history.set_index("image_id")["weight"]
    assert weights["bag-0"] == 10.0 and weights["bag-100"] == 1.0 and weights["bag-50"] == 0.0
    policy = base_policy(min_confidence=0.5)
    bag = evaluate_policy(history, policy).set_index("category").loc["bag"]
    # everything auto-approved: weighted false negatives (10 * 1 + 1 * 20) / (10 * 10 + 1 * 20) = 30 / 120 = 0.25
    # (about 10 of the 100 auto-approved plus all 20 escalated need correction); unweighted would say 21/30 = 0.7
    assert bag["fn_rate"] == pytest.approx(0.25)
    assert bag["labelled"] == 30 and bag["failures"] == 21
    # n_eff = 120^2 / (10 * 100 + 20 * 1) = 14.1176, k_eff = 0.25 * 14.1176 = 3.5294 -> Wilson on those
    from ml.stats import wilson_interval

    assert bag["fn_high"] == pytest.approx(wilson_interval(0.25 * 14400 / 1020, 14400 / 1020)[1])
    # only the old auto-approvals (confidence >= 0.95): 1 of 10 audits, each standing for 10 -> 0.1, n_eff = 10
    strict = evaluate_policy(history, base_policy(min_confidence=0.95)).set_index("category").loc["bag"]
    assert strict["fn_rate"] == pytest.approx(0.1) and strict["fn_high"] == pytest.approx(wilson_interval(1, 10)[1])


def test_review_history_labels():
    queue = items("shoe", [0.9, 0.9, 0.9, 0.9], [False] * 4).drop(columns="needs_correction")
    decisions = pd.DataFrame([
        # shoe-0: double review, one reviewer corrected -> needs correction
        {"batch": "b1", "image_id": "shoe-0", "kind": "escalation", "slot": 0, "decision": "approve", "model_version": "3"},
        {"batch": "b1", "image_id": "shoe-0", "kind": "escalation", "slot": 1, "decision": "correct", "model_version": "3"},
        # shoe-1: rejected -> needs correction
        {"batch": "b1", "image_id": "shoe-1", "kind": "escalation", "slot": 0, "decision": "reject", "model_version": "3"},
        # shoe-2: judged a mask of model 2; the routing row is model 3 -> not a label for these signals
        {"batch": "b1", "image_id": "shoe-2", "kind": "escalation", "slot": 0, "decision": "correct", "model_version": "2"},
        # shoe-3: only a hidden gold check -> not part of the routing sample
        {"batch": "b1", "image_id": "shoe-3", "kind": "gold", "slot": 2, "decision": "correct", "model_version": "3"},
    ])
    history = review_history(queue, decisions).set_index("image_id")
    assert history["labelled"].to_dict() == {"shoe-0": True, "shoe-1": True, "shoe-2": False, "shoe-3": False}
    assert history["needs_correction"].to_dict() == {"shoe-0": True, "shoe-1": True, "shoe-2": False, "shoe-3": False}


def test_default_fields_and_probability_threshold():
    history = shoe_history()
    assert default_fit_fields(history) == ("min_confidence", "max_boundary_uncertainty")
    # a calibrated probability: fine items 0.02, the 0.90 group 0.08, bad ones 0.6
    history["needs_correction_probability"] = np.where(history["needs_correction"], 0.6, np.where(history["confidence"] > 0.95, 0.02, 0.08))
    assert default_fit_fields(history)[-1] == "max_needs_correction_probability"
    result = fit_thresholds(history, base_policy(min_confidence=0.0), target_fn=0.10, fields=("max_needs_correction_probability",))
    shoe = result.chosen.set_index("category").loc["shoe"]
    # probability <= 0.08 passes 40 + 9 + 5 = 54 fine items and none of the 46 bad ones: high = z^2 / (54 + z^2) = 0.066411
    assert shoe["max_needs_correction_probability"] == 0.08 and shoe["auto_approved"] == 54
    assert shoe["fn_high"] == pytest.approx(Z2 / (54 + Z2))
    routed = route(history.drop(columns=["route", "audit"]), result.policy)
    assert (routed["route"] == "auto_approve").sum() == 54
    assert routed.loc[history["needs_correction"].to_numpy(), "reasons"].str.contains("likely_needs_correction").all()


def test_unknown_categories_and_empty_history_are_reported():
    history = pd.concat([shoe_history(), items("hats", [0.99], [False], start=500).assign(labelled=True, weight=1.0)], ignore_index=True)
    result = fit_thresholds(history, base_policy(), target_fn=0.11, fields=("min_confidence",))
    assert any("hats" in w for w in result.warnings)
    statuses = result.chosen.set_index("category")["status"]
    assert statuses["bag"] == "no history: unchanged"
    with pytest.raises(ValueError, match="cannot fit"):
        fit_thresholds(history, base_policy(), target_fn=0.1, fields=("max_smiles",))
    with pytest.raises(ValueError, match="target"):
        fit_thresholds(history, base_policy(), target_fn=1.5)
