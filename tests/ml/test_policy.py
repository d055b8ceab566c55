"""ml.policy: the YAML tolerance policy validates, versions itself and routes vectorised."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.policy import (
    REASON_CODES,
    SIGNAL_COLUMNS,
    Policy,
    PolicyError,
    Thresholds,
    default_policy_path,
    load_policy,
    parse_policy,
    reason_counts,
    route,
    sample_uniform,
)


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy(default_policy_path())


@pytest.fixture(scope="module")
def default_raw() -> dict:
    return yaml.safe_load(default_policy_path().read_text())


def _problem(raw: dict) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(raw), source="test.yaml")
    assert "test.yaml" in str(info.value)
    return info.value


# ----------------------------------------------------------------------------- loading


def test_default_policy_loads(default_policy):
    assert default_policy_path().is_file()
    assert default_policy_path().parent.name == "policies"
    p = default_policy
    assert p.name == "default"
    assert p.known_categories == ["garment", "shoe", "bag", "bottle", "jewellery", "unknown"]
    assert p.audit_rate == 0.05 and p.double_review_rate == 0.05
    assert p.failure_modes == [
        "edge_halo", "missing_part", "background_residue",
        "translucent_region", "colour_shift", "shadow_artifact",
    ]
    assert set(p.categories) <= set(p.known_categories)
    d = p.defaults
    assert (d.min_confidence, d.max_boundary_uncertainty, d.max_components) == (0.85, 0.25, 2)
    assert (d.min_area_fraction, d.max_area_fraction, d.max_colour_distance) == (0.01, 0.95, 25.0)
    assert p.review.batch_size == 20 and p.review.claim_timeout_minutes == 30
    # jewellery: thin parts; bottle: translucent
    assert p.thresholds_for("jewellery").max_components > d.max_components
    assert p.thresholds_for("jewellery").min_area_fraction < d.min_area_fraction
    assert p.thresholds_for("bottle").max_boundary_uncertainty > d.max_boundary_uncertainty
    assert p.thresholds_for("no-such-category") == d
    assert p.thresholds_for("shoe") == d


def test_thresholds_for_merges_overrides(default_policy):
    j = default_policy.thresholds_for("jewellery")
    assert isinstance(j, Thresholds)
    assert j.max_colour_distance == default_policy.defaults.max_colour_distance  # not overridden


def test_unknown_key_names_the_field(default_raw):
    raw = {**default_raw, "defaults": {**default_raw["defaults"], "min_confidense": 0.9}}
    err = _problem(raw)
    assert "defaults.min_confidense" in str(err)
    raw = {**default_raw, "audit_rat": 0.1}
    assert "audit_rat" in str(_problem(raw))


def test_out_of_range_threshold_names_the_field(default_raw):
    raw = {**default_raw, "categories": {**default_raw["categories"], "shoe": {"min_confidence": 1.5}}}
    err = _problem(raw)
    assert "categories.shoe.min_confidence: Input should be less than or equal to 1" in str(err)
    raw = {**default_raw, "audit_rate": -0.1}
    assert "audit_rate:" in str(_problem(raw))
    raw = {**default_raw, "defaults": {**default_raw["defaults"], "max_components": 0}}
    assert "defaults.max_components:" in str(_problem(raw))


def test_unknown_category_names_the_category(default_raw):
    raw = {**default_raw, "categories": {**default_raw["categories"], "hats": {"min_confidence": 0.9}}}
    err = _problem(raw)
    assert "categories.hats" in str(err)
    assert "unknown category 'hats'" in str(err)


def test_inconsistent_area_range_is_an_error(default_raw):
    raw = {**default_raw, "categories": {"shoe": {"min_area_fraction": 0.99}}}
    assert "categories.shoe" in str(_problem(raw))


def test_several_problems_are_all_listed(default_raw):
    raw = {**default_raw, "audit_rate": 2, "double_review_rate": -1, "bogus": 1}
    err = _problem(raw)
    assert len(err.problems) == 3
    for field in ("audit_rate", "double_review_rate", "bogus"):
        assert any(p.startswith(f"{field}:") for p in err.problems)


def test_bad_yaml_and_missing_file(tmp_path: Path):
    with pytest.raises(PolicyError):
        parse_policy("name: [unclosed", source="broken.yaml")
    with pytest.raises(PolicyError) as info:
        parse_policy("- just\n- a list\n", source="list.yaml")
    assert "list.yaml" in str(info.value)
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    assert str(bad) in str(info.value) and "defaults:" in str(info.value)


def test_version_is_a_stable_content_hash(default_policy, default_raw):
    v = default_policy.version
    assert len(v) == 12 and all(c in "0123456789abcdef" for c in v)
    assert load_policy(default_policy_path()).version == v
    # formatting and key order do not matter, values do
    reordered = dict(reversed(list(default_raw.items())))
    assert parse_policy(yaml.safe_dump(reordered, default_flow_style=True)).version == v
    changed = {**default_raw, "categories": {**default_raw["categories"], "shoe": {"max_components": 3}}}
    assert parse_policy(yaml.safe_dump(changed)).version != v
    tweaked = {**default_raw, "defaults": {**default_raw["defaults"], "min_confidence": 0.851}}
    assert parse_policy(yaml.safe_dump(tweaked)).version != v
    assert default_policy.model_copy(update={"audit_rate": 0.06}).version != v


# ----------------------------------------------------------------------------- routing


def _row(image_id, category, conf=0.99, boundary=0.05, area=0.3, comps=1, colour=5.0):
    return dict(
        image_id=image_id, category=category, confidence=conf, boundary_uncertainty=boundary,
        mask_area_fraction=area, connected_components=comps, colour_distance=colour,
    )


def test_route_hand_built_frame(default_policy):
    rows = [
        _row("ok-shoe", "shoe"),
        _row("low-conf", "shoe", conf=0.80),
        _row("bottle-conf", "bottle", conf=0.82),  # bottle allows 0.80
        _row("bottle-edge", "bottle", boundary=0.35),  # bottle allows 0.40
        _row("shoe-edge", "shoe", boundary=0.35),  # default 0.25
        _row("tiny-shoe", "shoe", area=0.005),
        _row("tiny-ring", "jewellery", area=0.005, comps=5),  # jewellery: 0.002, 6 comps
        _row("blobs-bag", "bag", comps=3),
        _row("huge", "bag", area=0.99),
        _row("colour", "garment", colour=30.0),
        _row("many", "shoe", conf=0.5, boundary=0.9, area=0.999, comps=9, colour=99.0),
        _row("unknown-cat", "hats", conf=0.86),  # not in the policy: defaults
        _row("unknown-strict", "unknown", conf=0.86),  # the 'unknown' category is stricter
        _row("missing-signal", "shoe", conf=np.nan),
        _row("edge-equal", "shoe", conf=0.85, boundary=0.25, area=0.01, comps=2, colour=25.0),
    ]
    out = route(pd.DataFrame(rows), default_policy).set_index("image_id")
    expected = {
        "ok-shoe": "",
        "low-conf": "low_confidence",
        "bottle-conf": "",
        "bottle-edge": "",
        "shoe-edge": "boundary_uncertain",
        "tiny-shoe": "area_too_small",
        "tiny-ring": "",
        "blobs-bag": "fragmented_mask",
        "huge": "area_too_large",
        "colour": "colour_off_standard",
        "many": "low_confidence;boundary_uncertain;area_too_large;fragmented_mask;colour_off_standard",
        "unknown-cat": "",
        "unknown-strict": "low_confidence",
        "missing-signal": "low_confidence",
        "edge-equal": "",  # thresholds are inclusive
    }
    assert out["reasons"].to_dict() == expected
    for image_id, reasons in expected.items():
        assert out.loc[image_id, "route"] == ("escalate" if reasons else "auto_approve")
    assert (out["policy_version"] == default_policy.version).all()
    assert set(";".join(expected.values()).replace(";", " ").split()) <= set(REASON_CODES)


def test_route_keeps_input_and_index(default_policy):
    frame = pd.DataFrame([_row("a", "shoe"), _row("b", "bag", conf=0.1)], index=[10, 20])
    frame["sku"] = ["x", "y"]
    before = frame.copy()
    out = route(frame, default_policy)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert list(out.index) == [10, 20]
    assert list(out.columns) == list(frame.columns) + ["route", "reasons", "audit", "double_review", "policy_version"]
    assert out["audit"].dtype == bool and out["double_review"].dtype == bool


def test_route_requires_columns(default_policy):
    with pytest.raises(ValueError, match="confidence"):
        route(pd.DataFrame({"image_id": ["a"], "category": ["shoe"]}), default_policy)


def test_route_empty_frame(default_policy):
    out = route(pd.DataFrame({c: [] for c in SIGNAL_COLUMNS}), default_policy)
    assert len(out) == 0 and "route" in out.columns


def _random_signals(n: int, seed: int = 0, prefix: str = "img") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"{prefix}-{i:07d}" for i in range(n)],
        "category": rng.choice(["garment", "shoe", "bag", "bottle", "jewellery", "unknown", "hats"], n),
        "confidence": rng.uniform(0.6, 1.0, n),
        "boundary_uncertainty": rng.uniform(0.0, 0.4, n),
        "mask_area_fraction": rng.uniform(0.0, 1.0, n),
        "connected_components": rng.integers(1, 4, n),
        "colour_distance": rng.uniform(0.0, 35.0, n),
    })


def test_sampling_rates_and_determinism(default_raw):
    policy = parse_policy(yaml.safe_dump({**default_raw, "audit_rate": 0.10, "double_review_rate": 0.20}))
    # loosen the thresholds so that about half the items are auto-approved
    frame = _random_signals(20_000)
    frame["confidence"] = np.where(np.arange(len(frame)) % 2 == 0, 0.99, 0.10)
    frame["boundary_uncertainty"] = 0.01
    frame["mask_area_fraction"] = 0.3
    frame["connected_components"] = 1
    frame["colour_distance"] = 1.0
    out = route(frame, policy)
    auto = out["route"] == "auto_approve"
    assert 0.45 < auto.mean() < 0.55
    assert not out.loc[~auto, "audit"].any()  # only auto-approved items are audited
    assert abs(out.loc[auto, "audit"].mean() - 0.10) < 0.015
    human = ~auto | out["audit"]
    assert not out.loc[~human, "double_review"].any()  # double review only among human-reviewed
    assert abs(out.loc[human, "double_review"].mean() - 0.20) < 0.02
    # same decisions on a second call and in another row order / batch split
    again = route(frame, policy)
    pd.testing.assert_frame_equal(out, again)
    shuffled = route(frame.sample(frac=1.0, random_state=1), policy).sort_index()
    pd.testing.assert_series_equal(out["audit"], shuffled["audit"])
    first_half = route(frame.iloc[:10_000], policy)
    pd.testing.assert_series_equal(out["double_review"].iloc[:10_000], first_half["double_review"])


def test_sample_uniform_is_stable_and_monotone():
    ids = [f"id-{i}" for i in range(20_000)]  # more ids than one hashing slice
    u = sample_uniform(ids, "audit")
    assert ((u >= 0) & (u < 1)).all()
    assert (sample_uniform(pd.Series(ids), "audit") == u).all()
    # an id's number does not depend on its position or on the other ids
    assert (sample_uniform(ids[::-1], "audit")[::-1] == u).all()
    assert sample_uniform(ids[12_345:12_346], "audit")[0] == u[12_345]
    assert not (sample_uniform(ids, "double_review") == u).all()  # purposes are independent
    assert abs(np.corrcoef(u, sample_uniform(ids, "double_review"))[0, 1]) < 0.05
    # the ids are hashed as text: 7 and "7" draw the same number
    assert sample_uniform([7], "audit")[0] == sample_uniform(["7"], "audit")[0]


def test_route_one_million_rows(default_policy):
    frame = _random_signals(1_000_000, seed=2)
    start = time.perf_counter()
    out = route(frame, default_policy)
    elapsed = time.perf_counter() - start
    print(f"\nroute() on {len(frame):,} rows: {elapsed:.2f} s "
          f"({(out['route'] == 'escalate').mean():.1%} escalated, {out['audit'].sum():,} audits, "
          f"{out['double_review'].sum():,} double reviews)")
    assert len(out) == 1_000_000


# ----------------------------------------------------------------------------- optional thresholds, writing


def test_needs_correction_probability_threshold(default_raw):
    raw = {**default_raw, "categories": {**default_raw["categories"], "shoe": {"max_needs_correction_probability": 0.1}}}
    policy = parse_policy(yaml.safe_dump(raw))
    rows = [_row("shoe-ok", "shoe"), _row("shoe-risky", "shoe"), _row("shoe-missing", "shoe"), _row("bag-risky", "bag")]
    frame = pd.DataFrame(rows)
    # no probability column: the threshold is not applied
    assert (route(frame, policy)["route"] == "auto_approve").all()
    frame["needs_correction_probability"] = [0.05, 0.4, np.nan, 0.9]
    out = route(frame, policy).set_index("image_id")
    assert out["reasons"].to_dict() == {
        "shoe-ok": "", "shoe-risky": "likely_needs_correction",
        "shoe-missing": "likely_needs_correction",  # a missing probability breaks a threshold that is set
        "bag-risky": "",  # bag has no probability threshold
    }
    assert "likely_needs_correction" in REASON_CODES
    bad = {**default_raw, "defaults": {**default_raw["defaults"], "max_needs_correction_probability": 1.5}}
    assert "defaults.max_needs_correction_probability:" in str(_problem(bad))
    assert "gold_check_rate:" in str(_problem({**default_raw, "gold_check_rate": 2}))


def test_new_fields_keep_old_versions(default_raw):
    # The default policy as it was before gold_check_rate and the probability threshold existed:
    # its version, recorded by earlier routing runs, is unchanged.
    before = {k: v for k, v in default_raw.items() if k != "gold_check_rate"}
    assert parse_policy(yaml.safe_dump(before)).version == "128150415b74"
    assert parse_policy(yaml.safe_dump({**before, "gold_check_rate": 0.0})).version == "128150415b74"
    assert parse_policy(yaml.safe_dump({**before, "gold_check_rate": 0.5})).version != "128150415b74"
    with_probability = {**before, "defaults": {**before["defaults"], "max_needs_correction_probability": 0.2}}
    assert parse_policy(yaml.safe_dump(with_probability)).version != "128150415b74"


def test_policy_yaml_round_trips(default_policy):
    from ml.policy import effective_thresholds, policy_yaml

    text = policy_yaml(default_policy, "fitted by a test\nsecond line")
    assert text.startswith("# fitted by a test\n# second line\n")
    again = parse_policy(text)
    assert again == default_policy and again.version == default_policy.version
    table = effective_thresholds(default_policy).set_index("category")
    assert table.loc["bottle", "min_confidence"] == 0.80 and table.loc["*", "min_confidence"] == 0.85


def test_reason_counts_count_every_code_of_every_item(default_policy):
    rng = np.random.default_rng(9)
    n = 2000
    signals = pd.DataFrame({
        "image_id": [f"img-{i}" for i in range(n)], "category": rng.choice(["garment", "shoe", "jewellery"], n),
        "confidence": rng.uniform(0.3, 1.0, n), "boundary_uncertainty": rng.uniform(0, 0.5, n),
        "mask_area_fraction": rng.uniform(0.0, 0.9, n), "connected_components": rng.integers(1, 6, n),
        "colour_distance": rng.uniform(0, 40, n),
    })
    reasons = route(signals, default_policy)["reasons"]
    counts = reason_counts(reasons)
    expected = reasons.str.split(";").explode().loc[lambda codes: codes != ""].value_counts()
    assert counts == {code: int(expected[code]) for code in counts} and set(counts) == set(expected.index)
    assert len(counts) >= 3 and set(counts) <= set(REASON_CODES)
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert reason_counts(pd.Series([], dtype=str)) == {} and reason_counts(pd.Series(["", ""])) == {}
