"""The model's QP input across codecs, and AV1 quantizer step sizes.

The model's QP input is a *quality level on libx265's scale*: "the encoder will be about as coarse
as libx265 medium at this fixed QP". One model serves every codec through it:

- HEVC (and H.264) QP/CRF: as is.
- AV1 quantizer q (0..63; SVT-AV1 `--crf`/`--qp`, NVENC AV1 CQ as an approximation): the x265 QP
  of equal plain-encode PSNR-Y, per rate-control mode, from `av1_quality_map.json` (fitted on
  training clips by `preedit qp-calibrate`). SVT-AV1 is much finer than x265 at equal quantizer
  step (about 8 QP at q 36), so the equal-step QP would ask the model for a far stronger edit
  than the codec's coarseness calls for.
- The training proxy's "av1" family and its real SVT-AV1 forward invert the same map (`qp` mode):
  model QP → AV1 quantizer → its step, so training and serving agree on what a QP means.

AV1 step sizes: qindex = 4·q for q ≤ 62 and 255 for q = 63 (`quantizer_to_qindex`), AC step
interpolated log-linearly between anchors (the spec lookup/8, which is qindex + 7 up to qindex 80,
and the HEVC-equivalent QPs of higher qindex from the science brief §3.4): exact at the anchors,
within a few percent between them.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Tuple

import numpy as np

AV1_QUALITY_MAP_PATH = Path(__file__).resolve().parent / "av1_quality_map.json"
# The encoders' reported frame QP (AV_PKT_DATA_QUALITY_STATS) → the CRF of equal reported QP, per family:
# fitted on training clips by `preedit qp-calibrate --reported`.
REPORTED_QP_MAP_PATH = Path(__file__).resolve().parent / "reported_qp_map.json"

# (qindex, AC step in orthonormal-DCT units): lookup/8 for qindex <= 80, then HEVC-equivalent
# QPs 28.0, 30.8, 34.9, 39.3, 43.2, 47.2, 51 at qindex 108, 128, 156, 184, 208, 232, 255.
_AV1_ANCHORS_QP = ((108, 28.0), (128, 30.8), (156, 34.9), (184, 39.3), (208, 43.2), (232, 47.2), (255, 51.0))
_AV1_ANCHORS = [(0, 0.5), (1, 1.0), (40, 47 / 8), (80, 87 / 8)] + [
    (q, 2.0 ** ((qp - 4.0) / 6.0)) for q, qp in _AV1_ANCHORS_QP
]
AV1_X = np.array([a[0] for a in _AV1_ANCHORS], dtype=np.float64)
AV1_LOG_STEP = np.log2([a[1] for a in _AV1_ANCHORS])


def av1_qindex(q: float) -> float:
    """AV1 quantizer (0..63) → qindex: 4·q up to 62, 255 at 63 (linear in between for fractions)."""
    q = float(q)
    if not 0.0 <= q <= 63.0:
        raise ValueError(f"AV1 quantizer must be in 0..63, got {q:g}")
    if q <= 62.0:
        return 4.0 * q
    return 248.0 + (q - 62.0) * 7.0


def av1_qstep(qindex: float) -> float:
    """AV1 AC quantizer step (orthonormal-DCT units) for a qindex in [0, 255]."""
    if not 0 <= qindex <= 255:
        raise ValueError(f"AV1 qindex must be in [0, 255], got {qindex}")
    return float(2.0 ** np.interp(qindex, AV1_X, AV1_LOG_STEP))


def av1_q_to_hevc_qp(q: float) -> float:
    """HEVC-equivalent QP (same step size) of AV1 quantizer q (0..63)."""
    return 4.0 + 6.0 * math.log2(av1_qstep(av1_qindex(q)))


def hevc_qp_to_av1_q(qp: float) -> int:
    """The AV1 quantizer (0..63) whose step is closest to HEVC QP `qp`."""
    return int(min(range(64), key=lambda q: abs(av1_q_to_hevc_qp(q) - qp)))


@lru_cache(maxsize=None)
def _quality_table(mode: str) -> Tuple[np.ndarray, np.ndarray]:
    data = json.loads(AV1_QUALITY_MAP_PATH.read_text())
    if mode not in data["table"]:
        raise ValueError(f"unknown AV1 rate-control mode {mode!r}; valid: {sorted(data['table'])}")
    q, qp = np.array(data["table"][mode], dtype=np.float64).T
    if np.any(np.diff(q) <= 0) or np.any(np.diff(qp) <= 0):
        raise ValueError(f"{AV1_QUALITY_MAP_PATH}: the {mode} table must rise in both columns")
    return q, qp


def _interp_ext(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear interpolation, extended linearly past both ends."""
    if x < xs[0]:
        return float(ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0]))
    if x > xs[-1]:
        return float(ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
    return float(np.interp(x, xs, ys))


def av1_model_qp(q: float, mode: str = "crf") -> float:
    """Model QP (x265 QP of equal quality) of AV1 quantizer q (0..63) in rate-control `mode`."""
    if not 0.0 <= float(q) <= 63.0:
        raise ValueError(f"AV1 quantizer must be in 0..63, got {float(q):g}")
    xs, ys = _quality_table(mode)
    return _interp_ext(float(q), xs, ys)


def av1_quantizer_for_model_qp(qp: float, mode: str = "qp") -> float:
    """The AV1 quantizer (0..63, fractional) whose quality matches model QP `qp` (inverse map)."""
    xs, ys = _quality_table(mode)
    return float(min(max(_interp_ext(float(qp), ys, xs), 0.0), 63.0))


def av1_step_qp_for_model_qp(qp: float, mode: str = "qp") -> float:
    """HEVC QP of equal *step* to the AV1 quantizer that matches model QP `qp` in quality."""
    return av1_q_to_hevc_qp(av1_quantizer_for_model_qp(qp, mode))


def model_qp(family: str, value: float, mode: str = "crf") -> float:
    """The model's QP input for a rate-control value of a codec family (`hevc`, `h264`, `av1`).

    `mode` is the AV1 rate control (`crf` or `qp`); x26x values are on the model's scale already.
    """
    if family == "av1":
        return av1_model_qp(value, mode)
    return float(value)


@lru_cache(maxsize=None)
def _reported_fit(family: str) -> Tuple[float, float]:
    data = json.loads(REPORTED_QP_MAP_PATH.read_text())
    if family not in data["fit"]:
        raise ValueError(f"no reported-QP fit for {family!r}; valid: {sorted(data['fit'])}")
    a, b = data["fit"][family]
    return float(a), float(b)


def reported_qp_to_crf(family: str, reported: float) -> float:
    """The CRF whose encode reports this mean frame QP (the encoder's own statistic), per family.

    A rate-controlled encode (target bitrate / VBV) is told apart from a CRF encode only by the QPs
    it ends up using: the model's hint for it is the hint of the CRF encode that reports the same
    mean QP (`crf = a + b * reported`, fitted per family in `reported_qp_map.json`).
    """
    a, b = _reported_fit(family)
    return a + b * float(reported)
