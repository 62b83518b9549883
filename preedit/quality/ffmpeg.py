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
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False)
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
