"""Codec quantizers: step sizes (HEVC QP, AV1 qindex) and dead-zone scalar quantization.

Step sizes are in the orthonormal-DCT coefficient domain (8-bit code values):
- HEVC/VVC/AVC: Δ = 2^((QP-4)/6) (HM `g_invQuantScales`: Δ(QP 4) = 1, doubling every 6 QP).
- AV1: qindex = 4·q for q ≤ 62 and 255 for q = 63 (libaom/SVT-AV1 `quantizer_to_qindex`); the AC
  step is the spec's AC lookup divided by 8. We do not embed the 256-entry table: the step is
  interpolated log-linearly between anchors (the lookup is qindex + 7 up to qindex 80, and the
  HEVC-equivalent QPs of higher qindex are listed in the science brief §3.4), which is exact at
  the anchors and within a few percent between them.

Dead-zone quantization |level| = floor(|c|/Δ + f), f ≈ 1/3 intra and 1/6 inter (HM/x265 without
RDOQ: 171/512 and 85/512). The AV1 form adds a zero bin (|c|/Δ < zbin → 0) and rounding 48/128
(SVT-AV1 `quantize_b`). Forward exact; backward identity on c/Δ (straight-through).
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

INTRA_ROUNDING = 171.0 / 512.0
INTER_ROUNDING = 85.0 / 512.0
AV1_ZBIN = 82.0 / 128.0
AV1_ROUNDING = 48.0 / 128.0

# (qindex, AC step in orthonormal-DCT units): lookup/8 for qindex <= 80, then HEVC-equivalent
# QPs 28.0, 30.8, 34.9, 39.3, 43.2, 47.2, 51 at qindex 108, 128, 156, 184, 208, 232, 255.
_AV1_ANCHORS_QP = ((108, 28.0), (128, 30.8), (156, 34.9), (184, 39.3), (208, 43.2), (232, 47.2), (255, 51.0))
_AV1_ANCHORS = [(0, 0.5), (1, 1.0), (40, 47 / 8), (80, 87 / 8)] + [
    (q, 2.0 ** ((qp - 4.0) / 6.0)) for q, qp in _AV1_ANCHORS_QP
]
_AV1_X = np.array([a[0] for a in _AV1_ANCHORS], dtype=np.float64)
_AV1_LOG_STEP = np.log2([a[1] for a in _AV1_ANCHORS])

Number = Union[float, torch.Tensor]


def hevc_qstep(qp: Number) -> Number:
    """HEVC quantizer step Δ = 2^((QP-4)/6) for a float or a tensor of QPs."""
    if isinstance(qp, torch.Tensor):
        return torch.pow(2.0, (qp - 4.0) / 6.0)
    return 2.0 ** ((float(qp) - 4.0) / 6.0)


def hevc_chroma_qp(qp: float) -> float:
    """HEVC 4:2:0 chroma QP for luma QP `qp` (H.265 Table 8-10, no chroma offset)."""
    table = {30: 29, 31: 30, 32: 31, 33: 32, 34: 33, 35: 33, 36: 34, 37: 34, 38: 35, 39: 35, 40: 36, 41: 36, 42: 37, 43: 37}
    q = float(qp)
    if q < 30:
        return q
    if q > 43:
        return q - 6.0
    lo = math.floor(q)
    frac = q - lo
    lo_c = table[lo]
    hi_c = table.get(lo + 1, lo + 1 - 6)
    return lo_c + frac * (hi_c - lo_c)


def av1_qindex(q: int) -> int:
    """AV1 quantizer (0..63, as `--crf`/`--qp` of SVT-AV1 and `--cq-level` of libaom) → qindex."""
    if not 0 <= int(q) <= 63:
        raise ValueError(f"AV1 quantizer must be in 0..63, got {q}")
    return 255 if int(q) == 63 else 4 * int(q)


def av1_qstep(qindex: float) -> float:
    """AV1 AC quantizer step (orthonormal-DCT units) for a qindex in [0, 255]."""
    if not 0 <= qindex <= 255:
        raise ValueError(f"AV1 qindex must be in [0, 255], got {qindex}")
    return float(2.0 ** np.interp(qindex, _AV1_X, _AV1_LOG_STEP))


def av1_q_to_hevc_qp(q: int) -> float:
    """HEVC-equivalent QP (same step size) of AV1 quantizer q (0..63)."""
    return 4.0 + 6.0 * math.log2(av1_qstep(av1_qindex(q)))


def hevc_qp_to_av1_q(qp: float) -> int:
    """The AV1 quantizer (0..63) whose step is closest to HEVC QP `qp`."""
    return int(min(range(64), key=lambda q: abs(av1_q_to_hevc_qp(q) - qp)))


def deadzone_quantize(coeffs: torch.Tensor, qstep: Number, rounding: Number, zbin: float = 0.0) -> torch.Tensor:
    """Quantizer levels sign(c)·floor(|c|/Δ + f), zeroed below `zbin`·Δ; exact forward, STE backward.

    Args:
        coeffs: DCT coefficients, any shape (code-value units).
        qstep: step Δ, a float or a tensor broadcastable to `coeffs`.
        rounding: rounding offset f (1/3 intra, 1/6 inter for HEVC), float or broadcastable tensor.
        zbin: zero-bin threshold in units of Δ (AV1 form; 0 disables it).

    Returns:
        Float tensor of integer-valued levels, same shape as `coeffs`.
    """
    u = coeffs / qstep
    mag = torch.floor(u.abs() + rounding)
    if zbin > 0.0:
        mag = mag * (u.abs() >= zbin).to(u.dtype)
    level = torch.sign(u) * torch.clamp(mag, min=0.0)
    return u + (level - u).detach()
