"""Evaluation sources: which clips, and how each becomes the limited-range reference.

```
 clip file (mp4/mkv/webm/y4m/raw .yuv; any size, fps, range, 8/10-bit)
   └─> ffmpeg: first N frames, autorotate, scale to <= max_height (even), full->limited range,
       yuv420p (8-bit source) | yuv420p10le (10-bit source) ─> reference.y4m
       (the ORIGINAL every variant is scored against, at the source's bit depth)
```

Raw `.yuv` files carry no header: width x height, frame rate (`12fps`) and pixel format
(`yuv420p10le`) come from the file name (defaults: 25 fps, yuv420p).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from preedit.errors import InputError, UsageError
from preedit.quality.ffmpeg import ffmpeg_exe
from preedit.splits import HELDOUT_CLIPS

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".y4m", ".yuv", ".ts", ".avi", ".hevc", ".ivf")


@dataclass(frozen=True)
class RawFormat:
    """Geometry of a headerless raw YUV file, parsed from its name."""

    width: int
    height: int
    fps: float
    pix_fmt: str


def parse_raw_name(name: str) -> RawFormat:
    """Parse `CiscoVT2people_320x192_12fps.yuv` / `sparks_480x270_yuv420p10le.yuv` style names."""
    m = re.search(r"(\d+)x(\d+)", name)
    if not m:
        raise InputError(f"raw clip {name}: no WIDTHxHEIGHT in the file name")
    fps_m = re.search(r"(\d+(?:\.\d+)?)fps", name)
    fmt_m = re.search(r"(yuv4[0-9]{2}p(?:1[0260]le)?)", name)
    return RawFormat(int(m.group(1)), int(m.group(2)), float(fps_m.group(1)) if fps_m else 25.0,
                     fmt_m.group(1) if fmt_m else "yuv420p")  # fmt: skip


def source_bit_depth(clip: Path) -> int:
    """10 when `clip` has more than 8 bits a sample (raw `.yuv`: its name's pixel format; else probed), else 8."""
    if clip.suffix.lower() == ".yuv":
        return 10 if parse_raw_name(clip.name).pix_fmt.endswith("le") else 8
    from preedit.quality.metrics import probe_bit_depth

    return probe_bit_depth(clip)


def build_reference_cmd(
    clip: Path, out_y4m: Path, *, frames: int, max_height: int, ffmpeg: Optional[str] = None, bit_depth: int = 8
) -> List[str]:
    """FFmpeg argv writing the first `frames` frames of `clip` as the limited-range reference.

    Args:
        clip: input video (any FFmpeg-readable file; raw `.yuv` geometry from its name).
        out_y4m: output .y4m path.
        frames: frames to keep (from the start).
        max_height: downscale (bicubic, aspect kept) when taller; 0 keeps the size. Width and
            height are forced even.
        ffmpeg: FFmpeg executable; defaults to imageio-ffmpeg's.
        bit_depth: 8 (`yuv420p`) or 10 (`yuv420p10le`, a `C420p10` y4m): the reference keeps a
            10-bit source's samples (see `source_bit_depth`); 8 rounds them to 8 bits.

    Returns:
        argv list. Full-range input (yuvj420p, ASL clips) is converted to limited range; frames are
        passed through without duplication (`-fps_mode passthrough`, VFR-safe).
    """
    if bit_depth not in (8, 10):
        raise UsageError(f"bit_depth must be 8 or 10, got {bit_depth}")
    if frames < 1:
        raise UsageError(f"frames must be >= 1, got {frames}")
    if max_height < 0:
        raise UsageError(f"max_height must be >= 0, got {max_height}")
    if ffmpeg is None:
        ffmpeg = ffmpeg_exe()
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if clip.suffix.lower() == ".yuv":
        raw = parse_raw_name(clip.name)
        cmd += ["-f", "rawvideo", "-pix_fmt", raw.pix_fmt, "-s", f"{raw.width}x{raw.height}",
                "-framerate", f"{raw.fps:g}"]  # fmt: skip
    cmd += ["-i", str(clip), "-map", "0:v:0", "-frames:v", str(frames), "-fps_mode", "passthrough"]
    if max_height:
        size = f"w=-2:h='min({max_height},trunc(ih/2)*2)'"
    else:
        size = "w=trunc(iw/2)*2:h=trunc(ih/2)*2"
    # sws_dither=none: a 10-bit source read at 8 bits is rounded ((v + 2) >> 2, as `preedit run
    # --bit-depth 8` does), not dithered.
    fmt = "yuv420p10le" if bit_depth == 10 else "yuv420p"
    vf = f"scale={size}:flags=bicubic:in_range=auto:out_range=tv:sws_dither=none,format={fmt},setsar=1"
    cmd += ["-vf", vf, "-f", "yuv4mpegpipe", "-strict", "-1", str(out_y4m)]
    return cmd


def is_video(path: Path) -> bool:
    """True for files with a video suffix this harness reads."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def default_clips(clips_root: Path, held_out: Sequence[str] = HELDOUT_CLIPS) -> List[Path]:
    """Default evaluation set: the held-out clips (`preedit.splits`) found under `clips_root`."""
    if not clips_root.is_dir():
        raise InputError(f"clip folder {clips_root} not found; pass clips explicitly")
    everything = sorted(p for p in clips_root.iterdir() if is_video(p))
    chosen = [p for p in everything if p.name in set(held_out)]
    missing = sorted(set(held_out) - {p.name for p in chosen})
    if missing:
        log.warning("held-out clips not found under %s: %s", clips_root, ", ".join(missing))
    return chosen


def resolve_clips(args: Sequence[str], clips_root: Path, held_out: Sequence[str] = HELDOUT_CLIPS) -> List[Path]:
    """Expand CLI clip arguments (files, folders, or bare names under `clips_root`) to files;
    no arguments: the held-out clips."""
    if not args:
        return default_clips(clips_root, held_out)
    out: List[Path] = []
    for a in args:
        p = Path(a)
        if not p.exists() and (clips_root / a).exists():
            p = clips_root / a
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if is_video(q)))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"clip {a} not found (a file, a folder, or a name under {clips_root})")
    return _unique(out)


def _unique(paths: Iterable[Path]) -> List[Path]:
    seen, out = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out
