"""Checks of a `preedit run` that need no server: numbers and output paths (issue 12, rows 4, 5, 8, 9).

`check_run(cfg, dsts)` is called by `plan_streams` before any decoder opens or server starts, so a bad
number or a colliding / unwritable output is one `UsageError` line (exit 2) and nothing is touched.

- numbers: every numeric option finite and in range (`--bitrate nan`, `--read-timeout-s -1`, ...);
- outputs: an output that is an input (same path, or the same file by device + inode: a hardlink or a
  symlink), the same output twice, and an output folder that is missing or not writable are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from preedit.errors import UsageError

_PORT = (0, 65535)


def _number(flag: str, value: Optional[float], *, low: float, positive: bool = False,
            high: Optional[float] = None) -> None:
    if value is None:
        return
    v = float(value)
    ok = math.isfinite(v) and (v > low if positive else v >= low) and (high is None or v <= high)
    if not ok:
        rng = "positive" if positive else f">= {low:g}"
        if high is not None:
            rng = f"in {low:g}..{high:g}"
        raise UsageError(f"{flag} must be {rng} (a finite number), got {value}")


def check_numbers(cfg) -> None:
    """Every numeric option of `cfg` (a RunConfig) finite and in range, else `UsageError`."""
    enc = cfg.encoder
    _number("--bitrate", enc.bitrate_kbps, low=0, positive=True)
    _number("--crf", enc.crf, low=0)
    _number("--qp", enc.qp, low=0)
    _number("--request-timeout-s", cfg.request_timeout_s, low=0, positive=True)
    _number("--connect-timeout-s", cfg.connect_timeout_s, low=0, positive=True)
    _number("--teardown-timeout-s", cfg.teardown_timeout_s, low=0, positive=True)
    _number("--read-timeout-s", cfg.read_timeout_s, low=0, positive=True)
    _number("--latency-budget-ms", cfg.latency_budget_ms, low=0, positive=True)
    _number("--inflight", cfg.inflight, low=1)
    _number("--frames-per-request", cfg.frames_per_request, low=1)
    _number("--queue-size", cfg.queue_size, low=1)
    _number("--max-frames", cfg.max_frames, low=1)
    _number("--metrics-port", cfg.metrics_port, low=_PORT[0], high=_PORT[1])
    _number("--triton-metrics-port", cfg.triton_metrics_port, low=_PORT[0], high=_PORT[1])


def _file_id(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_outputs(srcs: Sequence[str], dsts: Sequence[str]) -> None:
    """Refuse outputs that are an input (path or device+inode), repeated, or in an unwritable folder."""
    inputs: Dict[object, str] = {}
    for src in srcs:
        if "://" in src:
            continue
        p = Path(src)
        inputs[p.resolve()] = src
        fid = _file_id(p)
        if fid is not None:
            inputs[fid] = src
    seen: Dict[object, str] = {}
    for dst in dsts:
        if "://" in dst:  # a network output (udp://): no file to collide with, but not twice
            if dst in seen:
                raise UsageError(f"the same output given twice: {dst} (one output per input)")
            seen[dst] = dst
            continue
        p = Path(dst)
        keys: List[object] = [p.resolve()]
        fid = _file_id(p)
        if fid is not None:
            keys.append(fid)
        for k in keys:
            if k in inputs:
                raise UsageError(f"output would overwrite the input {inputs[k]}: {dst}")
            if k in seen:
                raise UsageError(f"the same output given twice: {seen[k]} and {dst} (one output per input)")
        for k in keys:
            seen[k] = dst
        folder = p.resolve().parent
        if not folder.is_dir():
            raise UsageError(f"output folder does not exist: {folder}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"output folder is not writable: {folder}")
        if p.is_dir():
            raise UsageError(f"output is a folder, not a file: {dst}")


def check_run(cfg, dsts: Sequence[str]) -> None:
    """All server-free checks of a run: numbers, then outputs."""
    check_numbers(cfg)
    check_outputs(cfg.inputs, dsts)


def playable_frames(path: str) -> int:
    """Video packets a player would find in `path` (0: missing, empty or not a readable container)."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        return 0
    try:
        import av  # lazy: optional dependency

        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except Exception:  # noqa: BLE001 - any failure to read back means nothing playable
        return 0


def partial_output_note(path: str) -> str:
    """What an error message says about the output: finalised with N frames, or that none was written."""
    if "://" in str(path):
        return f"the stream sent to {path} ends where the run stopped"
    n = playable_frames(path)
    if n:
        return f"partial output finalised: {path} ({n} frames)"
    return f"no playable output was written ({path})"
