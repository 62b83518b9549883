"""BD-rate / BD-quality: hand-computed cases, independent PCHIP/Akima on published data, NaN/overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preedit.errors import UsageError
from preedit.quality.bdrate import BDOverlapWarning, bd_quality, bd_rate, monotone_points

# Published example data of the `bjontegaard` package (FAU-LMS/bjontegaard example_usage.py and the
# matching Matlab example): libx265 presets measured with FFmpeg, rates in kbps, PSNR in dB.
FAU_CASES = {
    "low_rates": (
        [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851],
        [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987],
    ),
    "high_rates": (
        [82472.76, 26875.24, 9487.76, 4593.6], [43.825, 41.404, 40.037, 38.615],
        [99896.96, 33952.04, 9787.8, 4469.0], [44.731, 41.875, 40.121, 38.651],
    ),
    "six_points": (
        [82472.76, 26875.24, 9487.76, 4593.6, 2486.44, 1358.24], [43.825, 41.404, 40.037, 38.615, 36.845, 34.851],
        [99896.96, 33952.04, 9787.8, 4469.0, 2451.52, 1356.24], [44.731, 41.875, 40.121, 38.651, 36.970, 34.987],
    ),
}  # fmt: skip


# ---- independent reference implementations (written from the papers, not from the package) ----


def _pchip_slopes(x, y):
    """Fritsch-Carlson / Fritsch-Butland slopes with the shape-preserving 3-point ends (as Matlab pchip)."""
    h = np.diff(x)
    d = np.diff(y) / h
    n = len(x)
    m = np.zeros(n)
    if n == 2:
        return np.array([d[0], d[0]])
    for k in range(1, n - 1):
        if d[k - 1] * d[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            m[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])

    def end(h0, h1, d0, d1):
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(s) > abs(3 * d0):
            return 3 * d0
        return s

    m[0] = end(h[0], h[1], d[0], d[1])
    m[-1] = end(h[-1], h[-2], d[-1], d[-2])
    return m


def _akima_slopes(x, y):
    """Akima (1970) slopes with the usual two extrapolated secants at each end."""
    d = np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([d[0], d[0]])
    dd = np.concatenate([[3 * d[0] - 2 * d[1], 2 * d[0] - d[1]], d, [2 * d[-1] - d[-2], 3 * d[-1] - 2 * d[-2]]])
    m = np.zeros(len(x))
    for i in range(len(x)):
        w1, w2 = abs(dd[i + 3] - dd[i + 2]), abs(dd[i + 1] - dd[i])
        m[i] = 0.5 * (dd[i + 1] + dd[i + 2]) if w1 + w2 == 0 else (w1 * dd[i + 1] + w2 * dd[i + 2]) / (w1 + w2)
    return m


def _hermite_integral(x, y, m, lo, hi, samples=20001):
    t = np.linspace(lo, hi, samples)
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (t - x[k]) / h
    val = ((2 * s**3 - 3 * s**2 + 1) * y[k] + (s**3 - 2 * s**2 + s) * h * m[k]
           + (-2 * s**3 + 3 * s**2) * y[k + 1] + (s**3 - s**2) * h * m[k + 1])  # fmt: skip
    # Simpson's rule on the samples (odd count).
    w = np.ones(samples)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return float((hi - lo) / (samples - 1) / 3 * np.sum(w * val))


def _reference_bd_rate(ra, qa, rt, qt, slopes):
    ra, qa, rt, qt = (np.asarray(v, dtype=float) for v in (ra, qa, rt, qt))
    oa, ot = np.argsort(qa), np.argsort(qt)
    xa, ya = qa[oa], np.log10(ra[oa])
    xt, yt = qt[ot], np.log10(rt[ot])
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    ia = _hermite_integral(xa, ya, slopes(xa, ya), lo, hi)
    it = _hermite_integral(xt, yt, slopes(xt, yt), lo, hi)
    return (10 ** ((it - ia) / (hi - lo)) - 1) * 100


# ---- tests ----


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_bd_rate_equals_rate_ratio_when_test_is_anchor_scaled(method):
    rates = [120.0, 250.0, 480.0, 900.0, 1700.0]
    quality = [62.0, 71.5, 80.0, 87.0, 92.5]
    res = bd_rate(rates, quality, [0.8 * r for r in rates], quality, method=method)
    assert res.value == pytest.approx(-20.0, abs=1e-9)
    assert res.overlap == pytest.approx(1.0)
    assert res.warning is None


def test_bd_rate_matches_hand_computation_when_curves_are_two_point_lines():
    # Anchor: log10(rate) = (q - 30) / 10; test: log10(rate) = (q - 32) / 10 (2 dB better everywhere).
    # Over the overlap q in [32, 40] the log-rate gap is -0.2 -> BD-rate = 10**-0.2 - 1 = -36.904 %.
    res = bd_rate([1.0, 10.0], [30.0, 40.0], [1.0, 10.0], [32.0, 42.0], method="pchip")
    assert res.value == pytest.approx((10**-0.2 - 1) * 100, abs=1e-9)
    assert res.overlap == pytest.approx(8.0 / 12.0)
    q = bd_quality([1.0, 10.0], [30.0, 40.0], [1.0, 10.0], [32.0, 42.0], method="akima")
    assert q.value == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("case", sorted(FAU_CASES))
@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_bd_rate_matches_independent_reference_when_given_published_example(case, method):
    ra, qa, rt, qt = FAU_CASES[case]
    slopes = _pchip_slopes if method == "pchip" else _akima_slopes
    expected = _reference_bd_rate(ra, qa, rt, qt, slopes)
    got = bd_rate(ra, qa, rt, qt, method=method, min_overlap=0.0)
    assert got.value == pytest.approx(expected, abs=1e-6)


def test_bd_rate_is_order_independent_when_points_are_shuffled():
    ra, qa, rt, qt = FAU_CASES["six_points"]
    perm = [3, 0, 5, 1, 4, 2]
    a = bd_rate(ra, qa, rt, qt)
    b = bd_rate([ra[i] for i in perm], [qa[i] for i in perm], rt[::-1], qt[::-1])
    assert a.value == pytest.approx(b.value, abs=1e-12)


def test_bd_rate_of_identical_curves_is_zero_when_test_equals_anchor():
    ra, qa, _, _ = FAU_CASES["low_rates"]
    for method in ("pchip", "akima"):
        assert bd_rate(ra, qa, ra, qa, method=method).value == 0.0
        assert bd_quality(ra, qa, ra, qa, method=method).value == 0.0


def test_bd_rate_drops_nan_points_when_a_score_is_missing():
    rates = [100.0, 200.0, 400.0, 800.0, 1600.0]
    q = [60.0, 70.0, 80.0, 88.0, 93.0]
    q_nan = [60.0, float("nan"), 80.0, 88.0, 93.0]
    test_rates = [0.9 * r for r in rates]
    res = bd_rate(rates, q, test_rates, q_nan)
    without = bd_rate(rates, q, test_rates[:1] + test_rates[2:], q[:1] + q[2:])
    assert math.isfinite(res.value)
    assert res.value == pytest.approx(without.value, abs=1e-12)
    assert res.value != pytest.approx(bd_rate(rates, q, test_rates, q).value, abs=1e-3)


def test_bd_rate_is_nan_with_reason_when_too_few_finite_points():
    res = bd_rate([100.0, 200.0], [60.0, float("nan")], [100.0, 200.0], [61.0, 70.0])
    assert math.isnan(res.value) and not res.ok
    assert "fewer than 2" in res.warning


def test_bd_rate_is_nan_with_reason_when_curves_do_not_overlap():
    res = bd_rate([100.0, 200.0, 400.0], [60.0, 65.0, 70.0], [100.0, 200.0, 400.0], [80.0, 85.0, 90.0])
    assert math.isnan(res.value)
    assert res.overlap == 0.0
    assert "overlap" in res.warning


def test_bd_rate_warns_when_overlap_is_small():
    with pytest.warns(BDOverlapWarning):
        res = bd_rate([100.0, 200.0, 400.0], [60.0, 65.0, 70.0], [100.0, 200.0, 400.0], [69.0, 74.0, 79.0],
                      min_overlap=0.5)  # fmt: skip
    assert math.isfinite(res.value)
    assert res.overlap == pytest.approx(1.0 / 19.0)
    assert "small overlap" in res.warning


def test_bd_rate_drops_saturated_points_when_quality_stops_rising():
    r, q = monotone_points(np.array([1.0, 2.0, 3.0, 4.0]), np.array([90.0, 99.0, 100.0, 100.0]))
    assert list(q) == [90.0, 99.0, 100.0] and list(r) == [1.0, 2.0, 3.0]
    res = bd_rate([100, 200, 400, 800], [70, 80, 90, 95], [110, 220, 440, 880], [80, 90, 100, 100])
    assert math.isfinite(res.value) and "dropped 1" in res.warning
    strict = bd_rate([100, 200, 400, 800], [70, 80, 90, 95], [110, 220, 440, 880], [80, 90, 100, 100],
                     monotonic="nan")  # fmt: skip
    assert math.isnan(strict.value)


def test_bd_rate_rejects_unknown_method_when_called():
    with pytest.raises(UsageError, match="pchip, akima"):
        bd_rate([1, 2], [1, 2], [1, 2], [1, 2], method="cubic")
