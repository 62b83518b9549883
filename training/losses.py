"""Training losses, always between the ORIGINAL source and the proxy-decoded output.

```
 source NV12 ─┐
              ├─> fidelity: 0.2·L1 + 0.8·(1 − MS-SSIM) on Y (Chadha & Andreopoulos, DPP, CVPR 2021),
 decoded NV12 ┤             L1 on U, V (lighter weight)
              ├─> perceptual: 100 − VMAF-NEG (vmaf-torch, Aistov & Koroteev 2023; clip_score=False),
              │               optional hinge on VMAF − VMAF-NEG; LPIPS only with local weights
 proxy bits ──┴─> rate
```

Each term is divided by the same term for the *unedited* source through the same proxy at the
same QP and block size (computed without gradient). The total is therefore 1·Σweights for an
identity pre-editor, and the weights are exchange rates between relative changes: `rate_weight`
per relative bit change plays the role of λ(QP), adapted per batch to the slope of the plain
encoder's operating point (λ(QP) = rate_weight · D_plain(QP) / R_plain(QP)).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F

from preedit.color import nv12_split

LOG = logging.getLogger(__name__)
EPS = 1e-6


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (see module docstring).

    Attributes:
        rate_weight: weight of R/R_plain.
        fidelity_weight: weight of the Y fidelity ratio (0.2·L1 + 0.8·(1−MS-SSIM)).
        chroma_weight: weight of the U, V L1 ratio.
        vmaf_weight: weight of (100 − VMAF-NEG) ratio; 0 disables vmaf-torch.
        vmaf_gap_weight: hinge weight on (VMAF − VMAF-NEG − vmaf_gap_margin)/100, a guard
            against enhancement gains; 0 skips the plain-VMAF computation.
        vmaf_gap_margin: allowed VMAF − VMAF-NEG gap before the hinge bites.
        lpips_weight: LPIPS weight, used only when `lpips_weights` is a local file.
        lpips_weights: path of local LPIPS weights (never downloaded).
    """

    rate_weight: float = 1.0
    fidelity_weight: float = 0.5
    chroma_weight: float = 0.2
    vmaf_weight: float = 1.0
    vmaf_gap_weight: float = 0.0
    vmaf_gap_margin: float = 2.0
    lpips_weight: float = 0.0
    lpips_weights: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("rate_weight", "fidelity_weight", "chroma_weight", "vmaf_weight", "vmaf_gap_weight", "lpips_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class LossTerms(NamedTuple):
    """Total loss (scalar tensor with gradient) and detached per-term values for logging."""

    total: torch.Tensor
    logs: Dict[str, float]


def fidelity_y(src_y: torch.Tensor, dec_y: torch.Tensor) -> torch.Tensor:
    """0.2·L1/255 + 0.8·(1 − MS-SSIM) on luma `[N, H, W]` code values (H, W ≥ 161)."""
    from pytorch_msssim import ms_ssim  # lazy: pytorch_msssim

    l1 = (src_y - dec_y).abs().mean() / 255.0
    ms = ms_ssim(src_y.unsqueeze(1), dec_y.unsqueeze(1), data_range=255.0, size_average=True)
    return 0.2 * l1 + 0.8 * (1.0 - ms)


class Losses(torch.nn.Module):
    """Computes `LossTerms` from source, decoded-edited and decoded-plain NV12 and bit counts."""

    def __init__(self, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.config = config
        self.vmaf_neg = self.vmaf_plain = None
        if config.vmaf_weight > 0:
            from vmaf_torch import VMAF  # lazy: vmaf_torch

            self.vmaf_neg = VMAF(temporal_pooling=False, enable_motion=False, clip_score=False, NEG=True)
            if config.vmaf_gap_weight > 0:
                self.vmaf_plain = VMAF(temporal_pooling=False, enable_motion=False, clip_score=False, NEG=False)
        self.lpips = None
        if config.lpips_weight > 0:
            path = Path(config.lpips_weights) if config.lpips_weights else None
            if path is None or not path.is_file():
                LOG.warning("LPIPS loss skipped: no local weights (lpips_weights=%s); nothing is downloaded", config.lpips_weights)
            else:  # pragma: no cover - no LPIPS weights on the build machines
                self.lpips = torch.jit.load(str(path))

    def _vmaf(self, model, ref_y, dist_y):
        return model(ref_y.unsqueeze(1), dist_y.unsqueeze(1)).mean()

    def forward(self, source, decoded, decoded_plain, bits, bits_plain, rate_value: Optional[float] = None) -> LossTerms:
        """Loss of one batch.

        Args:
            source: original frames, float NV12 `[B, T, H*3/2, W]` code values.
            decoded: proxy output of the pre-edited frames, same layout.
            decoded_plain: proxy output of the unedited frames (no gradient needed), same layout.
            bits: proxy bits of the pre-edited frames `[B, T]`.
            bits_plain: proxy bits of the unedited frames `[B, T]`.
            rate_value: when given (the real encoder's edited/plain bit ratio), the rate term takes
                this value while keeping the proxy's gradient direction: R · sg(value / R).
        """
        cfg = self.config
        flat = lambda x: x.reshape(-1, *x.shape[-2:])  # noqa: E731
        sy, su, sv = nv12_split(flat(source))
        dy, du, dv = nv12_split(flat(decoded))
        with torch.no_grad():
            py, pu, pv = nv12_split(flat(decoded_plain))
            fid0 = fidelity_y(sy, py)
            uv0 = ((su - pu).abs().mean() + (sv - pv).abs().mean()) / 2.0
            r0 = bits_plain.sum()
        rate = bits.sum() / (r0 + EPS)
        rate_proxy = float(rate.detach())
        if rate_value is not None:
            rate = rate * (float(rate_value) / max(rate_proxy, EPS))
        fid = fidelity_y(sy, dy) / (fid0 + EPS)
        uv = ((su - du).abs().mean() + (sv - dv).abs().mean()) / 2.0 / (uv0 + EPS)
        total = cfg.rate_weight * rate + cfg.fidelity_weight * fid + cfg.chroma_weight * uv
        logs = {"rate": float(rate.detach()), "rate_proxy": rate_proxy, "fid": float(fid.detach()), "uv": float(uv.detach())}
        if self.vmaf_neg is not None:
            neg = self._vmaf(self.vmaf_neg, sy, dy)
            with torch.no_grad():
                neg0 = self._vmaf(self.vmaf_neg, sy, py)
            vm = (100.0 - neg) / torch.clamp(100.0 - neg0, min=1.0)
            total = total + cfg.vmaf_weight * vm
            logs.update(vmaf_neg=float(neg.detach()), vmaf_neg_plain=float(neg0))
            if self.vmaf_plain is not None:
                gap = self._vmaf(self.vmaf_plain, sy, dy) - neg
                total = total + cfg.vmaf_gap_weight * F.relu(gap - cfg.vmaf_gap_margin) / 100.0
                logs["vmaf_gap"] = float(gap.detach())
        if self.lpips is not None:  # pragma: no cover
            total = total + cfg.lpips_weight * self.lpips(flat(source), flat(decoded)).mean()
        logs["loss"] = float(total.detach())
        return LossTerms(total, logs)
