"""The integer pre-editor (`IntModel`) and its NumPy integer reference: the oracle of the int8 path.

```
 NV12 uint8 [N, H*3/2, W] ─pad 128 to x4─> space-to-depth: Y 4x4 blocks (16 ch) + UV 2x4 (8 ch)
   down:  24→C 1x1 conv (int8 w, input zp 128)  → int32 acc → requant ×2^e, ReLU → uint8
   film:  per-channel (q·m[qp] + B[qp]) ·2^-F, tables indexed by round(QP) in [0, 63] → uint8
   body:  (3x3 conv pad=zp → int32 → requant ×2^e, ReLU → uint8) × depth
   up:    C→24 1x1 conv → int32 → requant ×2^e → uint8 u → LUT[u] = round(max_delta·tanh(u·s))
   out:   depth-to-space (Y 4x4, UV 2x4), crop, clip(x + delta, 0, 255) → NV12 uint8
```

Why every backend computes the same bits: weights are int8 (7-bit range, |w| <= 63, so the
u8·s8 pair sums of AVX2 `vpmaddubsw` kernels never saturate int16), activations are uint8,
accumulation is exact integer arithmetic, and every requantization multiplier is a power of two
(`2^e`) or a fixed-point integer multiplier with a power-of-two shift (FiLM). `IntModel.check()`
proves that every accumulator and every intermediate stays below 2^24 in magnitude, so an fp32
engine (ONNX Runtime's `Cast → Mul → Round`, fbgemm/QNNPACK's fp32 requantization) represents
each one exactly and its round-half-to-even gives the same integer as this module's shifts.
The transposed convolutions of the float network have stride == kernel, so they are 1x1
convolutions followed by depth-to-space; the down convolutions likewise are space-to-depth
followed by a 1x1 convolution.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

QP_TABLE_SIZE = 64
EXACT_LIMIT = 1 << 24  # fp32 represents every integer of smaller magnitude exactly
WEIGHT_QMAX = 63  # 7-bit weights: no int16 saturation in u8s8 kernels without VNNI


@dataclass
class ConvQ:
    """One integer convolution layer.

    Attributes:
        weight: int8 `[C_out, C_in, kh, kw]`, symmetric (zero point 0).
        bias: int32 `[C_out]`, in accumulator units.
        in_zero_point: zero point of the uint8 input (also the padding value).
        mult_exp: int `[C_out]`; the accumulator is multiplied by `2**mult_exp`.
        out_zero_point: int `[C_out]` zero point of the uint8 output.
        relu: clamp the output below at its zero point.
        padding: spatial zero padding (real zero = `in_zero_point`).
        in_scale / weight_scale / out_scale: the real scales (provenance; the integer path
            uses only `mult_exp` and the zero points).
    """

    weight: np.ndarray
    bias: np.ndarray
    in_zero_point: int
    mult_exp: np.ndarray
    out_zero_point: np.ndarray
    relu: bool
    padding: int = 0
    in_scale: float = 1.0
    weight_scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    out_scale: np.ndarray = field(default_factory=lambda: np.ones(1))


@dataclass
class FilmQ:
    """QP-conditioned per-channel affine requantization: `round((q·m + B)·2^-shift)`.

    Attributes:
        mult: int `[QP_TABLE_SIZE, C]` fixed-point multipliers.
        offset: int `[QP_TABLE_SIZE, C]` offsets (zero points folded in).
        shift: the power-of-two shift F.
        out_zero_point: zero point of the uint8 output.
        out_scale: real scale of the output (provenance).
    """

    mult: np.ndarray
    offset: np.ndarray
    shift: int
    out_zero_point: int
    out_scale: float = 1.0


@dataclass
class IntModel:
    """The integer network: every parameter an integer, every rescale a power of two.

    Attributes:
        down: 24→C 1x1 conv on space-to-depth NV12 (input zero point 128, scale 1 code value).
        film: QP-indexed per-channel affine.
        body: 3x3 convs.
        up: C→24 1x1 conv: rows 0..15 Y phases (i*4+j of 4x4), rows 16..23 UV phases (2x4).
        lut: int16 `[2, 256]`: edit in code values for Y (row 0) and UV (row 1) per uint8 code.
        scheme: the quantization scheme (JSON-able dict), recorded for provenance.
    """

    down: ConvQ
    film: FilmQ
    body: List[ConvQ]
    up: ConvQ
    lut: np.ndarray
    scheme: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.down.weight.shape[0])

    def check(self) -> Dict[str, int]:
        """Worst-case magnitude of every integer intermediate; raises if one reaches 2^24."""
        bounds = {}
        convs = [("down", self.down)] + [(f"body{i}", c) for i, c in enumerate(self.body)] + [("up", self.up)]
        for name, conv in convs:
            max_dev = max(conv.in_zero_point, 255 - conv.in_zero_point)
            acc = np.abs(conv.weight.astype(np.int64)).sum(axis=(1, 2, 3)) * max_dev + np.abs(conv.bias)
            bounds[name] = int(acc.max())
            if np.any(np.abs(conv.weight) > 127):
                raise ValueError(f"{name}: weights outside int8")
        film = np.abs(self.film.mult.astype(np.int64)) * 255 + np.abs(self.film.offset)
        bounds["film"] = int(film.max())
        worst = max(bounds.values())
        if worst >= EXACT_LIMIT:
            raise ValueError(f"integer intermediates reach {worst} >= 2^24: not exact in fp32 engines ({bounds})")
        return bounds

    def zero_points_even(self) -> bool:
        """True when every activation zero point is even: then engines that round `v + zp` (oneDNN)
        and engines that round `v` then add `zp` agree on half-way ties, so the model is exact by
        construction on all of them (odd zero points pass or fail by the luck of the frames)."""
        zps = [self.film.out_zero_point] + [int(z) for _, c in self._named_convs()
                                            for z in [c.in_zero_point, *np.asarray(c.out_zero_point).tolist()]]
        return all(z % 2 == 0 for z in zps)

    # -- serialisation ------------------------------------------------------------------------

    def to_npz_bytes(self) -> bytes:
        arrays = {"lut": self.lut, "film_mult": self.film.mult, "film_offset": self.film.offset}
        meta = {"film": {"shift": self.film.shift, "out_zero_point": self.film.out_zero_point,
                         "out_scale": self.film.out_scale},
                "scheme": self.scheme, "depth": len(self.body), "convs": {}}
        for name, conv in self._named_convs():
            for key in ("weight", "bias", "mult_exp", "out_zero_point", "weight_scale", "out_scale"):
                arrays[f"{name}_{key}"] = np.asarray(getattr(conv, key))
            meta["convs"][name] = {"in_zero_point": conv.in_zero_point, "relu": conv.relu,
                                   "padding": conv.padding, "in_scale": conv.in_scale}
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "IntModel":
        z = np.load(io.BytesIO(data))
        meta = json.loads(bytes(z["meta"]).decode())

        def conv(name: str) -> ConvQ:
            m = meta["convs"][name]
            return ConvQ(weight=z[f"{name}_weight"], bias=z[f"{name}_bias"], in_zero_point=m["in_zero_point"],
                         mult_exp=z[f"{name}_mult_exp"], out_zero_point=z[f"{name}_out_zero_point"],
                         relu=m["relu"], padding=m["padding"], in_scale=m["in_scale"],
                         weight_scale=z[f"{name}_weight_scale"], out_scale=z[f"{name}_out_scale"])

        film = FilmQ(mult=z["film_mult"], offset=z["film_offset"], **meta["film"])
        return cls(down=conv("down"), film=film, body=[conv(f"body{i}") for i in range(meta["depth"])],
                   up=conv("up"), lut=z["lut"], scheme=meta["scheme"])

    def _named_convs(self) -> List[Tuple[str, ConvQ]]:
        return [("down", self.down)] + [(f"body{i}", c) for i, c in enumerate(self.body)] + [("up", self.up)]

    def content_hash(self) -> str:
        """sha256 over the integer parameters only (what determines the output bits)."""
        h = hashlib.sha256()
        for name, conv in self._named_convs():
            for arr in (conv.weight, conv.bias, conv.mult_exp, conv.out_zero_point):
                h.update(name.encode())
                h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
            h.update(f"{conv.in_zero_point},{conv.relu},{conv.padding}".encode())
        for arr in (self.film.mult, self.film.offset, self.lut):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        h.update(f"{self.film.shift},{self.film.out_zero_point}".encode())
        return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Pure integer maths


def round_shift(x: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """`round_half_even(x · 2**exp)` for int64 `x` and integer `exp` (broadcast), exactly."""
    x = np.asarray(x, dtype=np.int64)
    exp = np.broadcast_to(np.asarray(exp, dtype=np.int64), x.shape)
    up = np.left_shift(x, np.maximum(exp, 0))
    s = np.maximum(-exp, 0)
    q = np.right_shift(x, s)  # floor
    r = x - np.left_shift(q, s)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 1)
    down = q + ((r > half) | ((r == half) & ((q & 1) == 1)))
    return np.where(exp >= 0, up, down)


def pad_planes(nv12: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Split uint8 NV12 `[N, H*3/2, W]` into Y `[N, Hp, Wp]` and UV `[N, Hp/2, Wp]` padded with 128."""
    n, rows, width = nv12.shape
    height = rows * 2 // 3
    pad_h, pad_w = (-height) % 4, (-width) % 4
    y = np.pad(nv12[:, :height], ((0, 0), (0, pad_h), (0, pad_w)), constant_values=128)
    uv = np.pad(nv12[:, height:], ((0, 0), (0, pad_h // 2), (0, pad_w)), constant_values=128)
    return y, uv, height, width


def space_to_depth(y: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Y `[N, Hp, Wp]` + UV `[N, Hp/2, Wp]` → `[N, 24, Hp/4, Wp/4]` (channel i*4+j per block)."""
    n, hp, wp = y.shape
    h4, w4 = hp // 4, wp // 4
    ys = y.reshape(n, h4, 4, w4, 4).transpose(0, 2, 4, 1, 3).reshape(n, 16, h4, w4)
    uvs = uv.reshape(n, h4, 2, w4, 4).transpose(0, 2, 4, 1, 3).reshape(n, 8, h4, w4)
    return np.concatenate([ys, uvs], axis=1)


def depth_to_space(d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`[N, 24, H4, W4]` → Y `[N, 4·H4, 4·W4]` and UV `[N, 2·H4, 4·W4]` (inverse of `space_to_depth`)."""
    n, _, h4, w4 = d.shape
    y = d[:, :16].reshape(n, 4, 4, h4, w4).transpose(0, 3, 1, 4, 2).reshape(n, 4 * h4, 4 * w4)
    uv = d[:, 16:].reshape(n, 2, 4, h4, w4).transpose(0, 3, 1, 4, 2).reshape(n, 2 * h4, 4 * w4)
    return y, uv


def conv_accumulate(x: np.ndarray, conv: ConvQ) -> np.ndarray:
    """int64 accumulator `[N, C_out, H, W]` of `conv` on uint8 `x` `[N, C_in, H, W]` (stride 1)."""
    xd = x.astype(np.int64) - conv.in_zero_point
    p = conv.padding
    if p:
        xd = np.pad(xd, ((0, 0), (0, 0), (p, p), (p, p)))  # zero in real terms = zp in uint8 terms
    w = conv.weight.astype(np.int64)
    kh, kw = w.shape[2:]
    h, wd = xd.shape[2] - kh + 1, xd.shape[3] - kw + 1
    acc = np.zeros((x.shape[0], w.shape[0], h, wd), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += np.einsum("nchw,oc->nohw", xd[:, :, i:i + h, j:j + wd], w[:, :, i, j], optimize=False)
    return acc + conv.bias.astype(np.int64)[None, :, None, None]


def requantize(acc: np.ndarray, conv: ConvQ) -> np.ndarray:
    """int accumulator → uint8 codes: `clip(round(acc·2^e) + zp, zp if relu else 0, 255)`."""
    exp = conv.mult_exp.astype(np.int64)[None, :, None, None]
    zp = conv.out_zero_point.astype(np.int64)[None, :, None, None]
    q = round_shift(acc, exp) + zp
    low = zp if conv.relu else 0
    return np.clip(q, low, 255).astype(np.uint8)


def qp_index(qp: np.ndarray) -> np.ndarray:
    """fp32 QP `[N, 1]` → table row `[N]`: round half-to-even, clamped to [0, 63]."""
    return np.clip(np.round(np.asarray(qp, dtype=np.float32).reshape(-1)), 0, QP_TABLE_SIZE - 1).astype(np.int64)


def film_apply(q: np.ndarray, film: FilmQ, qp: np.ndarray) -> np.ndarray:
    """uint8 `[N, C, H, W]` → uint8, per-channel fixed-point affine chosen by QP."""
    idx = qp_index(qp)
    m = film.mult.astype(np.int64)[idx][:, :, None, None]
    b = film.offset.astype(np.int64)[idx][:, :, None, None]
    out = round_shift(q.astype(np.int64) * m + b, -film.shift)
    return np.clip(out, 0, 255).astype(np.uint8)


def reference_forward(model: IntModel, nv12: np.ndarray, qp: Optional[np.ndarray] = None,
                      default_qp: float = 32.0) -> np.ndarray:
    """The oracle: uint8 NV12 `[N, H*3/2, W]` (+ fp32 QP `[N, 1]`) → uint8 NV12, integers only."""
    if nv12.ndim != 3 or nv12.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H*3/2, W], got {nv12.dtype} {nv12.shape}")
    if qp is None:
        qp = np.full((nv12.shape[0], 1), default_qp, dtype=np.float32)
    y, uv, height, width = pad_planes(nv12)
    h = requantize(conv_accumulate(space_to_depth(y, uv), model.down), model.down)
    h = film_apply(h, model.film, qp)
    for conv in model.body:
        h = requantize(conv_accumulate(h, conv), conv)
    u = requantize(conv_accumulate(h, model.up), model.up).astype(np.int64)
    d = np.concatenate([model.lut[0][u[:, :16]], model.lut[1][u[:, 16:]]], axis=1)
    d_y, d_uv = depth_to_space(d)
    delta = np.concatenate([d_y[:, :height, :width], d_uv[:, : height // 2, :width]], axis=1)
    return np.clip(nv12.astype(np.int64) + delta, 0, 255).astype(np.uint8)
