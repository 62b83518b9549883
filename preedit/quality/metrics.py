"""Full-reference video quality with the libvmaf build inside imageio-ffmpeg's FFmpeg.

```
 distorted (any file FFmpeg decodes) ─┐
                                      ├─> ffmpeg -lavfi libvmaf + xpsnr ─> Scores(frames, metrics)
 reference (the ORIGINAL source)  ────┘         (one process, per-frame logs parsed here)
```

Stable API (the training stage imports it; keep it small):

- `METRICS`: the metric keys a `Scores.metrics` dict carries, in report order:
  `vmaf` (vmaf_v0.6.1), `vmaf_neg` (vmaf_v0.6.1neg), `vmaf_v1` (vmaf_v1.0.16_3d0h), `psnr_y`,
  `psnr_yuv` ((6·Y + U + V) / 8, JVET weighting), `ms_ssim` (luma MS-SSIM, 0..1), `xpsnr_y`.
  Every value is the arithmetic mean over the scored frames of the per-frame values (the libvmaf
  default pooling); PSNR is capped by libvmaf at 60 dB for 8-bit input, and per-frame XPSNR is
  capped here at the same `XPSNR_CAP_DB` = 60 dB (identical frames give `inf` otherwise).
- `Scores`: frozen dataclass `(frames: int, metrics: dict[str, float], per_frame: dict[str, list[float]])`.
- `build_score_cmd(distorted, reference, vmaf_log, xpsnr_log, *, n_threads=1, ffmpeg=None) -> list[str]`:
  pure; builds the FFmpeg argv. Frames are paired by index (both streams are re-timed to
  `N / 30 s`), so container timestamps, VFR and frame-rate mismatches cannot mis-pair frames.
  Both sides are converted to 4:2:0 at `bit_depth` (8: `format=yuv420p`, 10: `format=yuv420p10le`)
  before scoring; `score` picks 10 when the reference is 10-bit (`probe_bit_depth`), so 10-bit
  clips are scored at 10 bits (libvmaf on yuv420p10le, PSNR on the 10-bit scale).
- `parse_vmaf_log(text) -> (frames, per_frame)` and `parse_xpsnr_log(text) -> per_frame`: pure parsers.
- `score(distorted, reference, *, n_threads=1, timeout_s=600.0, expect_frames=None) -> Scores`:
  runs the command (the one I/O wrapper), raises `preedit.errors.InputError` on failure or when
  fewer/more frames than `expect_frames` were scored.
- `tool_versions() -> dict`: FFmpeg version line and the libvmaf version (from a scoring log).

Distorted and reference must have the same width and height (scale before, never inside, so
resampling is an explicit evaluation choice). Small frames: libvmaf's MS-SSIM needs both sides
>= 176 px and VMAF v1 (CAMBI, SpEED chroma) >= 240x160 (below that it crashes or writes no log);
`unsupported_metrics(width, height)` names what is skipped, and those metrics are NaN.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from preedit.errors import InputError, UsageError
from preedit.quality.ffmpeg import ffmpeg_exe, ffmpeg_version, run_command

PathLike = Union[str, Path]

#: libvmaf model version -> our metric key.
VMAF_MODELS: Dict[str, str] = {
    "vmaf_v0.6.1": "vmaf",
    "vmaf_v0.6.1neg": "vmaf_neg",
    "vmaf_v1.0.16_3d0h": "vmaf_v1",
}

#: Metric keys in report order, with a short description used in reports.
METRICS: Dict[str, str] = {
    "vmaf": "VMAF vmaf_v0.6.1",
    "vmaf_neg": "VMAF-NEG vmaf_v0.6.1neg",
    "vmaf_v1": "VMAF v1 vmaf_v1.0.16_3d0h (NEG-like)",
    "psnr_y": "PSNR-Y (dB)",
    "psnr_yuv": "PSNR-YUV 6:1:1 (dB)",
    "ms_ssim": "MS-SSIM (luma)",
    "xpsnr_y": "XPSNR-Y (dB)",
}

#: Cap for per-frame XPSNR (dB), matching libvmaf's 8-bit PSNR cap, so identical frames stay finite.
XPSNR_CAP_DB = 60.0

# Characters that would need filtergraph escaping; log paths are always ours (a temp dir), so refuse.
_UNSAFE_FILTER_CHARS = set("'\\:,;[]= ")


@dataclass(frozen=True)
class Scores:
    """Per-clip quality of one distorted video against its reference.

    Attributes:
        frames: number of frame pairs scored.
        metrics: metric key (see `METRICS`) -> mean over frames.
        per_frame: metric key -> per-frame values (length `frames`).
    """

    frames: int
    metrics: Dict[str, float]
    per_frame: Dict[str, List[float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise InputError(f"no frames were scored (frames={self.frames})")
        missing = [k for k in METRICS if k not in self.metrics]
        if missing:
            raise InputError(f"scores lack metrics {missing}; expected {list(METRICS)}")


def unsupported_metrics(width: int, height: int) -> List[str]:
    """Metric keys libvmaf cannot compute at this frame size (measured with this FFmpeg build)."""
    out = []
    if width < 240 or height < 160:
        out.append("vmaf_v1")
    if width < 176 or height < 176:
        out.append("ms_ssim")
    return out


def _filter_path(path: PathLike) -> str:
    text = str(path)
    bad = sorted({c for c in text if c in _UNSAFE_FILTER_CHARS})
    if bad:
        raise UsageError(f"log path {text!r} contains characters {bad} that need filtergraph escaping")
    return text


def build_score_cmd(
    distorted: PathLike,
    reference: PathLike,
    vmaf_log: PathLike,
    xpsnr_log: PathLike,
    *,
    n_threads: int = 1,
    skip: Sequence[str] = (),
    ffmpeg: Optional[str] = None,
    bit_depth: int = 8,
) -> List[str]:
    """FFmpeg argv scoring `distorted` against `reference` with libvmaf (3 models, PSNR, MS-SSIM) and XPSNR.

    Args:
        distorted: decoded or encoded video (any format FFmpeg reads, e.g. .hevc, .obu, .y4m).
        reference: the original source at the same size (e.g. a .y4m written by the harness).
        vmaf_log: where libvmaf writes its JSON log (path without filtergraph special characters).
        xpsnr_log: where the xpsnr filter writes its per-frame stats file (same constraint).
        n_threads: libvmaf worker threads.
        skip: metric keys to leave out (`vmaf_v1`, `ms_ssim`; see `unsupported_metrics`).
        ffmpeg: FFmpeg executable; defaults to imageio-ffmpeg's.
        bit_depth: 8 or 10, the precision both sides are scored at.

    Returns:
        The argv list (no shell).
    """
    if bit_depth not in (8, 10):
        raise UsageError(f"bit_depth must be 8 or 10, got {bit_depth}")
    if n_threads < 1:
        raise UsageError(f"n_threads must be >= 1, got {n_threads}")
    if ffmpeg is None:
        ffmpeg = ffmpeg_exe()
    models = "|".join(f"version={ver}\\:name={key}" for ver, key in VMAF_MODELS.items() if key not in skip)
    features = "name=psnr" + ("" if "ms_ssim" in skip else "|name=float_ms_ssim")
    # Pair frames by index: equal synthetic timestamps on both inputs (framesync matches by time).
    prep = "settb=1/30,setpts=N,format=" + ("yuv420p10le" if bit_depth == 10 else "yuv420p")
    graph = (
        f"[0:v]{prep},split=2[d1][d2];"
        f"[1:v]{prep},split=2[r1][r2];"
        f"[d1][r1]libvmaf=model='{models}':feature='{features}'"
        f":log_fmt=json:log_path={_filter_path(vmaf_log)}:n_threads={n_threads}:shortest=1;"
        f"[d2][r2]xpsnr=stats_file={_filter_path(xpsnr_log)}:shortest=1"
    )
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
        "-i", str(distorted), "-i", str(reference),
        "-lavfi", graph, "-f", "null", "-",
    ]  # fmt: skip


def parse_vmaf_log(text: str) -> Tuple[int, Dict[str, List[float]], str]:
    """Parse a libvmaf JSON log.

    Returns:
        `(frames, per_frame, libvmaf_version)` where `per_frame` maps `vmaf`, `vmaf_neg`, `vmaf_v1`,
        `psnr_y`, `psnr_yuv`, `ms_ssim` to per-frame lists (NaN where the log lacks the metric).
    """
    try:
        data = json.loads(text)
        frames = data["frames"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable libvmaf log: {exc}") from exc
    out: Dict[str, List[float]] = {k: [] for k in ("vmaf", "vmaf_neg", "vmaf_v1", "psnr_y", "psnr_yuv", "ms_ssim")}
    nan = float("nan")
    for fr in frames:
        m = fr["metrics"]
        for key in VMAF_MODELS.values():
            out[key].append(float(m.get(key, nan)))
        y, u, v = float(m["psnr_y"]), float(m["psnr_cb"]), float(m["psnr_cr"])
        out["psnr_y"].append(y)
        out["psnr_yuv"].append((6.0 * y + u + v) / 8.0)
        out["ms_ssim"].append(float(m.get("float_ms_ssim", nan)))
    return len(frames), out, str(data.get("version", "unknown"))


_XPSNR_LINE = re.compile(r"n:\s*(\d+)\s+XPSNR y:\s*([0-9.+-]+|inf)")


def parse_xpsnr_log(text: str) -> List[float]:
    """Per-frame luma XPSNR (dB, capped at `XPSNR_CAP_DB`) from an FFmpeg `xpsnr` stats file.

    The file has lines like `n:    1  XPSNR y: 46.6589  XPSNR u: 50.0052  XPSNR v: 49.8236`.
    """
    values = [min(float(m.group(2)), XPSNR_CAP_DB) for m in _XPSNR_LINE.finditer(text)]
    if not values:
        raise InputError("xpsnr stats file holds no frames")
    return values


def probe_size(path: PathLike) -> Tuple[int, int]:
    """(width, height) of the first video stream (y4m headers read directly, else PyAV)."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    if head.startswith(b"YUV4MPEG2"):
        from preedit.quality.y4m import parse_header  # lazy: pulls numpy

        hdr = parse_header(head.split(b"\n", 1)[0])
        return hdr.width, hdr.height
    import av  # lazy: av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return int(s.codec_context.width), int(s.codec_context.height)
    except Exception as exc:
        raise InputError(f"cannot probe {path}: {exc}") from None


