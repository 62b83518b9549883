"""The integer pre-editor on PyTorch's quantized CPU engines (fbgemm, qnnpack, x86, onednn).

```
 NV12 uint8 ─space-to-depth─> quint8 ─quantized Conv2d / ConvReLU2d (engine kernels)─> quint8
   ─FiLM, LUT, depth-to-space, residual on int64 tensors─> NV12 uint8
```
The convolutions run on the engine's own int8 kernels with its own fp32 requantization
(`acc · s_in·s_w / s_out`, round to nearest even); with power-of-two scales and accumulators
below 2^24 that is exact, so the result must equal `int8_reference.reference_forward`. The
element-wise stages are integer torch ops, identical on any engine.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.nn.intrinsic.quantized import ConvReLU2d
from torch.ao.nn.quantized import Conv2d

from preedit.errors import UsageError
from preedit.export.int8.reference import ConvQ, IntModel, qp_index


def available_engines() -> List[str]:
    """PyTorch quantized engines compiled into this build (e.g. fbgemm, qnnpack, x86, onednn)."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


@contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    valid = available_engines()
    if engine not in valid:
        raise UsageError(f"unknown quantized engine {engine!r}; valid here: {', '.join(valid)}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _qconv(conv: ConvQ, rows: slice, out_scale: float, out_zp: int):
    w_int = conv.weight[rows].astype(np.float64)
    c_out, c_in, kh, kw = w_int.shape
    w_scale = np.asarray(conv.weight_scale, dtype=np.float64)[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation is deprecated upstream
        qw = torch.quantize_per_channel(torch.from_numpy(w_int * w_scale.reshape(-1, 1, 1, 1)).float(),
                                        torch.from_numpy(w_scale), torch.zeros(c_out, dtype=torch.long), 0,
                                        torch.qint8)
    bias = torch.from_numpy(conv.bias[rows].astype(np.float64) * conv.in_scale * w_scale).float()
    cls = ConvReLU2d if conv.relu else Conv2d
    module = cls(c_in, c_out, (kh, kw), padding=conv.padding)
    module.set_weight_bias(qw, bias)
    module.scale = float(out_scale)
    module.zero_point = int(out_zp)
    return module


class TorchInt8PreEditor:
    """Runs an `IntModel` with one PyTorch quantized engine; call with uint8 NV12 `[N, H*3/2, W]`."""

    def __init__(self, model: IntModel, engine: str = "fbgemm") -> None:
        self.model = model
        self.engine = engine
        with quantized_engine(engine):
            self.down = self._layer(model.down, [slice(0, model.channels)])
            self.body = [self._layer(c, [slice(0, model.channels)]) for c in model.body]
            self.up = self._layer(model.up, [slice(0, 16), slice(16, 24)])

    @staticmethod
    def _layer(conv: ConvQ, groups: List[slice]):
        mods = []
        for rows in groups:
            scales = np.asarray(conv.out_scale)[rows]
            zps = np.asarray(conv.out_zero_point)[rows]
            if np.ptp(scales) or np.ptp(zps):
                raise ValueError("a quantized torch conv needs one output scale per group")
            mods.append(_qconv(conv, rows, scales[0], zps[0]))
        return conv, mods

    @staticmethod
    def _run(layer, q: torch.Tensor) -> torch.Tensor:
        conv, mods = layer
        x = torch._make_per_tensor_quantized_tensor(q, conv.in_scale, conv.in_zero_point)
        return torch.cat([m(x).int_repr() for m in mods], dim=1)

    def __call__(self, nv12: np.ndarray, qp: Optional[np.ndarray] = None) -> np.ndarray:
        model = self.model
        if qp is None:
            qp = np.full((nv12.shape[0], 1), 32.0, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(nv12))
        n, rows, width = x.shape
        height = rows * 2 // 3
        pad_h, pad_w = (-height) % 4, (-width) % 4
        y = F.pad(x[:, :height].float(), (0, pad_w, 0, pad_h), value=128.0).to(torch.uint8)
        uv = F.pad(x[:, height:].float(), (0, pad_w, 0, pad_h // 2), value=128.0).to(torch.uint8)
        h4, w4 = y.shape[1] // 4, y.shape[2] // 4
        blocks = torch.cat([y.reshape(n, h4, 4, w4, 4).permute(0, 2, 4, 1, 3).reshape(n, 16, h4, w4),
                            uv.reshape(n, h4, 2, w4, 4).permute(0, 2, 4, 1, 3).reshape(n, 8, h4, w4)], 1)
        with quantized_engine(self.engine), torch.no_grad():
            h = self._run(self.down, blocks.contiguous())
            idx = torch.from_numpy(qp_index(qp))
            m = torch.from_numpy(model.film.mult.astype(np.int64))[idx][:, :, None, None]
            b = torch.from_numpy(model.film.offset.astype(np.int64))[idx][:, :, None, None]
            h = _round_shift(h.long() * m + b, model.film.shift).clamp(0, 255).to(torch.uint8)
            for layer in self.body:
                h = self._run(layer, h)
            u = self._run(self.up, h).long()
        lut = torch.from_numpy(model.lut.astype(np.int64))
        d = torch.cat([lut[0][u[:, :16]], lut[1][u[:, 16:]]], dim=1)
        d_y = d[:, :16].reshape(n, 4, 4, h4, w4).permute(0, 3, 1, 4, 2).reshape(n, 4 * h4, 4 * w4)
        d_uv = d[:, 16:].reshape(n, 2, 4, h4, w4).permute(0, 3, 1, 4, 2).reshape(n, 2 * h4, 4 * w4)
        delta = torch.cat([d_y[:, :height, :width], d_uv[:, : height // 2, :width]], dim=1)
        return (x.long() + delta).clamp(0, 255).to(torch.uint8).numpy()


def _round_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """round_half_even(x / 2**shift) on int64 tensors (shift >= 0)."""
    if shift == 0:
        return x
    q = x >> shift
    r = x - (q << shift)
    half = 1 << (shift - 1)
    return q + ((r > half) | ((r == half) & ((q & 1) == 1))).long()


class TorchFloatIntPreEditor:
    """The integer model as fp32 PyTorch ops on integer values (any device, e.g. CUDA).

    Every tensor holds integers below 2^24 and every rescale is a power of two, so fp32
    convolution (whatever its summation order, FMA use, or TF32 input rounding: inputs are at
    most 8-bit integers) and `torch.round` (half to even) give the reference's bits. This is the
    GPU path of the deterministic model; the tests compare it with the NumPy oracle.
    """

    def __init__(self, model: IntModel, device: str = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.asarray(a), dtype=dtype, device=self.device)

        def per_channel(a) -> torch.Tensor:
            return t(a).reshape(1, -1, 1, 1)

        self.convs = [(c, t(c.weight), per_channel(c.bias), per_channel(2.0 ** c.mult_exp.astype(np.float64)),
                       per_channel(c.out_zero_point)) for c in [model.down, *model.body, model.up]]
        self.film_m, self.film_b = t(model.film.mult), t(model.film.offset)
        self.film_scale = 2.0 ** -model.film.shift
        self.lut = t(model.lut)

    @staticmethod
    def _conv(layer, q: torch.Tensor) -> torch.Tensor:
        conv, w, b, scale, zp = layer
        acc = F.conv2d(q - conv.in_zero_point, w, padding=conv.padding) + b
        out = torch.round(acc * scale) + zp
        return torch.maximum(out, zp).clamp(max=255.0) if conv.relu else out.clamp(0.0, 255.0)

    def __call__(self, nv12: np.ndarray, qp: Optional[np.ndarray] = None) -> np.ndarray:
        model = self.model
        if qp is None:
            qp = np.full((nv12.shape[0], 1), 32.0, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(nv12)).to(self.device).float()
        n, rows, width = x.shape
        height = rows * 2 // 3
        pad_h, pad_w = (-height) % 4, (-width) % 4
        y = F.pad(x[:, :height], (0, pad_w, 0, pad_h), value=128.0)
        uv = F.pad(x[:, height:], (0, pad_w, 0, pad_h // 2), value=128.0)
        h4, w4 = y.shape[1] // 4, y.shape[2] // 4
        blocks = torch.cat([y.reshape(n, h4, 4, w4, 4).permute(0, 2, 4, 1, 3).reshape(n, 16, h4, w4),
                            uv.reshape(n, h4, 2, w4, 4).permute(0, 2, 4, 1, 3).reshape(n, 8, h4, w4)], 1)
        with torch.no_grad():
            h = self._conv(self.convs[0], blocks)
            idx = torch.from_numpy(qp_index(qp)).to(self.device)
            m = self.film_m[idx][:, :, None, None]
            b = self.film_b[idx][:, :, None, None]
            h = torch.round((h * m + b) * self.film_scale).clamp(0.0, 255.0)
            for layer in self.convs[1:-1]:
                h = self._conv(layer, h)
            u = self._conv(self.convs[-1], h).long()
            d = torch.cat([self.lut[0][u[:, :16]], self.lut[1][u[:, 16:]]], dim=1)
            d_y = d[:, :16].reshape(n, 4, 4, h4, w4).permute(0, 3, 1, 4, 2).reshape(n, 4 * h4, 4 * w4)
            d_uv = d[:, 16:].reshape(n, 2, 4, h4, w4).permute(0, 3, 1, 4, 2).reshape(n, 2 * h4, 4 * w4)
            delta = torch.cat([d_y[:, :height, :width], d_uv[:, : height // 2, :width]], dim=1)
            return (x + delta).clamp(0.0, 255.0).to(torch.uint8).cpu().numpy()
