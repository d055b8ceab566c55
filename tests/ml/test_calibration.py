import numpy as np
import pandas as pd

from ml.calibration import Calibrator, cross_validated_probabilities, expected_calibration_error, fit_calibrator, reliability_curve


def history(n=400, seed=0):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, n)
    frame = pd.DataFrame({
        "confidence": confidence, "boundary_uncertainty": rng.uniform(0, 0.5, n), "mask_area_fraction": rng.uniform(0.05, 0.6, n),
        "connected_components": rng.integers(1, 4, n), "colour_distance": rng.uniform(0, 30, n),
    })
    # Truth: low confidence items usually need a correction.
    needs = rng.uniform(size=n) < 1 / (1 + np.exp(12 * (confidence - 0.7)))
    return frame, needs


def test_calibrator_learns_that_low_confidence_needs_correction():
    frame, needs = history()
    calibrator = fit_calibrator(frame, needs)
    probs = calibrator.predict(frame)
    assert probs[frame.confidence < 0.5].mean() > 0.8 > 0.2 > probs[frame.confidence > 0.9].mean()
    restored = Calibrator.from_json(calibrator.to_json())
    assert np.allclose(restored.predict(frame), probs)


def test_reliability_of_out_of_fold_probabilities_is_close():
    frame, needs = history(800, seed=1)
    probs = cross_validated_probabilities(frame, needs)
    curve = reliability_curve(probs, needs)
    assert curve["count"].sum() == 800
    assert expected_calibration_error(curve) < 0.08


def test_too_little_or_one_sided_history_gives_no_calibrator():
    frame, needs = history(10)
    assert fit_calibrator(frame, needs) is None
    frame, _ = history(100)
    assert fit_calibrator(frame, np.zeros(100, dtype=bool)) is None
    nearly_all = np.ones(100, dtype=bool)
    nearly_all[:2] = False  # two items that needed no correction are not enough to say which ones will not
    assert fit_calibrator(frame, nearly_all) is None


def test_reliability_curve_known_values():
    curve = reliability_curve(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 0, 1, 0]))
    assert curve["count"].tolist() == [2, 2]
    assert curve["observed_rate"].tolist() == [0.0, 0.5]
    assert abs(expected_calibration_error(curve) - (0.05 + 0.45) / 2) < 1e-12
