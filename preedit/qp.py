"""The model's QP input across codecs: every rate control value is mapped to the HEVC QP of equal
quantizer step, the scale the network was trained on.

- HEVC/VVC/AVC QP: as is (Δ = 2^((QP-4)/6) in orthonormal-DCT units).
- AV1 quantizer q (0..63; SVT-AV1 `--crf`/`--qp`, libaom `--cq-level`, NVENC AV1 CQ): qindex = 4·q
  for q ≤ 62 and 255 for q = 63 (`quantizer_to_qindex`), then the HEVC QP whose step equals the AV1
  AC step at that qindex. The training proxy uses the same table when it quantizes the "av1"
  family and when its real-encoder forward picks an SVT-AV1 quantizer, so evaluation and serving
  feed the model the QP it was trained with.

The AV1 AC step is interpolated log-linearly between anchors (the spec lookup/8, which is
qindex + 7 up to qindex 80, and the HEVC-equivalent QPs of higher qindex from the science brief
§3.4): exact at the anchors, within a few percent between them.
"""

from __future__ import annotations

import math

import numpy as np

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


def model_qp(family: str, value: float) -> float:
    """The model's QP input for a rate-control value of a codec family (`hevc`, `h264`, `av1`)."""
    if family == "av1":
        return av1_q_to_hevc_qp(value)
    return float(value)
