"""Real-encoder round trips used by `proxy-check` and the trainer's validation (PyAV, in memory).

```
 NV12 uint8 [T, H*3/2, W] ─> yuv420p ─> libx265 / libsvtav1 at fixed QP ─> packets (bits)
                                                     └─> decode ─> NV12 uint8 [T, H*3/2, W]
```
Encoder options are built by a pure function (`encoder_options`); `encode_decode` does the I/O.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from preedit.codecs import ROUNDTRIP_ENCODERS, family_of, pyav_options
from preedit.color import nv12_pack, nv12_split
from preedit.errors import EncodeError

ENCODERS = ROUNDTRIP_ENCODERS


@dataclass(frozen=True)
class RoundTrip:
    """Result of one encode/decode: bits per frame in decode order and the decoded frames."""

    bits: List[int]
    decoded: np.ndarray  # uint8 [T, H*3/2, W] NV12

    @property
    def total_bits(self) -> int:
        return int(sum(self.bits))


def encoder_options(encoder: str, qp: int, preset: str = "medium", mode: str = "qp") -> Dict[str, str]:
    """PyAV codec options for a fixed-QP (or CRF) encode (`preedit.codecs.pyav_options`).

    Args:
        encoder: one of `ENCODERS`.
        qp: HEVC QP (libx265, 0..51) or AV1 quantizer (libsvtav1, 0..63).
        preset: x265 preset name, or SVT-AV1 preset number as a string.
        mode: "qp" (constant QP) or "crf".
    """
    if encoder not in ENCODERS:
        raise EncodeError(f"unknown encoder {encoder!r}; valid: {list(ENCODERS)}")
    if mode not in ("qp", "crf"):
        raise EncodeError(f"unknown rate mode {mode!r}; valid: ['qp', 'crf']")
    rate = {mode: int(qp)}
    return pyav_options(family_of(encoder), preset=preset, **rate)


def nv12_to_i420_frame(nv12: np.ndarray) -> np.ndarray:
    """NV12 `[H*3/2, W]` → the `[H*3/2, W]` planar yuv420p layout PyAV's `from_ndarray` takes."""
    y, u, v = nv12_split(nv12)
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(nv12.shape)


def encode_decode(frames: np.ndarray, encoder: str, qp: int, fps: int = 25, preset: str = "medium", mode: str = "qp") -> RoundTrip:
    """Encode NV12 frames `uint8 [T, H*3/2, W]` and decode them back.

    Returns bits per packet (one packet per frame) and the decoded frames in display order.
    """
    import av  # lazy: av

    os.environ.setdefault("SVT_LOG", "1")
    t, rows, width = frames.shape
    height = rows * 2 // 3
    opts = encoder_options(encoder, qp, preset, mode)
    bits: List[int] = []
    with tempfile.TemporaryDirectory(prefix="preedit-enc-") as tmp:
        path = Path(tmp) / "out.mkv"
        try:
            with av.open(str(path), "w", format="matroska") as out:
                stream = out.add_stream(encoder, rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = opts
                for i, nv12 in enumerate(frames):
                    vf = av.VideoFrame.from_ndarray(nv12_to_i420_frame(nv12), format="yuv420p")
                    vf.pts = i
                    for pkt in stream.encode(vf):
                        bits.append(pkt.size * 8)
                        out.mux(pkt)
                for pkt in stream.encode():
                    bits.append(pkt.size * 8)
                    out.mux(pkt)
            decoded = []
            with av.open(str(path)) as inp:
                for fr in inp.decode(video=0):
                    flat = fr.to_ndarray(format="yuv420p").ravel()
                    y = flat[: height * width].reshape(height, width)
                    u = flat[height * width : height * width * 5 // 4].reshape(height // 2, width // 2)
                    v = flat[height * width * 5 // 4 :].reshape(height // 2, width // 2)
                    decoded.append(nv12_pack(y, u, v))
        except av.error.FFmpegError as exc:
            raise EncodeError(f"{encoder} at {mode} {qp} failed: {exc}") from None
    if len(decoded) != t:
        raise EncodeError(f"{encoder} returned {len(decoded)} frames for {t}")
    return RoundTrip(bits, np.stack(decoded))


def psnr_y(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR of luma between NV12 stacks `uint8 [T, H*3/2, W]` (dB, mean MSE over frames)."""
    y0, _, _ = nv12_split(ref)
    y1, _, _ = nv12_split(dist)
    mse = float(np.mean((y0.astype(np.float64) - y1.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-10))


def mse_yuv(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean squared error over all NV12 samples (Y weighted 4:1:1 by sample count, as coded)."""
    return float(np.mean((ref.astype(np.float64) - dist.astype(np.float64)) ** 2))


def sequences(frames: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(list(frames))
