"""The differentiable codec proxy C'_q: a hybrid block codec in YUV 4:2:0 on float NV12.

```
 frames NV12 [B, T, H*3/2, W] (float code values, the pre-editor's output)
   ─> clip + round (STE) ─> split Y, U, V
   frame 0: intra   (DC prediction from reconstructed neighbours, HEVC-style)
   frame t: per block, hard choice (stop-gradient) of intra or inter (block motion compensation
            from the proxy-reconstructed frame t-1, motion searched on the source frames)
   residual ─> orthonormal n×n DCT (n sampled from {4, 8, 16, 32}) ─> dead-zone quantizer
            (Δ = 2^((QP-4)/6), f = 1/3 intra, 1/6 inter; AV1: zero bin + 3/8) ─> dequant, IDCT
   recon = clip(pred + residual) (STE)          rate units = Σ log2(1 + |level|)
 ─> ProxyOutput(recon NV12 [B, T, H*3/2, W], bits [B, T], units_intra/inter [B, T])
```

Bits = a_intra·units (frame 0) or a_inter·units (frames ≥ 1) with a(·) calibrated against real
libx265 / libsvtav1 bits by `preedit proxy-check --write-calibration` (the ρ-domain soft
non-zero count of the sandwich proxy, refitted to real bits). Design: science brief §3.4; exact
forward with surrogate gradients after Reich et al., WACV 2024.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from preedit.codecs import PROXY_FAMILIES
from preedit.color import nv12_pack, nv12_split
from preedit.qp import av1_step_qp_for_model_qp
from preedit.training.proxy._dct import BLOCK_SIZES, block_dct, block_idct
from preedit.training.proxy._predict import (
    chroma_vectors,
    intra_dc_prediction,
    motion_compensate,
    motion_search,
    upsample_blocks,
)
from preedit.training.proxy._quantize import (
    AV1_ROUNDING, AV1_ZBIN, INTER_ROUNDING, INTRA_ROUNDING, deadzone_quantize, hevc_chroma_qp,
    hevc_qstep)
from preedit.training.proxy._ste import clip_ste, to_codec_pixels

CODECS = PROXY_FAMILIES
ALIGN = 64  # luma padding multiple: 32-pixel transforms, 16-pixel chroma blocks


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy settings.

    Attributes:
        codec: quantizer family, one of `CODECS` ("hevc": HM/x265 dead zone; "av1": SVT-AV1
            zero bin + rounding). QPs are always HEVC-equivalent (same Δ).
        block_sizes: luma transform sizes sampled per call (chroma uses half, at least 4).
        pred_block: luma block size of motion search and of the intra/inter decision.
        search_radius: motion search range in luma pixels.
        intra_qp_offset: QP offset of the intra frame (x265 CQP: I = P - 3).
        inter_qp_offset: QP offset of inter frames.
        rate_scale_intra: bits per rate unit in intra frames (calibrated).
        rate_scale_inter: bits per rate unit in inter frames (calibrated).
    """

    codec: str = "hevc"
    block_sizes: Tuple[int, ...] = BLOCK_SIZES
    pred_block: int = 16
    search_radius: int = 6
    intra_qp_offset: float = -3.0
    inter_qp_offset: float = 0.0
    rate_scale_intra: float = 1.0
    rate_scale_inter: float = 1.0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown proxy codec {self.codec!r}; valid: {list(CODECS)}")
        bad = [n for n in self.block_sizes if n not in BLOCK_SIZES]
        if not self.block_sizes or bad:
            raise ValueError(f"block sizes {bad or '[]'} not allowed; valid: {list(BLOCK_SIZES)}")
        if self.pred_block not in (8, 16, 32):
            raise ValueError(f"pred_block must be one of [8, 16, 32], got {self.pred_block}")
        if not 0 <= self.search_radius <= 32:
            raise ValueError(f"search_radius must be in [0, 32], got {self.search_radius}")
        if self.rate_scale_intra <= 0 or self.rate_scale_inter <= 0:
            raise ValueError("rate scales must be > 0")


class ProxyOutput(NamedTuple):
    """What the proxy returns.

    Attributes:
        recon: decoded frames, float NV12 `[B, T, H*3/2, W]` in [0, 255] (integer-valued).
        bits: calibrated bit estimate per frame `[B, T]`.
        units: raw rate units Σ log2(1+|level|) per frame `[B, T]`.
        inter_fraction: share of inter-predicted luma blocks per frame `[B, T]` (0 for frame 0).
    """

    recon: torch.Tensor
    bits: torch.Tensor
    units: torch.Tensor
    inter_fraction: torch.Tensor


