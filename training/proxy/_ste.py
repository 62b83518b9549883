"""Exact-forward, surrogate-backward discretisations (Reich et al., "Differentiable JPEG: The
Devil is in the Details", WACV 2024, §3: STE variant of rounding, flooring and clipping).

All functions take and return float tensors of any shape; values are in whatever unit the caller
uses (8-bit code values for pixels, quantizer levels for coefficients). The forward pass is the
exact discrete operation, so the proxy sees the same numbers the real codec would; the backward
pass is the identity (round, floor) or a leaky identity (clip: slope 1 inside, 1e-3 outside),
so gradients are never zero.
"""

from __future__ import annotations

import torch

CLIP_OUTSIDE_SLOPE = 1e-3


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half-to-even in the forward pass; identity gradient."""
    return x + (torch.round(x) - x).detach()


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """Floor in the forward pass; identity gradient."""
    return x + (torch.floor(x) - x).detach()


def clip_ste(x: torch.Tensor, low: float = 0.0, high: float = 255.0) -> torch.Tensor:
    """Clamp to [low, high] in the forward pass; gradient 1 inside, 1e-3 outside (Reich et al.)."""
    clamped = torch.clamp(x, low, high)
    inside = (x >= low) & (x <= high)
    slope = torch.where(inside, torch.ones_like(x), torch.full_like(x, CLIP_OUTSIDE_SLOPE))
    return clamped.detach() + slope * (x - x.detach())


def to_codec_pixels(x: torch.Tensor) -> torch.Tensor:
    """Float code values → the integer pixels an encoder receives (clip to [0, 255], round), STE."""
    return round_ste(clip_ste(x, 0.0, 255.0))
