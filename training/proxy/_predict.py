"""Block prediction for the codec proxy: intra DC from reconstructed neighbours, and inter block
motion compensation from the proxy-reconstructed previous frame.

Planes are float tensors `[B, H, W]` in 8-bit code values, H and W multiples of the block size.
Motion is estimated on *source* frames with no gradient (integer full search, SAD), as the
sandwich proxy (Google, `sandwiched_compression`) and DPP (Chadha & Andreopoulos, CVPR 2021, §3.3)
do; the prediction itself is built from the reconstruction, so gradients reach the previous frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from preedit.training.proxy._dct import blockify, unblockify


def _shifted(plane_padded: torch.Tensor, radius: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    return plane_padded[:, radius + dy : radius + dy + h, radius + dx : radius + dx + w]


@torch.no_grad()
def motion_search(cur: torch.Tensor, ref: torch.Tensor, block: int, radius: int) -> torch.Tensor:
    """Integer full-search block motion estimation (SAD, ties broken toward the zero vector).

    Args:
        cur: current source plane `[B, H, W]`.
        ref: reference source plane `[B, H, W]`.
        block: block size (H, W multiples of it).
        radius: search range in pixels (±radius in each direction).

    Returns:
        int64 `[B, H/block, W/block, 2]` displacement (dy, dx) of each block into `ref`.
    """
    b, h, w = cur.shape
    ref_p = F.pad(ref.unsqueeze(1), (radius,) * 4, mode="replicate").squeeze(1)
    best = torch.full((b, h // block, w // block), float("inf"), device=cur.device)
    mv = torch.zeros((b, h // block, w // block, 2), dtype=torch.int64, device=cur.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            diff = (cur - _shifted(ref_p, radius, dy, dx, h, w)).abs().unsqueeze(1)
            sad = F.avg_pool2d(diff, block).squeeze(1) + 0.01 * (abs(dy) + abs(dx))
            better = sad < best
            best = torch.where(better, sad, best)
            mv[..., 0] = torch.where(better, torch.full_like(mv[..., 0], dy), mv[..., 0])
            mv[..., 1] = torch.where(better, torch.full_like(mv[..., 1], dx), mv[..., 1])
    return mv


def motion_compensate(ref: torch.Tensor, mv: torch.Tensor, block: int) -> torch.Tensor:
    """Block motion compensation: each block copies `ref` displaced by its vector.

    One gather over the replicate-padded reference (its backward is a scatter-add, so gradients
    flow into `ref`).

    Args:
        ref: reference (reconstructed) plane `[B, H, W]`; gradients flow into it.
        mv: int64 `[B, H/block, W/block, 2]` displacements (dy, dx).
        block: block size.

    Returns:
        Prediction `[B, H, W]`.
    """
    b, h, w = ref.shape
    radius = int(mv.abs().max().item()) if mv.numel() else 0
    ref_p = F.pad(ref.unsqueeze(1), (radius,) * 4, mode="replicate").reshape(b, -1)
    wp = w + 2 * radius
    dy = mv[..., 0].repeat_interleave(block, 1).repeat_interleave(block, 2)
    dx = mv[..., 1].repeat_interleave(block, 1).repeat_interleave(block, 2)
    rows = torch.arange(h, device=ref.device).view(1, h, 1) + radius + dy
    cols = torch.arange(w, device=ref.device).view(1, 1, w) + radius + dx
    index = (rows * wp + cols).reshape(b, -1)
    return torch.gather(ref_p, 1, index).reshape(b, h, w)


def chroma_vectors(mv: torch.Tensor) -> torch.Tensor:
    """Luma vectors → 4:2:0 chroma vectors (halved, rounded to integers)."""
    return torch.round(mv.float() / 2.0).to(torch.int64)


def intra_dc_prediction(recon: torch.Tensor, n: int, default: float = 128.0) -> torch.Tensor:
    """HEVC-style DC intra prediction of every n×n block from its reconstructed neighbours.

    The row above and the column to the left are read from `recon` (a reconstruction of the same
    frame, e.g. its first coding pass), which lets all blocks be predicted in parallel.

    Args:
        recon: reconstructed plane `[B, H, W]`.
        n: block size.
        default: prediction of the top-left block, which has no neighbours (mid-grey).

    Returns:
        Per-block DC prediction `[B, H/n, W/n]`.
    """
    blocks = blockify(recon, n)
    above = F.pad(blocks[..., -1, :].mean(-1), (0, 0, 1, 0))[:, :-1]  # last row of the block above
    left = F.pad(blocks[..., :, -1].mean(-1), (1, 0))[:, :, :-1]  # last column of the block left
    has_above = torch.ones_like(above)
    has_above[:, 0] = 0.0
    has_left = torch.ones_like(left)
    has_left[:, :, 0] = 0.0
    count = has_above + has_left
    dc = (above * has_above + left * has_left) / count.clamp(min=1.0)
    return torch.where(count > 0, dc, torch.full_like(dc, default))


def upsample_blocks(values: torch.Tensor, n: int) -> torch.Tensor:
    """Per-block values `[B, Hb, Wb]` → constant blocks `[B, Hb*n, Wb*n]`."""
    return values.repeat_interleave(n, 1).repeat_interleave(n, 2)


__all__ = ["motion_search", "motion_compensate", "chroma_vectors", "intra_dc_prediction", "upsample_blocks", "unblockify"]
