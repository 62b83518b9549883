"""Real NV12 frames for calibration and determinism checks, read from the shared clip set.

```
 clip (mp4/mkv/webm via PyAV | raw .yuv with WxH in the name | .y4m) ──> uint8 NV12 [H*3/2, W] frames
```
Full-range (yuvj420p) sources are converted to limited range, as the client does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from preedit.color import i420_to_nv12, nv12_full_to_limited
from preedit.errors import InputError

_SIZE = re.compile(r"(\d+)x(\d+)")


def _even(nv12: np.ndarray) -> np.ndarray:
    rows, width = nv12.shape
    height = rows * 2 // 3
    if height % 2 == 0 and width % 2 == 0:
        return nv12
    raise InputError(f"frame size {width}x{height} is not even")


def _raw_frames(path: Path, count: int, start: int) -> List[np.ndarray]:
    match = _SIZE.search(path.name)
    if not match:
        raise InputError(f"raw clip {path.name} has no WxH in its name")
    width, height = int(match.group(1)), int(match.group(2))
    if "10le" in path.name or "p10" in path.name:
        raise InputError(f"{path.name}: 10-bit raw input is not used for determinism checks (8-bit only)")
    frame_bytes = width * height * 3 // 2
    data = np.fromfile(path, dtype=np.uint8)
    frames = []
    for i in range(start, min(start + count, data.size // frame_bytes)):
        buf = data[i * frame_bytes:(i + 1) * frame_bytes]
        y = buf[: width * height].reshape(height, width)
        u = buf[width * height: width * height * 5 // 4].reshape(height // 2, width // 2)
        v = buf[width * height * 5 // 4:].reshape(height // 2, width // 2)
        frames.append(np.ascontiguousarray(i420_to_nv12(y, u, v)))
    return frames


def _av_frames(path: Path, count: int, start: int, max_width: Optional[int]) -> List[np.ndarray]:
    import av  # lazy: av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            full_range = stream.codec_context.pix_fmt in ("yuvj420p", "yuvj422p", "yuvj444p")
            for i, frame in enumerate(container.decode(stream)):
                if i < start:
                    continue
                if len(frames) >= count:
                    break
                width, height = frame.width, frame.height
                if max_width and width > max_width:
                    height = int(round(height * max_width / width / 2)) * 2
                    width = max_width
                width -= width % 2
                height -= height % 2
                flat = frame.reformat(width=width, height=height, format="yuv420p").to_ndarray().reshape(-1)
                luma, chroma = width * height, (width // 2) * (height // 2)
                y = flat[:luma].reshape(height, width)
                u = flat[luma:luma + chroma].reshape(height // 2, width // 2)
                v = flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2)
                nv12 = i420_to_nv12(y, u, v)
                if full_range or frame.color_range == 2:
                    nv12 = nv12_full_to_limited(nv12)
                frames.append(np.ascontiguousarray(nv12, dtype=np.uint8))
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode {path}: {exc}") from None
    return frames


def load_frames(path: Path, count: int, start: int = 0, max_width: Optional[int] = None) -> List[np.ndarray]:
    """Up to `count` uint8 NV12 frames `[H*3/2, W]` from `path`, starting at frame `start`.

    Args:
        path: a clip readable by PyAV, or a raw 8-bit `.yuv` with `WxH` in its name.
        count: number of frames wanted (fewer if the clip is shorter).
        start: index of the first frame.
        max_width: downscale wider frames to this width (keeps the aspect, even sizes).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clip not found: {path}")
    if path.suffix == ".yuv":
        frames = _raw_frames(path, count, start)
    else:
        frames = _av_frames(path, count, start, max_width)
    if not frames:
        raise InputError(f"no frames read from {path} (start={start})")
    return [_even(f) for f in frames]
