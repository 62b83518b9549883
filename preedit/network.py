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

# "quarter": the shipped single-scale net (all work at 1/4, int8-exportable);
# "unet": three scales (full, 1/2, 1/4) with QP FiLM at each, `PreEditorUNet`.
ARCHS = ("quarter", "unet")


@dataclass(frozen=True)
class NetConfig:
    """Size of the network. `max_delta` bounds the edit, in 8-bit code values."""

    channels: int = 16
    depth: int = 2
    max_delta: float = 16.0
    arch: str = "quarter"
    full_channels: int = 4
    half_channels: int = 8
    alpha_qps: Tuple[float, ...] = ()
    alpha_values: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.channels < 1 or self.depth < 0:
            raise ValueError(f"channels must be >= 1 and depth >= 0, got {self}")
        if not 0.0 < self.max_delta <= 255.0:
            raise ValueError(f"max_delta must be in (0, 255], got {self.max_delta}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} not valid; valid: {list(ARCHS)}")
        if self.full_channels < 1 or self.half_channels < 1:
            raise ValueError(f"full_channels and half_channels must be >= 1, got {self}")
        object.__setattr__(self, "alpha_qps", tuple(float(q) for q in self.alpha_qps))
        object.__setattr__(self, "alpha_values", tuple(float(a) for a in self.alpha_values))
        if len(self.alpha_qps) != len(self.alpha_values) or list(self.alpha_qps) != sorted(self.alpha_qps):
            raise ValueError(f"alpha_qps must be increasing and match alpha_values, got {self.alpha_qps}, {self.alpha_values}")
        if self.alpha_qps and self.arch != "unet":
            raise ValueError("alpha_qps (per-QP edit strength) is only supported by arch 'unet'")
        if any(not 0.0 <= a <= 4.0 for a in self.alpha_values):
            raise ValueError(f"alpha_values must be in [0, 4], got {self.alpha_values}")

    @classmethod
    def from_dict(cls, data: dict) -> "NetConfig":
        known = {k: data[k] for k in ("channels", "depth", "max_delta", "arch", "full_channels", "half_channels", "alpha_qps", "alpha_values") if k in data}
        return cls(**known)


def _qp_norm(qp: torch.Tensor) -> torch.Tensor:
    return (qp - DEFAULT_QP) / 16.0


def edit_strength(config: NetConfig, qp: torch.Tensor) -> Optional[torch.Tensor]:
    """α(QP) `[N, 1, 1, 1]`: the per-QP scale of the edit calibrated on the dev set (piecewise
    linear in QP, held at the ends; built from Clip/Mul/Add so traced graphs keep it), or None."""
    qs, vs = config.alpha_qps, config.alpha_values
    if not qs:
        return None
    a = torch.full_like(qp, vs[0])
    for (q0, v0), (q1, v1) in zip(zip(qs, vs), zip(qs[1:], vs[1:])):
        a = a + (v1 - v0) * torch.clamp((qp - q0) / (q1 - q0), 0.0, 1.0)
    return a.reshape(-1, 1, 1, 1)


class PreEditorNet(nn.Module):
    """Residual pre-editor on float NV12 `[N, H*3/2, W]` in 8-bit code values.

    The form training and the codec proxy use: returns unrounded, unclamped NV12 of the same
    size. Down- and up-sampling are strided convolutions straight on the NV12 planes (no pixel
    shuffles, no chroma de-interleave), which keeps the memory passes of the deploy graph few.
    """

    def __new__(cls, config: NetConfig = NetConfig()):
        # One constructor for every architecture: `PreEditorNet(NetConfig(arch="unet"))` builds the
        # three-scale subclass, so checkpoints, exports and tests need no second entry point.
        if cls is PreEditorNet and config.arch == "unet":
            cls = PreEditorUNet
        return super().__new__(cls)

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


class _Film(nn.Module):
    """QP → per-channel (scale, shift) for every stage: a shared 2-layer MLP on the normalised QP
    (a function of one scalar, so an integer export can tabulate it by QP like the shipped FiLM).
    The output layer starts at zero: scale 1, shift 0."""

    def __init__(self, widths: Tuple[int, ...], hidden: int = 16) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.embed = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, 2 * sum(widths))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, qp: torch.Tensor):
        z = self.out(F.relu(self.embed(_qp_norm(qp))))
        parts, at = [], 0
        for w in self.widths:
            scale, shift = z[:, at : at + w], z[:, at + w : at + 2 * w]
            parts.append(((1.0 + scale)[..., None, None], shift[..., None, None]))
            at += 2 * w
        return parts


