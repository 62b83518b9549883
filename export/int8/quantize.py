"""Post-training static quantization of `PreEditorNet` into the integer model (`IntModel`).

```
 float net + real calibration frames ──observers at 4+depth points──> activation ranges
   ──power-of-two scales, 7-bit symmetric weights, int32 biases, QP FiLM tables, tanh LUT──> IntModel
```

Observed points (float tensors of the network's forward): `down` (after ReLU), `film`,
`body<i>` (after ReLU), `up_y` and `up_uv` (before tanh). The input needs no observer: uint8 code
values with zero point 128 are exact. Weights use min-max (the weight tensors are fixed; the
observer choice matters for activations). Scales are rounded up to powers of two so that every
requantization is exact in fp32 engines (see `int8_reference`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.quantization import observer as obs

from preedit.errors import UsageError
from preedit.export.int8.reference import QP_TABLE_SIZE, WEIGHT_QMAX, ConvQ, FilmQ, IntModel
from preedit.network import NetConfig, PreEditorNet, _qp_norm
from preedit.spec import DEFAULT_QP, PAD_MULTIPLE

OBSERVERS = ("minmax", "moving_average", "histogram", "percentile")
GRANULARITIES = ("per_tensor", "per_channel")
SYMMETRIES = ("affine", "affine_even", "symmetric")
CALIB_QPS = (22.0, 27.0, 32.0, 37.0, 42.0)


@dataclass(frozen=True)
class QuantScheme:
    """How the float network is quantized.

    Attributes:
        observer: activation range observer, one of `OBSERVERS`.
        weight_granularity: `per_tensor` or `per_channel` weight scales.
        activation_symmetry: `affine` (zero point from the range), `affine_even` (the same,
            zero point rounded to an even value) or `symmetric` (zero point 128). Engines that
            add the zero point before rounding (oneDNN: `round(v + zp)`) agree with those that
            round first (`round(v) + zp`) on half-way ties only when the zero point is even.
        calib_frames: number of calibration frames.
        percentile: two-sided percentile kept by the `percentile` observer.
        averaging_constant: update rate of the `moving_average` observer.
    """

    observer: str = "minmax"
    weight_granularity: str = "per_channel"
    activation_symmetry: str = "affine"
    calib_frames: int = 16
    percentile: float = 99.99
    averaging_constant: float = 0.01

    def __post_init__(self) -> None:
        if self.observer not in OBSERVERS:
            raise UsageError(f"unknown observer {self.observer!r}; valid: {', '.join(OBSERVERS)}")
        if self.weight_granularity not in GRANULARITIES:
            raise UsageError(f"unknown weight granularity {self.weight_granularity!r}; valid: {', '.join(GRANULARITIES)}")
        if self.activation_symmetry not in SYMMETRIES:
            raise UsageError(f"unknown activation symmetry {self.activation_symmetry!r}; valid: {', '.join(SYMMETRIES)}")
        if self.calib_frames < 1:
            raise UsageError(f"calib_frames must be >= 1, got {self.calib_frames}")
        if not 50.0 < self.percentile <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def name(self) -> str:
        return f"{self.observer}/{self.weight_granularity}/{self.activation_symmetry}/n{self.calib_frames}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, name: str) -> "QuantScheme":
        """From `observer/granularity/symmetry/n<frames>` (the `name` form)."""
        parts = name.split("/")
        if len(parts) != 4 or not parts[3].startswith("n") or not parts[3][1:].isdigit():
            raise UsageError(f"scheme must look like minmax/per_channel/affine_even/n16, got {name!r}")
        return cls(observer=parts[0], weight_granularity=parts[1], activation_symmetry=parts[2],
                   calib_frames=int(parts[3][1:]))

    @classmethod
    def from_dict(cls, data: dict) -> "QuantScheme":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# ---------------------------------------------------------------------------------------------
# Float trace: the network's forward, returning the tensors the observers see


def float_trace(net: PreEditorNet, nv12: torch.Tensor, qp: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Intermediates of `net` on float NV12 `[N, H*3/2, W]` (code values) and fp32 QP `[N, 1]`.

    Mirrors `PreEditorNet.forward` op for op; `out` equals `net(nv12, qp)`.
    """
    n, rows, width = nv12.shape
    height = rows * 2 // 3
    x = nv12.unsqueeze(1)
    y, uv = x[:, :, :height], x[:, :, height:]
    pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
    y_p = F.pad(y, (0, pad_w, 0, pad_h), value=128.0)
    uv_p = F.pad(uv, (0, pad_w, 0, pad_h // 2), value=128.0)
    out = {}
    h = F.relu(net.down_y(y_p) + net.down_uv(uv_p))
    out["down"] = h
    scale, shift = net.film(_qp_norm(qp)).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
    h = h * (1.0 + scale) + shift
    out["film"] = h
    for i, conv in enumerate(net.body):
        h = F.relu(conv(h))
        out[f"body{i}"] = h
    out["up_y"] = net.up_y(h)  # padded size: the whole tensor feeds the integer path
    out["up_uv"] = net.up_uv(h)
    d_y = out["up_y"][:, :, :height, :width]
    d_uv = out["up_uv"][:, :, : height // 2, :width]
    delta = net.config.max_delta * torch.tanh(torch.cat([d_y, d_uv], dim=2))
    out["out"] = nv12 + delta.squeeze(1)
    return out


def observed_points(net: PreEditorNet) -> List[str]:
    return ["down", "film"] + [f"body{i}" for i in range(len(net.body))] + ["up_y", "up_uv"]


# ---------------------------------------------------------------------------------------------
# Observers → (scale, zero point) with power-of-two scales


class _PercentileObserver:
    """Two-sided percentile of a seeded subsample of the observed values."""

    def __init__(self, percentile: float, max_samples: int = 200_000) -> None:
        self.percentile = percentile
        self.max_samples = max_samples
        self.samples: List[np.ndarray] = []
        self.rng = np.random.default_rng(0)

    def __call__(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).numpy()
        if flat.size > self.max_samples:
            flat = flat[self.rng.choice(flat.size, self.max_samples, replace=False)]
        self.samples.append(flat.astype(np.float64))

    def range(self) -> Tuple[float, float]:
        values = np.concatenate(self.samples)
        lo, hi = np.percentile(values, [100.0 - self.percentile, self.percentile])
        return float(lo), float(hi)


def _make_observer(scheme: QuantScheme):
    qscheme = torch.per_tensor_symmetric if scheme.activation_symmetry == "symmetric" else torch.per_tensor_affine
    if scheme.observer == "minmax":
        return obs.MinMaxObserver(dtype=torch.quint8, qscheme=qscheme)
    if scheme.observer == "moving_average":
        return obs.MovingAverageMinMaxObserver(averaging_constant=scheme.averaging_constant,
                                               dtype=torch.quint8, qscheme=qscheme)
    if scheme.observer == "histogram":
        return obs.HistogramObserver(dtype=torch.quint8, qscheme=qscheme)
    return _PercentileObserver(scheme.percentile)


def _observer_scale_zp(observer, scheme: QuantScheme) -> Tuple[float, int]:
    """(scale, zero point) of a quint8 tensor, as the observer chooses it."""
    if isinstance(observer, _PercentileObserver):
        lo, hi = observer.range()
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if scheme.activation_symmetry == "symmetric":
            return max(abs(lo), abs(hi)) / 127.5, 128
        scale = (hi - lo) / 255.0
        return scale, int(np.clip(round(-lo / scale), 0, 255)) if scale > 0 else 0
    scale, zp = observer.calculate_qparams()
    return float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])


def pow2_ceil(value: float) -> float:
    """Smallest power of two >= `value` (value > 0)."""
    return 2.0 ** math.ceil(math.log2(max(value, 2.0 ** -40)))


def activation_qparams(scale: float, zero_point: int, symmetry: str) -> Tuple[float, int, int]:
    """Observer (scale, zp) → (pow2 scale, zp, exponent); covers at least the observer's range."""
    s2 = pow2_ceil(scale)
    if symmetry == "symmetric":
        zp = 128
    elif symmetry == "affine_even":
        zp = int(np.clip(2 * round(zero_point * scale / s2 / 2), 0, 254))
    else:
        zp = int(np.clip(round(zero_point * scale / s2), 0, 255))
    return s2, zp, int(round(math.log2(s2)))


def calibrate(net: PreEditorNet, frames: Sequence[np.ndarray], scheme: QuantScheme,
              qps: Sequence[float] = CALIB_QPS) -> Dict[str, Tuple[float, int]]:
    """Observe activations on uint8 NV12 frames `[H*3/2, W]`; returns {point: (pow2 scale, zp)}.

    Uses the first `scheme.calib_frames` frames, one forward each, with QPs cycling over `qps`.
    """
    frames = list(frames)[: scheme.calib_frames]
    if len(frames) < scheme.calib_frames:
        raise UsageError(f"scheme needs {scheme.calib_frames} calibration frames, got {len(frames)}")
    observers = {p: _make_observer(scheme) for p in observed_points(net)}
    net = net.eval()
    with torch.no_grad():
        for i, frame in enumerate(frames):
            x = torch.from_numpy(np.ascontiguousarray(frame)).float().unsqueeze(0)
            qp = torch.full((1, 1), float(qps[i % len(qps)]))
            trace = float_trace(net, x, qp)
            for point, observer in observers.items():
                observer(trace[point])
    result = {}
    for point, observer in observers.items():
        scale, zp = _observer_scale_zp(observer, scheme)
        s2, zp2, _ = activation_qparams(scale, zp, scheme.activation_symmetry)
        result[point] = (s2, zp2)
    return result


# ---------------------------------------------------------------------------------------------
# Build the integer model


def _weight_scales(w: np.ndarray, groups: Sequence[slice], per_channel: bool) -> np.ndarray:
    """pow2 scales `[C_out]` so that |w / s| <= WEIGHT_QMAX; per-tensor shares one per group."""
    amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    if not per_channel:
        for g in groups:
            amax[g] = amax[g].max()
    return np.array([pow2_ceil(a / WEIGHT_QMAX) if a > 0 else 1.0 for a in amax])


def _quant_weight(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.round(w / scales.reshape(-1, *([1] * (w.ndim - 1))))
    return np.clip(q, -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)


def _exp(values: np.ndarray) -> np.ndarray:
    return np.round(np.log2(values)).astype(np.int64)


def build_int_model(net: PreEditorNet, qparams: Dict[str, Tuple[float, int]], scheme: QuantScheme) -> IntModel:
    """Quantize `net`'s parameters given calibrated activation (pow2 scale, zp) per point."""
    per_channel = scheme.weight_granularity == "per_channel"
    sd = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    c = net.config.channels

    # down: space-to-depth channels (Y i*4+j, then UV i*4+j), input = code value - 128.
    w_down = np.concatenate([sd["down_y.weight"].reshape(c, 16), sd["down_uv.weight"].reshape(c, 8)], axis=1)
    w_down = w_down.reshape(c, 24, 1, 1)
    b_down = sd["down_y.bias"] + 128.0 * w_down.sum(axis=(1, 2, 3))
    s_w = _weight_scales(w_down, [slice(0, c)], per_channel)
    s_out, zp_out = qparams["down"]
    down = ConvQ(weight=_quant_weight(w_down, s_w), bias=np.round(b_down / s_w).astype(np.int32),
                 in_zero_point=128, mult_exp=_exp(s_w / s_out), out_zero_point=np.full(c, zp_out),
                 relu=True, in_scale=1.0, weight_scale=s_w, out_scale=np.full(c, s_out))
    s_in, zp_in = s_out, zp_out

    # FiLM tables over integer QPs.
    s_f, zp_f = qparams["film"]
    qps = torch.arange(QP_TABLE_SIZE, dtype=torch.float32).reshape(-1, 1)
    with torch.no_grad():
        scale, shift = net.film(_qp_norm(qps)).double().chunk(2, dim=1)
    a = (1.0 + scale.numpy()) * s_in / s_f  # real multiplier per (qp, channel)
    b = shift.numpy() / s_f + zp_f
    shift_bits = 16
    while shift_bits > 0:
        m = np.round(a * 2 ** shift_bits)
        off = np.round(b * 2 ** shift_bits) - zp_in * m
        if (np.abs(m) * 255 + np.abs(off)).max() < (1 << 24) and np.abs(m).max() < (1 << 23):
            break
        shift_bits -= 1
    film = FilmQ(mult=m.astype(np.int32), offset=off.astype(np.int32), shift=shift_bits,
                 out_zero_point=zp_f, out_scale=s_f)
    s_in, zp_in = s_f, zp_f

    body = []
    for i, layer in enumerate(net.body):
        w, bias = sd[f"body.{i}.weight"], sd[f"body.{i}.bias"]
        s_w = _weight_scales(w, [slice(0, c)], per_channel)
        s_out, zp_out = qparams[f"body{i}"]
        body.append(ConvQ(weight=_quant_weight(w, s_w), bias=np.round(bias / (s_in * s_w)).astype(np.int32),
                          in_zero_point=zp_in, mult_exp=_exp(s_in * s_w / s_out), out_zero_point=np.full(c, zp_out),
                          relu=True, padding=1, in_scale=s_in, weight_scale=s_w, out_scale=np.full(c, s_out)))
        s_in, zp_in = s_out, zp_out

    # up: ConvTranspose weight [C, 1, kh, kw] → 1x1 conv rows (i*kw + j).
    w_up = np.concatenate([sd["up_y.weight"].reshape(c, 16).T, sd["up_uv.weight"].reshape(c, 8).T], axis=0)
    w_up = w_up.reshape(24, c, 1, 1)
    b_up = np.concatenate([np.full(16, sd["up_y.bias"][0]), np.full(8, sd["up_uv.bias"][0])])
    s_w = _weight_scales(w_up, [slice(0, 16), slice(16, 24)], per_channel)
    (s_uy, zp_uy), (s_uuv, zp_uuv) = qparams["up_y"], qparams["up_uv"]
    s_out = np.array([s_uy] * 16 + [s_uuv] * 8)
    up = ConvQ(weight=_quant_weight(w_up, s_w), bias=np.round(b_up / (s_in * s_w)).astype(np.int32),
               in_zero_point=zp_in, mult_exp=_exp(s_in * s_w / s_out),
               out_zero_point=np.array([zp_uy] * 16 + [zp_uuv] * 8), relu=False,
               in_scale=s_in, weight_scale=s_w, out_scale=s_out)
    codes = np.arange(256, dtype=np.float64)
    limit = net.config.max_delta
    lut = np.stack([np.round(limit * np.tanh((codes - zp_uy) * s_uy)),
                    np.round(limit * np.tanh((codes - zp_uuv) * s_uuv))]).astype(np.int16)
    model = IntModel(down=down, film=film, body=body, up=up, lut=lut, scheme=scheme.to_dict())
    model.check()
    return model


def quantize(net: PreEditorNet, calib_frames: Sequence[np.ndarray], scheme: QuantScheme = QuantScheme()) -> IntModel:
    """Calibrate on uint8 NV12 frames `[H*3/2, W]` and build the integer model."""
    return build_int_model(net, calibrate(net, calib_frames, scheme), scheme)


def all_schemes(calib_sizes: Iterable[int] = (4, 16)) -> List[QuantScheme]:
    """The exhaustive search grid: observer × weight granularity × activation symmetry × calib size."""
    return [QuantScheme(observer=o, weight_granularity=g, activation_symmetry=s, calib_frames=n)
            for o in OBSERVERS for g in GRANULARITIES for s in SYMMETRIES for n in calib_sizes]


def perturbed_net(seed: int = 0, scale: float = 0.05, config=None) -> PreEditorNet:
    """A deterministic non-identity network: zero-initialised layers get small seeded weights.

    Stands in for a trained model (same shapes); `scale` sets the size of the edit.
    """
    gen = torch.Generator().manual_seed(seed)
    net = PreEditorNet(config or NetConfig())
    # Re-initialise all layers from the seeded generator so the result never depends on global RNG.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("down_", "body")):
                bound = 1.0 / math.sqrt(max(p[0].numel(), 1))
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for conv in (net.down_y, net.down_uv):
            conv.weight /= 64.0
        net.down_y.bias -= 128.0 * (net.down_y.weight.sum((1, 2, 3)) + net.down_uv.weight.sum((1, 2, 3)))
        net.up_y.weight *= 4.0
        net.up_uv.weight *= 4.0
    return net.eval()


#: The scheme `preedit export --deterministic` uses: the pick of `preedit int8 search`
#: (best quality among the schemes bit-exact on every backend; see perf/results/determinism.md).
DEFAULT_SCHEME = QuantScheme(observer="moving_average", weight_granularity="per_channel",
                             activation_symmetry="affine_even", calib_frames=2)
