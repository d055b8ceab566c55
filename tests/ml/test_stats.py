"""ml.stats: intervals, kappa and tests against values computed by hand (and published tables)."""

import math

import numpy as np
import pytest

from ml.stats import (
    clopper_pearson_interval,
    cohens_kappa,
    effective_sample_size,
    linear_slope,
    proportion_difference_pvalue,
    proportion_increase_pvalue,
    proportion_interval,
    weighted_proportion,
    wilson_interval,
    z_value,
    zero_failure_sample_size,
)

Z = 1.959963984540054  # two-sided 95 %
Z2 = Z * Z  # 3.841459


def test_z_value():
    assert z_value(0.95) == pytest.approx(Z, abs=1e-12)
    with pytest.raises(ValueError):
        z_value(1.0)


def test_wilson_by_hand():
    # k = 0, n = 10: low = 0, high = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z2 / (10 + Z2)), abs=1e-12)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.277533, abs=1e-6)
    # k = 2, n = 10: centre = (2 + z^2/2) / (n + z^2) = 3.920729 / 13.841459 = 0.283259
    #                half   = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4) = 0.141601 * sqrt(1.6 + 0.960365) = 0.226577
    #                -> (0.056682, 0.509838), the textbook value for 2/10
    centre = (2 + Z2 / 2) / (10 + Z2)
    half = Z / (10 + Z2) * math.sqrt(2 * 8 / 10 + Z2 / 4)
    low, high = wilson_interval(2, 10)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (low, high) == pytest.approx((0.056682, 0.509838), abs=1e-6)
    # all successes: the upper end is 1; no data: [0, 1]
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_clopper_pearson_by_hand():
    # k = 0: high = 1 - (alpha/2)^(1/n) = 1 - 0.025^(1/10) = 0.308497
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)
    # k = n: low = (alpha/2)^(1/n)
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    # 2/10: the published exact interval (0.0252, 0.5561)
    assert clopper_pearson_interval(2, 10) == pytest.approx((0.025211, 0.556095), abs=1e-6)
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)
    # exact is never narrower than Wilson here
    w, cp = wilson_interval(2, 10), clopper_pearson_interval(2, 10)
    assert cp[0] <= w[0] and cp[1] >= w[1]


def test_intervals_are_vectorised_and_checked():
    low, high = proportion_interval(np.array([0, 2]), np.array([10, 10]), "wilson")
    assert high == pytest.approx([Z2 / (10 + Z2), 0.509838], abs=1e-6)
    low, high = proportion_interval([0, 2], [10, 10], "clopper-pearson")
    assert high[0] == pytest.approx(1 - 0.025 ** 0.1)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match="unknown interval method"):
        proportion_interval(1, 2, "bayes")


def test_zero_failure_sample_size():
    # Wilson, k = 0: z^2 / (n + z^2) <= t  <=>  n >= z^2 (1 - t) / t = 3.841459 * 0.95 / 0.05 = 72.99 -> 73
    assert zero_failure_sample_size(0.05) == 73
    assert wilson_interval(0, 73)[1] <= 0.05 < wilson_interval(0, 72)[1]
    # 0.01: 3.841459 * 99 = 380.3 -> 381
    assert zero_failure_sample_size(0.01) == 381
    # Clopper-Pearson, k = 0: n >= ln(0.025) / ln(0.95) = 71.92 -> 72
    assert zero_failure_sample_size(0.05, "clopper-pearson") == 72
    assert clopper_pearson_interval(0, 72)[1] <= 0.05 < clopper_pearson_interval(0, 71)[1]


def test_weighted_proportion_and_effective_size():
    # y = (1, 0, 0), w = (1, 1, 2): p = 1/4; n_eff = (1+1+2)^2 / (1+1+4) = 16/6 = 2.667; k_eff = p n_eff = 0.667
    p, k_eff, n_eff = weighted_proportion([1, 0, 0], [1, 1, 2])
    assert (p, k_eff, n_eff) == pytest.approx((0.25, 2 / 3, 8 / 3))
    # equal weights: exactly (k/n, k, n)
    assert weighted_proportion([1, 0, 0, 1], [3, 3, 3, 3]) == pytest.approx((0.5, 2.0, 4.0))
    assert effective_sample_size([]) == 0.0


def test_cohens_kappa_by_hand():
    # 10 items: both approve 5, A approve/B not 1, A not/B approve 1, both not 3
    # p_o = 8/10 = 0.8; p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52; kappa = (0.8 - 0.52) / (1 - 0.52) = 0.583333
    a = [1] * 5 + [1, 0] + [0] * 3
    b = [1] * 5 + [0, 1] + [0] * 3
    assert cohens_kappa(a, b) == pytest.approx(0.28 / 0.48)
    assert cohens_kappa(a, a) == 1.0
    # perfect disagreement on a balanced set: p_o = 0, p_e = 0.5 -> -1
    assert cohens_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # both always the same single label: chance agreement is 1 -> kappa defined as 1 when they agree
    assert cohens_kappa([1, 1, 1], [1, 1, 1]) == 1.0
    assert math.isnan(cohens_kappa([], []))
    with pytest.raises(ValueError):
        cohens_kappa([1, 0], [1])


def test_fisher_tests_by_hand():
    # recent 5/10 against baseline 0/10: P(X >= 5) for the hypergeometric (N = 20, K = 5, n = 10)
    # = C(5,5) C(15,5) / C(20,10) = 3003 / 184756 = 0.016254
    assert proportion_increase_pvalue(5, 10, 0, 10) == pytest.approx(3003 / 184756)
    assert proportion_increase_pvalue(0, 10, 5, 10) == pytest.approx(1.0)
    assert proportion_increase_pvalue(1, 0, 1, 10) == 1.0
    assert proportion_difference_pvalue(5, 10, 0, 10) == pytest.approx(2 * 3003 / 184756)


def test_linear_slope():
    assert linear_slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2.0)
    assert math.isnan(linear_slope([1, 2], [1, 2]))
    assert math.isnan(linear_slope([1, 1, 1], [1, 2, 3]))