def probe_bit_depth(path: PathLike) -> int:
    """10 when the first video stream of `path` is more than 8 bits per sample (y4m `C420p10`, PyAV), else 8."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    if head.startswith(b"YUV4MPEG2"):
        tags = head.split(b"\n", 1)[0].split(b" ")
        return 10 if any(t.startswith(b"C") and b"p1" in t for t in tags) else 8
    import av  # lazy: av

    try:
        with av.open(str(path)) as c:
            fmt = c.streams.video[0].codec_context.format
            bits = max(int(comp.bits) for comp in fmt.components) if fmt is not None else 8
    except Exception as exc:
        raise InputError(f"cannot probe {path}: {exc}") from None
    return 10 if bits > 8 else 8


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def score(
    distorted: PathLike,
    reference: PathLike,
    *,
    n_threads: int = 1,
    timeout_s: float = 600.0,
    expect_frames: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
    bit_depth: Optional[int] = None,
) -> Scores:
    """Score `distorted` against `reference` (see `build_score_cmd`); the one I/O wrapper.

    Args:
        distorted: distorted video path.
        reference: original source path, same width/height.
        n_threads: libvmaf threads.
        timeout_s: wall-clock limit for FFmpeg.
        expect_frames: if given, raise `InputError` unless exactly this many frames were scored.
        size: `(width, height)` of the reference; probed with PyAV when None. Metrics libvmaf cannot
            compute at that size (`unsupported_metrics`) are NaN.
        bit_depth: 8 or 10; None: the reference's (`probe_bit_depth`), so 10-bit clips score at 10 bits.

    Returns:
        `Scores` with per-clip means and the frame count scored.
    """
    for p in (distorted, reference):
        if not Path(p).is_file():
            raise InputError(f"no such file: {p}")
    width, height = size if size is not None else probe_size(reference)
    skip = unsupported_metrics(width, height)
    bit_depth = bit_depth or probe_bit_depth(reference)
    with tempfile.TemporaryDirectory(prefix="preedit_score_") as tmp:
        vlog, xlog = Path(tmp) / "vmaf.json", Path(tmp) / "xpsnr.txt"
        cmd = build_score_cmd(distorted, reference, vlog, xlog, n_threads=n_threads, skip=skip,
                              bit_depth=bit_depth)
        proc = run_command(cmd, timeout_s=timeout_s, error=InputError, what=f"scoring {Path(distorted).name}")
        if not vlog.is_file() or not xlog.is_file():
            # libvmaf reports some faults (e.g. a feature that cannot run at this size) only on stderr.
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise InputError(f"scoring {Path(distorted).name} wrote no log: {lines[0] if lines else 'no output'}")
        frames, per_frame, vmaf_version = parse_vmaf_log(vlog.read_text())
        xpsnr = parse_xpsnr_log(xlog.read_text())
    _remember_libvmaf(vmaf_version)
    per_frame["xpsnr_y"] = xpsnr[:frames]
    if len(xpsnr) < frames:
        raise InputError(f"xpsnr scored {len(xpsnr)} frames but libvmaf {frames}")
    if expect_frames is not None and frames != expect_frames:
        raise InputError(f"scored {frames} frames of {Path(distorted).name}, expected {expect_frames}")
    metrics = {k: _mean(per_frame[k]) for k in METRICS}
    return Scores(frames=frames, metrics=metrics, per_frame={k: per_frame[k] for k in METRICS})


_LIBVMAF_VERSION: List[str] = []


def _remember_libvmaf(version: str) -> None:
    if not _LIBVMAF_VERSION:
        _LIBVMAF_VERSION.append(version)


@functools.lru_cache(maxsize=1)
def tool_versions() -> Dict[str, str]:
    """Versions of the scoring tools: `ffmpeg` (version line), `libvmaf` (git hash from a log), models."""
    if not _LIBVMAF_VERSION:
        with tempfile.TemporaryDirectory(prefix="preedit_vmafver_") as tmp:
            src = Path(tmp) / "a.y4m"
            run_command(
                [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                 "testsrc2=size=320x240:rate=1:duration=1", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe",
                 str(src)],
                timeout_s=60, error=InputError, what="test pattern",
            )  # fmt: skip
            score(src, src)
    return {
        "ffmpeg": ffmpeg_version(),
        "libvmaf": _LIBVMAF_VERSION[0] if _LIBVMAF_VERSION else "unknown",
        "vmaf_models": ",".join(VMAF_MODELS),
    }
