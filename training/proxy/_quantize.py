"""Codec quantizers: step sizes (HEVC QP, AV1 qindex) and dead-zone scalar quantization.

Step sizes are in the orthonormal-DCT coefficient domain (8-bit code values):
- HEVC/VVC/AVC: Δ = 2^((QP-4)/6) (HM `g_invQuantScales`: Δ(QP 4) = 1, doubling every 6 QP).
- AV1: qindex = 4·q for q ≤ 62 and 255 for q = 63 (libaom/SVT-AV1 `quantizer_to_qindex`); the AC
  step is the spec's AC lookup divided by 8, interpolated between anchors (`preedit.qp`, shared
  with evaluation and serving so the model's QP input means the same step everywhere).

Dead-zone quantization |level| = floor(|c|/Δ + f), f ≈ 1/3 intra and 1/6 inter (HM/x265 without
RDOQ: 171/512 and 85/512). The AV1 form adds a zero bin (|c|/Δ < zbin → 0) and rounding 48/128
(SVT-AV1 `quantize_b`). Forward exact; backward identity on c/Δ (straight-through).
"""

from __future__ import annotations

import math
from typing import Union

import torch

INTRA_ROUNDING = 171.0 / 512.0
INTER_ROUNDING = 85.0 / 512.0
AV1_ZBIN = 82.0 / 128.0
AV1_ROUNDING = 48.0 / 128.0

# One AV1 step table for the proxy, evaluation and serving (`preedit.qp`); re-exported here.
from preedit.qp import av1_q_to_hevc_qp, av1_qindex, av1_qstep, hevc_qp_to_av1_q  # noqa: F401

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
