"""One place that runs external tools (FFmpeg) for the evaluation stage.

Command builders elsewhere (`preedit.codecs.ffmpeg_argv`, the evaluation) are pure (argv lists); this
module is the only I/O wrapper that executes them, so tests can check commands without FFmpeg.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from typing import Optional, Sequence, Type

from preedit.errors import EncodeError, PreeditError
from preedit.sched import child_preexec


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped in `imageio-ffmpeg` (built with libvmaf, x264/x265/SVT-AV1).

    `IMAGEIO_FFMPEG_EXE` (imageio-ffmpeg's own override) points at another build with libvmaf.
    """
    env = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if env:
        return env
    import imageio_ffmpeg  # lazy: imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_command(
    cmd: Sequence[str],
    *,
    timeout_s: float = 600.0,
    error: Type[PreeditError] = EncodeError,
    what: str = "command",
) -> subprocess.CompletedProcess:
    """Run `cmd` (no shell), capture output, and raise `error` with a one-line message on failure.

    Args:
        cmd: argv list, e.g. from a `build_*_cmd` function.
        timeout_s: wall-clock limit.
        error: `PreeditError` subclass raised on a non-zero exit or timeout.
        what: short description for the error message (e.g. "libx265 encode").

    Returns:
        The completed process (stdout/stderr as text).
    """
    try:  # child_preexec: an `ffmpeg -c:v libsvtav1` as root would run ~50 threads at SCHED_FIFO 99
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False,
                              preexec_fn=child_preexec())
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} timed out after {timeout_s:.0f} s") from exc
    except FileNotFoundError as exc:
        raise error(f"{what}: executable not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        raise error(f"{what} failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
    return proc


def _last_line(text: Optional[str]) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """First line of `ffmpeg -version` for the bundled binary, e.g. `ffmpeg version n9.0.2-...`."""
    proc = run_command([ffmpeg_exe(), "-hide_banner", "-version"], timeout_s=30, what="ffmpeg -version")
    return proc.stdout.splitlines()[0].strip() if proc.stdout else "unknown"


def parse_version(pattern: str, text: str) -> Optional[str]:
    """First capture group of `pattern` in `text`, or None."""
    m = re.search(pattern, text)
    return m.group(1).strip() if m else None


@functools.lru_cache(maxsize=None)
def ffmpeg_filters(ffmpeg: Optional[str] = None) -> frozenset:
    """Names of the filters the FFmpeg binary has (`ffmpeg -filters`); empty when it cannot be run."""
    try:
        proc = run_command([ffmpeg or ffmpeg_exe(), "-hide_banner", "-filters"], timeout_s=30, what="ffmpeg -filters")
    except PreeditError:
        return frozenset()
    names = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        # rows look like " T. xpsnr  VV->V  Calculate ..." (flags, name, pads, description)
        if len(parts) >= 3 and "->" in parts[2]:
            names.add(parts[1])
    return frozenset(names)


def ffmpeg_has_filter(name: str, ffmpeg: Optional[str] = None) -> bool:
    return name in ffmpeg_filters(ffmpeg)


@functools.lru_cache(maxsize=None)
def ffmpeg_cuda_error(device: int = 0, ffmpeg: Optional[str] = None) -> Optional[str]:
    """None when FFmpeg can open CUDA device `device` (`-init_hw_device cuda`), else why not (one line)."""
    cmd = [ffmpeg or ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
           "-init_hw_device", f"cuda=cu:{int(device)}", "-f", "lavfi", "-i", "nullsrc=s=64x64:d=0.04",
           "-frames:v", "1", "-f", "null", "-"]  # fmt: skip
    try:
        run_command(cmd, timeout_s=60, what=f"FFmpeg CUDA device {device}")
    except PreeditError as exc:
        return str(exc)
    return None
