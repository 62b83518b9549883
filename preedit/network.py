"""The pre-editor network: NV12 in, NV12 out, a bounded residual edit computed mostly at 1/4 size.

```
 NV12 uint8 [N, H*3/2, W] ─rows─> Y [N,1,H,W], interleaved UV [N,1,H/2,W]
   down: conv 4x4/4 on Y + conv 2x4/(2,4) on UV → C ch at H/4 x W/4 → ReLU → QP FiLM
   body: (conv3x3 → ReLU) × depth at H/4
   up:   transposed conv back to Y and to interleaved UV (zero-init)
   fine: conv3x3 on Y, dilated conv3x3 on same-component chroma (zero-init)
   out = round(clamp(in + max_delta·tanh(up + fine)))  ─> NV12 uint8
```

The last layers start at zero, so an untrained model is an exact identity. Any even H and W:
the planes are padded (mid-grey) to a multiple of 4 and cropped back. One frame in, one frame
out: no temporal state, one frame of latency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from preedit.errors import ModelError
from preedit.spec import DEFAULT_QP, PAD_MULTIPLE


@dataclass(frozen=True)
class NetConfig:
    """Size of the network. `max_delta` bounds the edit, in 8-bit code values."""

    channels: int = 16
    depth: int = 2
    max_delta: float = 16.0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.depth < 0:
            raise ValueError(f"channels must be >= 1 and depth >= 0, got {self}")
        if not 0.0 < self.max_delta <= 255.0:
            raise ValueError(f"max_delta must be in (0, 255], got {self.max_delta}")

    @classmethod
    def from_dict(cls, data: dict) -> "NetConfig":
        known = {k: data[k] for k in ("channels", "depth", "max_delta") if k in data}
        return cls(**known)


def _qp_norm(qp: torch.Tensor) -> torch.Tensor:
    return (qp - DEFAULT_QP) / 16.0


class PreEditorNet(nn.Module):
    """Residual pre-editor on float NV12 `[N, H*3/2, W]` in 8-bit code values.

    The form training and the codec proxy use: returns unrounded, unclamped NV12 of the same
    size. Down- and up-sampling are strided convolutions straight on the NV12 planes (no pixel
    shuffles, no chroma de-interleave), which keeps the memory passes of the deploy graph few.
    """

    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        # Y [H, W] and interleaved UV [H/2, W] both map onto the H/4 x W/4 grid.
        self.down_y = nn.Conv2d(1, c, 4, stride=4)
        self.down_uv = nn.Conv2d(1, c, (2, 4), stride=(2, 4), bias=False)
        self.film = nn.Linear(1, 2 * c)
        self.body = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(config.depth))
        self.up_y = nn.ConvTranspose2d(c, 1, 4, stride=4)
        self.up_uv = nn.ConvTranspose2d(c, 1, (2, 4), stride=(2, 4))
        for layer in (self.film, self.up_y, self.up_uv):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        # The down convolutions read raw code values: fold the normalisation (x - 128) / 64 into
        # their initial weights instead of spending two full-frame passes on it at run time.
        with torch.no_grad():
            for conv in (self.down_y, self.down_uv):
                conv.weight /= 64.0
            self.down_y.bias -= 128.0 * (self.down_y.weight.sum((1, 2, 3)) + self.down_uv.weight.sum((1, 2, 3)))

    def forward(self, nv12: torch.Tensor, qp: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Edit float NV12 `[N, H*3/2, W]` (code values); `qp` fp32 `[N, 1]` (default 32)."""
        n, rows, width = nv12.shape
        height = rows * 2 // 3
        if qp is None:
            qp = torch.full((n, 1), DEFAULT_QP, dtype=nv12.dtype, device=nv12.device)
        x = nv12.unsqueeze(1)
        y, uv = x[:, :, :height], x[:, :, height:]
        pad_h = (-height) % PAD_MULTIPLE
        pad_w = (-width) % PAD_MULTIPLE
        # Always pad (a zero pad is a no-op) so traced graphs keep the size arithmetic dynamic.
        # Padding is mid-grey; the outputs over padding are cropped.
        y_p = F.pad(y, (0, pad_w, 0, pad_h), value=128.0)
        uv_p = F.pad(uv, (0, pad_w, 0, pad_h // 2), value=128.0)
        h = F.relu(self.down_y(y_p) + self.down_uv(uv_p))
        scale, shift = self.film(_qp_norm(qp.to(nv12.dtype))).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = h * (1.0 + scale) + shift
        for conv in self.body:
            h = F.relu(conv(h))
        limit = self.config.max_delta
        d_y = self.up_y(h)[:, :, :height, :width]
        d_uv = self.up_uv(h)[:, :, : height // 2, :width]
        delta = limit * torch.tanh(torch.cat([d_y, d_uv], dim=2))
        return nv12 + delta.squeeze(1)


def to_uint8(nv12: torch.Tensor) -> torch.Tensor:
    """Float code values → uint8, rounded half-to-even (as ONNX Round) and clamped to [0, 255]."""
    return torch.clamp(torch.round(nv12), 0.0, 255.0).to(torch.uint8)


class NV12PreEditor(nn.Module):
    """Deploy form: uint8 NV12 `[N, H*3/2, W]` (+ optional fp32 QP `[N, 1]`) → uint8 NV12."""

    def __init__(self, net: PreEditorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, nv12: torch.Tensor, qp: Optional[torch.Tensor] = None) -> torch.Tensor:
        return to_uint8(self.net(nv12.float(), qp))


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(net: PreEditorNet, path: Union[str, Path], **extra) -> None:
    """Write weights + config (+ any extra JSON-able metadata) to `path`."""
    torch.save({"config": asdict(net.config), "state_dict": net.state_dict(), "extra": extra}, path)


def load_checkpoint(path: Union[str, Path]) -> Tuple[PreEditorNet, dict]:
    """Load a checkpoint written by `save_checkpoint` (or a trainer checkpoint with `model`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from None
    if "model" in data and "state_dict" not in data:
        data = data["model"]
    net = PreEditorNet(NetConfig.from_dict(data.get("config", {})))
    net.load_state_dict(data["state_dict"])
    net.eval()
    return net, data.get("extra", {})


def identity_model(config: NetConfig = NetConfig(), seed: int = 0) -> PreEditorNet:
    """An untrained network: exact identity on uint8 frames (zero-initialised last layers).

    The non-zero first layers are drawn from a fixed seed (without touching the global RNG), so
    two identity exports are byte-identical.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PreEditorNet(config).eval()
