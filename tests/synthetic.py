"""Synthetic test media made in code (PyAV), so client tests run without ../shared/data/clips.

```
 media(name) ──cached per session──> tmp/<name>
   flower.mp4     320x240 H.264 25 fps, 150 frames, AAC stereo (stand-in for any short real clip)
   fullrange.mkv  yuvj420p (full range) H.264, 24 frames, Matroska (no frame count: duration check)
   vfr.mp4        63 frames at irregular timestamps (1/1000 time base)
   sar2.mp4       SAR 2:1, 20 frames
   joy_64x48_50fps.y4m   raw y4m at 50 fps, 20 frames
   sparks_96x64_yuv420p10le.yuv  headerless 10-bit raw, 5 frames (geometry in the name)
```
Content is a moving gradient plus seeded noise (so encoders spend real bits); everything is
deterministic. Use the `media` fixture (import it into a test module) where a test is about
behaviour, not about one particular real clip.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence

import av
import numpy as np
import pytest


def _picture(i: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    base = (x * 3 + y * 2 + i * 7) % 256
    rgb = np.stack([base, (base + 85) % 256, (255 - base)], axis=-1)
    rgb = np.clip(rgb + rng.integers(-24, 25, rgb.shape), 0, 255)
    rgb[:4], rgb[-4:] = 0, 255  # black and white bars: the whole value range is used
    return rgb.astype(np.uint8)


def make_clip(path: Path, *, width: int = 320, height: int = 240, frames: int = 150, fps: int = 25,
              pix_fmt: str = "yuv420p", full_range: bool = False, audio: bool = False,
              sar: Optional[Fraction] = None, pts_ms: Optional[Sequence[int]] = None,
              codec: str = "libx264", gop: Optional[int] = None, x264_params: Optional[str] = None) -> Path:
    """Write a small clip; `pts_ms` gives irregular timestamps (VFR) in a 1/1000 time base; `gop`: a
    key frame every `gop` frames (libx264; default: the encoder's); `x264_params` (e.g. `bframes=2`)
    is passed to libx264 after its ultrafast preset."""
    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if path.suffix == ".mp4" else {}  # truncated copies still open
    enc_opts = {"preset": "ultrafast"} if codec == "libx264" else {}
    if x264_params:
        enc_opts["x264-params"] = x264_params
    with av.open(str(path), "w", options=options) as out:
        if gop and codec == "libx264":
            enc_opts.update({"g": str(gop), "keyint_min": str(gop)})
        stream = out.add_stream(codec, rate=fps, options=enc_opts)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if full_range:
            stream.codec_context.color_range = 2
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        a_stream = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_picture(i, width, height, rng), format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_color_range=2 if full_range else 1)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if a_stream is not None:
            n = 48000 * frames // fps
            t = np.arange(n, dtype=np.float32) / 48000
            samples = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.2
            for k, start in enumerate(range(0, n - 1024 + 1, 1024)):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                                layout="stereo")
                af.sample_rate, af.pts = 48000, start
                for packet in a_stream.encode(af):
                    out.mux(packet)
            for packet in a_stream.encode(None):
                out.mux(packet)
    return path


def _raw10(path: Path, width: int, height: int, frames: int) -> Path:
    rng = np.random.default_rng(1)
    with open(path, "wb") as f:
        for i in range(frames):
            rgb = av.VideoFrame.from_ndarray(_picture(i, width, height, rng), format="rgb24")
            f.write(bytes(rgb.reformat(format="yuv420p10le").to_ndarray().astype("<u2").tobytes()))
    return path


_RECIPES = {
    "flower.mp4": lambda p: make_clip(p, audio=True),
    "fullrange.mkv": lambda p: make_clip(p, width=160, height=96, frames=24, pix_fmt="yuvj420p", full_range=True),
    "truncatable.mkv": lambda p: make_clip(p, width=160, height=96, frames=60),
    "vfr.mp4": lambda p: make_clip(p, width=96, height=64, frames=63,
                                   pts_ms=[int(round(k * 33.4 + (7 if k % 5 == 2 else 0))) for k in range(63)]),
    "sar2.mp4": lambda p: make_clip(p, width=96, height=64, frames=20, sar=Fraction(2, 1)),
    "joy_64x48_50fps.y4m": lambda p: make_clip(p, width=64, height=48, frames=20, fps=50, codec="rawvideo"),
    "sparks_96x64_yuv420p10le.yuv": lambda p: _raw10(p, 96, 64, 5),
}


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Callable[[str], Path]:
    """`media(name)` → path of a synthetic clip from `_RECIPES` (made once per session)."""
    root = tmp_path_factory.mktemp("synthetic_media")

    def _get(name: str) -> Path:
        path = root / name
        if not path.exists():
            _RECIPES[name](path)
        return path

    return _get