def hm_lambda(qp: torch.Tensor) -> torch.Tensor:
    """HM's Lagrangian λ = 0.57·2^((QP-12)/3) (MSE per bit), used for the mode decision."""
    return 0.57 * torch.pow(2.0, (qp - 12.0) / 3.0)


def _code_residual(resid, qstep, rounding, zbin, n):
    """Transform-code a residual plane. Returns (decoded residual, per-block units [B,Hb,Wb])."""
    levels = _quantize(block_dct(resid, n), qstep, rounding, zbin)
    units = torch.log2(1.0 + levels.abs()).sum((-1, -2))
    return block_idct(levels * qstep), units


def _quantize(coeffs, qstep, rounding, zbin):
    return deadzone_quantize(coeffs, qstep, rounding, zbin)


def _intra(plane, qstep, rounding, zbin, n):
    """DC-predicted intra coding of a whole plane. Returns (recon, per-block units)."""
    coeffs = block_dct(plane, n)
    with torch.no_grad():  # first pass: the neighbours the DC prediction reads
        recon0 = block_idct(_quantize(coeffs, qstep, rounding, zbin) * qstep)
        dc = intra_dc_prediction(recon0, n)
    pred = upsample_blocks(dc, n)
    dec, units = _code_residual(plane - pred, qstep, rounding, zbin, n)
    return pred + dec, units


