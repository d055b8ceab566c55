import numpy as np

from ml.metrics import automation_at_fn, mask_iou


def test_mask_iou_known_values():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[:2] = 255
    b[:, :2] = 255
    assert mask_iou(a, b) == 4 / 12
    assert mask_iou(a * 0, b * 0) == 1.0


def test_automation_at_fn_known_values():
    risk = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    bad = np.array([False, False, True, False, True])
    assert automation_at_fn(risk, bad, 0.0) == 2 / 5  # stop before the first bad item
    assert automation_at_fn(risk, bad, 0.25) == 4 / 5  # 1 bad in 4 approved is 25 %
    assert automation_at_fn(risk, np.ones(5, bool), 0.01) == 0.0
