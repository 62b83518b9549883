"""Orthonormal block DCT-II on image planes.

Planes are float tensors `[B, H, W]` with H and W multiples of the block size `n`; block
coefficients are `[B, H/n, W/n, n, n]` (row frequency, column frequency). The transform is
orthonormal, so a quantizer step in the coefficient domain equals the codec step (HEVC integer
transforms and AV1's, with their scalings, are built so that this holds).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

BLOCK_SIZES = (4, 8, 16, 32)


@lru_cache(maxsize=16)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    mat = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    mat[0] /= math.sqrt(2.0)
    return mat.float()


def dct_matrix(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix `[n, n]` (rows are basis functions)."""
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    return _dct_matrix_cpu(n).to(device=device, dtype=dtype)


def blockify(plane: torch.Tensor, n: int) -> torch.Tensor:
    """`[B, H, W]` → `[B, H/n, W/n, n, n]` (H, W multiples of n)."""
    b, h, w = plane.shape
    if h % n or w % n:
        raise ValueError(f"plane {h}x{w} is not a multiple of the block size {n}")
    return plane.reshape(b, h // n, n, w // n, n).permute(0, 1, 3, 2, 4)


def unblockify(blocks: torch.Tensor) -> torch.Tensor:
    """`[B, Hb, Wb, n, n]` → `[B, Hb*n, Wb*n]`."""
    b, hb, wb, n, _ = blocks.shape
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, hb * n, wb * n)


def block_dct(plane: torch.Tensor, n: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of each n×n block: `[B, H, W]` → `[B, H/n, W/n, n, n]`."""
    d = dct_matrix(n, plane.device, plane.dtype)
    return d @ blockify(plane, n) @ d.T


def block_idct(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of `block_dct`: `[B, Hb, Wb, n, n]` → `[B, Hb*n, Wb*n]`."""
    n = coeffs.shape[-1]
    d = dct_matrix(n, coeffs.device, coeffs.dtype)
    return unblockify(d.T @ coeffs @ d)