def _pool_units(units: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum per-block units over factor×factor groups: `[B, Hb, Wb]` → `[B, Hb/f, Wb/f]`."""
    if factor == 1:
        return units
    return F.avg_pool2d(units.unsqueeze(1), factor).squeeze(1) * factor * factor


class CodecProxy(torch.nn.Module):
    """Differentiable hybrid-codec proxy (see module docstring)."""

    def __init__(self, config: ProxyConfig = ProxyConfig()) -> None:
        super().__init__()
        self.config = config

    def _params(self, qp: torch.Tensor, chroma: bool, inter: bool):
        cfg = self.config
        qp = qp + (cfg.inter_qp_offset if inter else cfg.intra_qp_offset)
        if chroma and cfg.codec == "hevc":
            qp = torch.tensor([hevc_chroma_qp(q) for q in qp.tolist()], dtype=qp.dtype, device=qp.device)
        step = hevc_qstep(qp).view(-1, 1, 1, 1, 1)
        if cfg.codec == "av1":
            return step, AV1_ROUNDING, AV1_ZBIN, qp
        return step, (INTER_ROUNDING if inter else INTRA_ROUNDING), 0.0, qp

    def forward(
        self,
        frames: torch.Tensor,
        qp: torch.Tensor,
        source: Optional[torch.Tensor] = None,
        block_size: Optional[int] = None,
        motion: Optional[List[torch.Tensor]] = None,
    ) -> ProxyOutput:
        """Code a batch of short sequences.

        Args:
            frames: float NV12 `[B, T, H*3/2, W]` code values to encode (H, W even).
            qp: model QP per sequence, float `[B]` or `[B, 1]`: the HEVC QP for the hevc family; for
                av1 the x265-quality-scale QP, coded at the step of the AV1 quantizer of equal
                quality (`preedit.qp`, fixed-QP map).
            source: float NV12 `[B, T, H*3/2, W]` used for motion search (default `frames`).
            block_size: luma transform size (default: sampled from `config.block_sizes`).
            motion: vectors from `estimate_motion(source)`, to share one search between calls.

        Returns:
            `ProxyOutput`.
        """
        cfg = self.config
        if frames.dim() != 4:
            raise ValueError(f"frames must be [B, T, H*3/2, W], got {tuple(frames.shape)}")
        n = block_size or random.choice(cfg.block_sizes)
        qp = self.step_qp(qp.reshape(-1).to(frames.dtype))
        b, t, rows, width = frames.shape
        height = rows * 2 // 3
        pixels = to_codec_pixels(frames)
        if motion is None:
            motion = self.estimate_motion(source if source is not None else frames)
        planes = self._pad_planes(pixels)
        recon_planes, units_t, inter_t = [], [], []
        prev = None
        for ti in range(t):
            cur = [p[:, ti] for p in planes]
            if ti == 0:
                out, units, inter_frac = self._code_intra_frame(cur, qp, n)
            else:
                out, units, inter_frac = self._code_inter_frame(cur, prev, motion[ti - 1], qp, n)
            recon_planes.append(out)
            units_t.append(units)
            inter_t.append(inter_frac)
            prev = out
        recon = torch.stack(
            [nv12_pack(y[:, :height, :width], u[:, : height // 2, : width // 2], v[:, : height // 2, : width // 2]) for y, u, v in recon_planes],
            dim=1,
        )
        units = torch.stack(units_t, dim=1)
        scale = torch.full((t,), cfg.rate_scale_inter, dtype=units.dtype, device=units.device)
        scale[0] = cfg.rate_scale_intra
        return ProxyOutput(recon, units * scale, units, torch.stack(inter_t, dim=1))

    def step_qp(self, qp: torch.Tensor) -> torch.Tensor:
        """HEVC QP of the quantizer step coded for model QP `qp` `[B]`: as is for hevc; for av1 the
        step of the AV1 quantizer of equal quality (`preedit.qp`, fixed-QP map)."""
        if self.config.codec != "av1":
            return qp
        return torch.tensor([av1_step_qp_for_model_qp(q) for q in qp.tolist()], dtype=qp.dtype, device=qp.device)

    @torch.no_grad()
    def estimate_motion(self, source: torch.Tensor) -> List[torch.Tensor]:
        """Block vectors of frames 1..T-1 into their previous frame, searched on `source`.

        Args:
            source: float NV12 `[B, T, H*3/2, W]`.

        Returns:
            T-1 int64 tensors `[B, Hp/pred_block, Wp/pred_block, 2]` (Hp, Wp padded sizes).
        """
        y = self._pad_planes(torch.round(source.detach().clamp(0, 255)))[0]
        cfg = self.config
        return [motion_search(y[:, t], y[:, t - 1], cfg.pred_block, cfg.search_radius) for t in range(1, y.shape[1])]

    @staticmethod
    def _pad_planes(nv12: torch.Tensor):
        y, u, v = nv12_split(nv12)
        h, w = y.shape[-2:]
        ph, pw = (-h) % ALIGN, (-w) % ALIGN

        def pad(p, a, c):
            if not (a or c):
                return p
            shape = p.shape
            flat = p.reshape(-1, 1, *shape[-2:])
            return F.pad(flat, (0, c, 0, a), mode="replicate").reshape(*shape[:-2], shape[-2] + a, shape[-1] + c)

        return pad(y, ph, pw), pad(u, ph // 2, pw // 2), pad(v, ph // 2, pw // 2)

    def _code_intra_frame(self, cur, qp, n):
        outs, total = [], 0.0
        for idx, plane in enumerate(cur):
            nb = n if idx == 0 else max(n // 2, 4)
            step, rounding, zbin, _ = self._params(qp, chroma=idx > 0, inter=False)
            rec, units = _intra(plane, step.view(-1, 1, 1, 1, 1), rounding, zbin, nb)
            outs.append(clip_ste(rec))
            total = total + units.sum((-1, -2))
        return outs, total, torch.zeros_like(qp)

    def _code_inter_frame(self, cur, prev, mv, qp, n):
        cfg = self.config
        m = max(n, cfg.pred_block)
        outs, total = [], 0.0
        mask_y = None
        for idx, plane in enumerate(cur):
            chroma = idx > 0
            nb = n if not chroma else max(n // 2, 4)
            pb = cfg.pred_block if not chroma else cfg.pred_block // 2
            mb = m if not chroma else m // 2
            vec = chroma_vectors(mv) if chroma else mv
            pred = motion_compensate(prev[idx], vec, pb)
            step_i, f_i, z_i, _ = self._params(qp, chroma, inter=False)
            step_p, f_p, z_p, qp_p = self._params(qp, chroma, inter=True)
            rec_i, units_i = _intra(plane, step_i, f_i, z_i, nb)
            dec_p, units_p = _code_residual(plane - pred, step_p, f_p, z_p, nb)
            rec_p = pred + dec_p
            group = mb // nb
            units_i, units_p = _pool_units(units_i, group), _pool_units(units_p, group)
            if mask_y is None:  # the mode decision is made on luma and reused for chroma
                with torch.no_grad():
                    lam = hm_lambda(qp_p).view(-1, 1, 1)
                    sse_i = F.avg_pool2d(((rec_i - plane) ** 2).unsqueeze(1), mb).squeeze(1) * mb * mb
                    sse_p = F.avg_pool2d(((rec_p - plane) ** 2).unsqueeze(1), mb).squeeze(1) * mb * mb
                    mask_y = ((sse_p + lam * units_p) <= (sse_i + lam * units_i)).to(plane.dtype)
            pix_mask = upsample_blocks(mask_y, mb)
            rec = pix_mask * rec_p + (1.0 - pix_mask) * rec_i
            outs.append(clip_ste(rec))
            total = total + (mask_y * units_p + (1.0 - mask_y) * units_i).sum((-1, -2))
        return outs, total, mask_y.mean((-1, -2))
