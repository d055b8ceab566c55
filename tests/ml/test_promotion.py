from ml.promotion import promotion_decision


def summary(iou, **cats):
    return {"iou": iou, "per_category": {c: {"iou": v, "n": 5} for c, v in cats.items()}}


def test_first_model_is_promoted():
    assert promotion_decision(summary(0.5), None).promoted


def test_better_overall_and_per_category_is_promoted():
    decision = promotion_decision(summary(0.80, shoe=0.8, bag=0.8), summary(0.75, shoe=0.75, bag=0.79), margin=0.01)
    assert decision.promoted and decision.reason.startswith("better")


def test_below_margin_is_rejected_with_the_numbers():
    decision = promotion_decision(summary(0.755), summary(0.75), margin=0.01)
    assert not decision.promoted and "0.7550 vs champion 0.7500" in decision.reason


def test_category_regression_blocks_promotion():
    decision = promotion_decision(summary(0.82, shoe=0.95, jewellery=0.30), summary(0.78, shoe=0.80, jewellery=0.40), category_tolerance=0.05)
    assert not decision.promoted and decision.regressions == {"jewellery": 0.1}
    assert "jewellery -0.100" in decision.reason


def test_categories_with_too_few_gold_images_do_not_block():
    champion = {"iou": 0.7, "per_category": {"bag": {"iou": 0.9, "n": 1}}}
    challenger = {"iou": 0.8, "per_category": {"bag": {"iou": 0.1, "n": 1}}}
    assert promotion_decision(challenger, champion).promoted
