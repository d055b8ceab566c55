import numpy as np

import json

from ml.calibration import FEATURES, Calibrator, cross_validated_probabilities, expected_calibration_error, fit_calibrator, reliability_curve


def test_calibrator_learns_that_low_confidence_needs_correction(review_history):
    frame, needs = review_history()
    calibrator = fit_calibrator(frame, needs)
    probs = calibrator.predict(frame)
    assert probs[frame.confidence < 0.5].mean() > 0.8 > 0.2 > probs[frame.confidence > 0.9].mean()
    restored = Calibrator.from_json(calibrator.to_json())
    assert np.allclose(restored.predict(frame), probs)


def test_reliability_of_out_of_fold_probabilities_is_close(review_history):
    frame, needs = review_history(800, seed=1)
    probs = cross_validated_probabilities(frame, needs)
    curve = reliability_curve(probs, needs)
    assert curve["count"].sum() == 800
    assert expected_calibration_error(curve) < 0.08


def test_too_little_or_one_sided_history_gives_no_calibrator(review_history):
    frame, needs = review_history(10)
    assert fit_calibrator(frame, needs) is None
    frame, _ = review_history(100)
    assert fit_calibrator(frame, np.zeros(100, dtype=bool)) is None
    nearly_all = np.ones(100, dtype=bool)
    nearly_all[:2] = False  # two items that needed no correction are not enough to say which ones will not
    assert fit_calibrator(frame, nearly_all) is None


def test_only_signals_that_predict_better_out_of_fold_enter(review_history):
    # the history's outcomes depend on confidence alone: the other four signals are noise
    frame, needs = review_history(600, seed=2)
    calibrator = fit_calibrator(frame, needs)
    assert calibrator.features == ("confidence",)
    assert set(calibrator.selection) == set(calibrator.ranking) == {"confidence", "confidence+boundary_uncertainty", "+".join(FEATURES)}
    # the colour distance matters as much as confidence: all five signals enter
    rng = np.random.default_rng(3)
    risk = 12 * (0.7 - frame["confidence"]) + 0.4 * (frame["colour_distance"] - 15)
    needs = rng.uniform(size=len(frame)) < 1 / (1 + np.exp(-risk.to_numpy()))
    calibrator = fit_calibrator(frame, needs)
    assert calibrator.features == FEATURES
    assert calibrator.selection["+".join(FEATURES)] < calibrator.selection["confidence"]
    # named signals skip the selection
    assert fit_calibrator(frame, needs, features=("confidence",)).features == ("confidence",)


def test_signals_that_fit_better_but_rank_the_confident_end_worse_stay_out(review_history):
    frame, _ = review_history(600, seed=0)
    rng = np.random.default_rng(0)
    confidence, cast = frame["confidence"].to_numpy(), frame["colour_distance"].to_numpy()
    p = 1 / (1 + np.exp(-(12 * (0.7 - confidence) + 0.3 * (cast - 15))))
    # confidence alone ranks the confident end well: nothing above 0.85 fails; just below it the items
    # with the least colour cast do (white products on white, say), which the colour distance, a help
    # on average, ranks as the safest of all: it misleads exactly where auto-approval happens
    p = np.where(confidence >= 0.8, np.where((confidence < 0.85) & (cast < 6), 0.9, 0.0), p)
    calibrator = fit_calibrator(frame, rng.uniform(size=len(frame)) < p)
    every = "+".join(FEATURES)
    assert calibrator.selection[every] < calibrator.selection["confidence"] - 0.05  # a far better log loss ...
    assert calibrator.ranking[every] < calibrator.ranking["confidence"]  # ... and a worse confident end
    assert calibrator.features == ("confidence",)


def test_a_calibrator_stored_before_the_selection_still_loads(review_history):
    frame, needs = review_history()
    stored = json.loads(fit_calibrator(frame, needs, features=FEATURES).to_json())
    del stored["selection"], stored["ranking"]
    restored = Calibrator.from_json(json.dumps(stored))
    assert restored.features == FEATURES and restored.selection == restored.ranking == {}
    assert restored.predict(frame).shape == (len(frame),)


def test_reliability_curve_known_values():
    curve = reliability_curve(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 0, 1, 0]))
    assert curve["count"].tolist() == [2, 2]
    assert curve["observed_rate"].tolist() == [0.0, 0.5]
    assert abs(expected_calibration_error(curve) - (0.05 + 0.45) / 2) < 1e-12
