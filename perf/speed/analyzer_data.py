"""Real NV12 frames for the speed benchmarks, and perf_analyzer `--input-data` JSON built from them.

```
 clip (any FFmpeg-readable file) ──PyAV decode──> first n frames
   ──swscale to W x H, nv12──> uint8 [n, H*3/2, W] (limited range, as the client sends them)
   ──base64──> {"data": [{"NV12_IN": {"content": {"b64": ...}, "shape": [H*3/2, W]}}, ...]}
```
perf_analyzer sends the JSON entries round-robin, one batch-1 request each (`input_data.md` of
perf_analyzer). Frames are real decoded pictures scaled to the requested size, so the model sees
the content it will see in production, not noise or zeros.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np

from preedit.errors import InputError, UsageError
from preedit.paths import clips_dir
from preedit.spec import DEFAULT_QP, FRAMES_IN, QP_IN

# Named resolutions (width, height).
RESOLUTIONS: Dict[str, Tuple[int, int]] = {
    "360p": (640, 360),
    "540p": (960, 540),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "2160p": (3840, 2160),
}

# A real 1920x1080 H.264 clip from the shared set (Big Buck Bunny, 45 frames).
DEFAULT_CLIP_NAME = "edge-rotate-buck-bunny.mp4"


def default_clip() -> Path:
    """The default benchmark clip: a real 1080p clip from `../shared/data/clips`."""
    return clips_dir() / DEFAULT_CLIP_NAME


def parse_resolution(text: str) -> Tuple[int, int]:
    """`720p`/`1080p`/`2160p`/... or `WxH` (even sizes) -> (width, height).

    Raises:
        UsageError: unknown name, malformed, or odd/non-positive size.
    """
    key = text.strip().lower()
    if key in RESOLUTIONS:
        return RESOLUTIONS[key]
    m = re.fullmatch(r"(\d+)x(\d+)", key)
    if not m:
        raise UsageError(f"resolution {text!r} not understood; use one of {', '.join(RESOLUTIONS)} or WxH")
    width, height = int(m.group(1)), int(m.group(2))
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise UsageError(f"resolution {text!r} must have even, positive width and height")
    return width, height


def resolution_label(width: int, height: int) -> str:
    """`1080p` for the named sizes, else `WxH`."""
    for name, size in RESOLUTIONS.items():
        if size == (width, height):
            return name
    return f"{width}x{height}"


def nv12_shape(width: int, height: int) -> Tuple[int, int]:
    """Shape `(H*3/2, W)` of one NV12 frame."""
    return height * 3 // 2, width


def load_nv12_frames(clip: Path, width: int, height: int, n_frames: int = 8) -> np.ndarray:
    """Decode the first `n_frames` of `clip` and scale them to `width` x `height` NV12.

    Args:
        clip: any FFmpeg-readable video file.
        width, height: even output size in pixels.
        n_frames: frames to return; a clip with fewer frames is cycled.

    Returns:
        uint8 `[n_frames, H*3/2, W]`, limited-range NV12 (swscale keeps the source range tag;
        all default clips are limited range).

    Raises:
        InputError: missing or undecodable clip.
    """
    import av  # lazy: av

    clip = Path(clip)
    if not clip.is_file():
        raise InputError(f"benchmark clip not found: {clip}")
    if n_frames < 1:
        raise UsageError("n_frames must be >= 1")
    frames = []
    try:
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                scaled = frame.reformat(width=width, height=height, format="nv12")
                frames.append(scaled.to_ndarray().reshape(nv12_shape(width, height)).copy())
                if len(frames) == n_frames:
                    break
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode {clip}: {exc}") from None
    if not frames:
        raise InputError(f"no video frames in {clip}")
    while len(frames) < n_frames:
        frames.append(frames[len(frames) % max(1, len(frames))])
    return np.stack(frames[:n_frames])


def build_input_data(frames: Iterable[np.ndarray], qp: float = DEFAULT_QP) -> dict:
    """perf_analyzer real-data JSON: one batch-1 request per frame (pure).

    Args:
        frames: uint8 NV12 frames `[H*3/2, W]` each.
        qp: value of the optional `QP` input (fp32 `[1]`). perf_analyzer 2.51 refuses optional
            inputs left out of the data when shared memory is on, so it is always sent.

    Returns:
        `{"data": [{"NV12_IN": {"content": {"b64": ...}, "shape": [H*3/2, W]},
        "QP": {"content": [qp], "shape": [1]}}, ...]}`.
    """
    entries = []
    for frame in frames:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 2:
            raise UsageError(f"each frame must be NV12 [H*3/2, W], got shape {frame.shape}")
        entries.append({
            FRAMES_IN.name: {"content": {"b64": base64.b64encode(frame.tobytes()).decode("ascii")},
                             "shape": list(frame.shape)},
            QP_IN.name: {"content": [float(qp)], "shape": [1]},
        })
    if not entries:
        raise UsageError("no frames for perf_analyzer input data")
    return {"data": entries}


def write_input_data(frames: np.ndarray, path: Path, qp: float = DEFAULT_QP) -> Path:
    """Write `build_input_data(frames, qp)` to `path` (JSON) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_input_data(frames, qp)))
    return path