class PreEditorUNet(PreEditorNet):
    """Three-scale residual pre-editor (`NetConfig(arch="unet")`), same interface as `PreEditorNet`.

    ```
     Y (x-128)/64 ─ conv3x3 1→c0 ─ReLU─ e0 (full res) ───────────────────────────┐ (skip)
                   conv2x2/2 c0→c1 + conv1x2/(1,2) on interleaved UV → c1 at 1/2 │
                   ─ReLU─FiLM─ conv3x3 ─ReLU─ e1 ───────────────────┐ (skip)     │
                   conv2x2/2 c1→c2 ─ReLU─FiLM─ (conv3x3─ReLU)×depth │            │
                   convT2x2/2 c2→c1 + e1 ─ReLU─FiLM─ conv3x3 ─ReLU─ d1            │
       UV delta ← convT1x2/(1,2) c1→1 (zero-init; interleaved U,V at 1/2)         │
                   convT2x2/2 c1→c0 + e0 ─ReLU─ conv3x3 c0→1 (zero-init) → Y delta ┘
     out = in + max_delta·tanh(delta)
    ```
    Every output pixel has its own full-resolution weights (no 4-pixel grid), the receptive field
    is ≈ 10 + 8·depth + 14 px at full resolution, and the zero-initialised output layers make an
    untrained model an exact identity. One frame in, one frame out (no temporal state).
    """

    def __init__(self, config: NetConfig = NetConfig(arch="unet")) -> None:
        nn.Module.__init__(self)
        self.config = config
        c0, c1, c2 = config.full_channels, config.half_channels, config.channels
        self.enc0 = nn.Conv2d(1, c0, 3, padding=1)
        self.down1_y = nn.Conv2d(c0, c1, 2, stride=2)
        self.down1_uv = nn.Conv2d(1, c1, (1, 2), stride=(1, 2), bias=False)
        self.enc1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.down2 = nn.Conv2d(c1, c2, 2, stride=2)
        self.body = nn.ModuleList(nn.Conv2d(c2, c2, 3, padding=1) for _ in range(config.depth))
        self.up2 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.out_uv = nn.ConvTranspose2d(c1, 1, (1, 2), stride=(1, 2))
        self.up1 = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.out_y = nn.Conv2d(c0, 1, 3, padding=1)
        self.film = _Film((c1, c2, c1))
        for layer in (self.out_uv, self.out_y):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, nv12: torch.Tensor, qp: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Edit float NV12 `[N, H*3/2, W]` (code values); `qp` fp32 `[N, 1]` (default 32)."""
        n, rows, width = nv12.shape
        height = rows * 2 // 3
        if qp is None:
            qp = torch.full((n, 1), DEFAULT_QP, dtype=nv12.dtype, device=nv12.device)
        x = (nv12.unsqueeze(1) - 128.0) / 64.0
        y, uv = x[:, :, :height], x[:, :, height:]
        pad_h = (-height) % PAD_MULTIPLE
        pad_w = (-width) % PAD_MULTIPLE
        y_p = F.pad(y, (0, pad_w, 0, pad_h))  # zero = mid-grey after normalisation
        uv_p = F.pad(uv, (0, pad_w, 0, pad_h // 2))
        (m1, b1), (m2, b2), (m3, b3) = self.film(qp.to(nv12.dtype))
        e0 = F.relu(self.enc0(y_p))
        e1 = F.relu(self.down1_y(e0) + self.down1_uv(uv_p)) * m1 + b1
        e1 = F.relu(self.enc1(e1))
        h = F.relu(self.down2(e1)) * m2 + b2
        for conv in self.body:
            h = F.relu(conv(h))
        d1 = F.relu(self.up2(h) + e1) * m3 + b3
        d1 = F.relu(self.dec1(d1))
        d_uv = self.out_uv(d1)[:, :, : height // 2, :width]
        d0 = F.relu(self.up1(d1) + e0)
        d_y = self.out_y(d0)[:, :, :height, :width]
        delta = self.config.max_delta * torch.tanh(torch.cat([d_y, d_uv], dim=2))
        alpha = edit_strength(self.config, qp.to(nv12.dtype))
        if alpha is not None:
            delta = delta * alpha
        return nv12 + delta.squeeze(1)


def macs_per_frame(net: nn.Module, height: int = 1080, width: int = 1920) -> int:
    """Multiply-accumulates of one forward on an NV12 frame of `height`×`width` (convolutions and
    transposed convolutions; counted with forward hooks on a real forward)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
            total[0] += out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            x = inp[0]
            total[0] += x.numel() * mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            net(torch.full((1, height * 3 // 2, width), 128.0), torch.full((1, 1), DEFAULT_QP))
    finally:
        for h in handles:
            h.remove()
    return total[0]


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


def read_checkpoint_file(path: Union[str, Path]) -> dict:
    """The raw dict of a checkpoint file (deploy or trainer); `ModelError` when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"cannot read checkpoint {path}: not a checkpoint dict")
    return data


def load_checkpoint(path: Union[str, Path]) -> Tuple[PreEditorNet, dict]:
    """Load a checkpoint written by `save_checkpoint` (or a trainer checkpoint with `model`)."""
    data = read_checkpoint_file(path)
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
