"""Bjøntegaard deltas (BD-rate, BD-quality) between two rate-quality curves.

```
 anchor (rate_kbps[], quality[]) ─┐
                                  ├─> interpolate log10(rate) vs quality (PCHIP | Akima)
 test   (rate_kbps[], quality[]) ─┘   integrate over the OVERLAPPING interval only ─> BDResult
```

Method: VCEG-M33 with piecewise cubic Hermite interpolation (PCHIP, as in the JCT-VC/JVET CTC
Excel sheet, JCTVC-L1100 / JVET-T2010) or Akima interpolation (Herglotz et al., ICIP 2022), as
implemented by the `bjontegaard` package (FAU-LMS). See science_brief §5.1.

Stable API (the training stage imports it; keep it small):

- `bd_rate(rate_anchor, q_anchor, rate_test, q_test, *, method="pchip", min_overlap=0.5, monotonic="drop") -> BDResult`:
  average rate difference of test vs anchor at equal quality, in percent (negative = test saves
  bits). Integrated over the quality interval where both curves exist.
- `bd_quality(rate_anchor, q_anchor, rate_test, q_test, *, method="pchip", min_overlap=0.5) -> BDResult`:
  average quality difference at equal rate (metric units, e.g. VMAF points or dB; positive = better),
  over the overlapping log-rate interval.
- `BDResult`: frozen dataclass `(value, overlap, method, warning)`. `value` is `nan` when it cannot
  be computed (fewer than 2 finite points, non-monotonic curve, no overlap); `warning` then says why.
  `overlap` is the overlapping share of the union interval (0..1); below `min_overlap` the value is
  still computed but `warning` is set (and a `BDOverlapWarning` is emitted).
- `METHODS = ("pchip", "akima")`.

Input handling: rates in any positive unit (kbps by convention; must match between curves),
points in any order (sorted here by rate). Points with NaN/inf/non-positive rate or NaN quality
are dropped. Quality must rise strictly with rate to be interpolated as a function of quality:
points that do not raise the quality above every lower-rate point (e.g. VMAF saturated at 100
after sharpening) are dropped with a warning (`monotonic="drop"`, the default), or the result is
NaN (`monotonic="nan"`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from preedit.errors import UsageError

METHODS = ("pchip", "akima")


class BDOverlapWarning(UserWarning):
    """The two curves overlap over less than `min_overlap` of their joint range."""


@dataclass(frozen=True)
class BDResult:
    """One Bjøntegaard delta.

    Attributes:
        value: BD-rate in percent, or BD-quality in metric units; `nan` if not computable.
        overlap: overlapping share (0..1) of the joint interval integrated over.
        method: interpolation method (`pchip` or `akima`).
        warning: why `value` is NaN or less trustworthy (None when all is well).
    """

    value: float
    overlap: float
    method: str
    warning: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when `value` is finite."""
        return math.isfinite(self.value)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown BD interpolation method {method!r}; choose one of {', '.join(METHODS)}")


def _clean(rate: Sequence[float], quality: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise UsageError(f"rate and quality lengths differ: {r.size} vs {q.size}")
    keep = np.isfinite(r) & (r > 0) & np.isfinite(q)
    r, q = r[keep], q[keep]
    order = np.argsort(r, kind="stable")
    return r[order], q[order]


def _overlap(a: np.ndarray, b: np.ndarray) -> Tuple[float, float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    span = max(a.max(), b.max()) - min(a.min(), b.min())
    share = max(hi - lo, 0.0) / span if span > 0 else 0.0
    return float(share), float(lo), float(hi)


def _delta(
    x_anchor: np.ndarray, y_anchor: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    method: str, min_overlap: float,
) -> Tuple[float, float, Optional[str]]:
    """Mean of (f_test - f_anchor) over the overlap of the x ranges; both x strictly increasing."""
    import bjontegaard as bd  # lazy: bjontegaard

    share, lo, hi = _overlap(x_anchor, x_test)
    if share <= 0.0 or hi <= lo:
        return math.nan, 0.0, "curves do not overlap"
    warning = None
    if share < min_overlap:
        warning = f"small overlap {share:.0%} < {min_overlap:.0%}"
        warnings.warn(warning, BDOverlapWarning, stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we report overlap ourselves
        value = bd.bd_linear(x_anchor, y_anchor, x_test, y_test, method,
                             require_matching_points=False, min_overlap=0.0)  # fmt: skip
    return float(value), share, warning


def _strictly_increasing(x: np.ndarray) -> bool:
    return bool(np.all(np.diff(x) > 0))


def monotone_points(rate: np.ndarray, quality: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Keep, in rate order, only points whose quality exceeds that of every lower-rate point kept."""
    keep, best = [], -math.inf
    for i, q in enumerate(quality):
        if q > best:
            keep.append(i)
            best = q
    return rate[keep], quality[keep]


def _prepare(rate, quality, monotonic: str, notes: list) -> Tuple[np.ndarray, np.ndarray]:
    r, q = _clean(rate, quality)
    if not _strictly_increasing(q) and monotonic == "drop":
        r2, q2 = monotone_points(r, q)
        notes.append(f"dropped {r.size - r2.size} point(s) where quality does not rise with rate")
        r, q = r2, q2
    return r, q


def bd_rate(
    rate_anchor: Sequence[float],
    q_anchor: Sequence[float],
    rate_test: Sequence[float],
    q_test: Sequence[float],
    *,
    method: str = "pchip",
    min_overlap: float = 0.5,
    monotonic: str = "drop",
) -> BDResult:
    """BD-rate (percent) of test vs anchor at equal quality; negative means the test saves bits.

    Args:
        rate_anchor: anchor rates (e.g. kbps), one per rate point.
        q_anchor: anchor quality (higher is better), same length.
        rate_test: test rates, same unit.
        q_test: test quality, same metric.
        method: `pchip` (JVET CTC) or `akima`.
        min_overlap: warn when the quality intervals overlap over less than this share.
        monotonic: `drop` non-rising points (with a warning) or return `nan`.
    """
    _check_method(method)
    if monotonic not in ("drop", "nan"):
        raise UsageError(f"monotonic must be 'drop' or 'nan', got {monotonic!r}")
    notes: list = []
    ra, qa = _prepare(rate_anchor, q_anchor, monotonic, notes)
    rt, qt = _prepare(rate_test, q_test, monotonic, notes)
    if ra.size < 2 or rt.size < 2:
        return BDResult(math.nan, 0.0, method, _join(notes + ["fewer than 2 usable rate points on a curve"]))
    if not (_strictly_increasing(qa) and _strictly_increasing(qt)):
        return BDResult(math.nan, 0.0, method, _join(notes + ["quality is not strictly increasing with rate"]))
    delta_log, share, warning = _delta(qa, np.log10(ra), qt, np.log10(rt), method, min_overlap)
    value = (10.0**delta_log - 1.0) * 100.0 if math.isfinite(delta_log) else math.nan
    return BDResult(value, share, method, _join(notes + ([warning] if warning else [])))


def _join(notes: list) -> Optional[str]:
    return "; ".join(notes) if notes else None


def bd_quality(
    rate_anchor: Sequence[float],
    q_anchor: Sequence[float],
    rate_test: Sequence[float],
    q_test: Sequence[float],
    *,
    method: str = "pchip",
    min_overlap: float = 0.5,
) -> BDResult:
    """BD-quality (metric units) of test vs anchor at equal rate; positive means the test looks better.

    For PSNR this is BD-PSNR (dB); for VMAF, VMAF points. Integrated over the overlapping
    log10-rate interval. Args as in `bd_rate`.
    """
    _check_method(method)
    ra, qa = _clean(rate_anchor, q_anchor)
    rt, qt = _clean(rate_test, q_test)
    if ra.size < 2 or rt.size < 2:
        return BDResult(math.nan, 0.0, method, "fewer than 2 finite rate points on a curve")
    if not (_strictly_increasing(ra) and _strictly_increasing(rt)):
        return BDResult(math.nan, 0.0, method, "repeated rate values")
    value, share, warning = _delta(np.log10(ra), qa, np.log10(rt), qt, method, min_overlap)
    return BDResult(value, share, method, warning)
