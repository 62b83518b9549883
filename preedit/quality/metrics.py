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
- `VMAF_DEVICES`, `choose_vmaf_device(requested, *, has_filter, cuda_error, ffmpeg)` (pure) and
  `resolve_vmaf_device(requested, cuda_device=0)` (probes `ffmpeg -filters` and the CUDA device):
  `cpu` | `cuda` | `auto` → (`cpu` | `cuda`, one line saying why CPU when CUDA was asked for).

libvmaf_cuda (`vmaf_device="cuda"`, an FFmpeg built with `--enable-libvmaf-cuda` on a GPU host):
```
 both sides ─> settb/setpts/format=yuv420p ─split─┬─ hwupload_cuda ─> libvmaf_cuda (vmaf, vmaf_neg) ─> nullsink
                                                  ├─ libvmaf on CPU (vmaf_v1, PSNR, MS-SSIM)
                                                  └─ xpsnr on CPU
```
FFmpeg's libvmaf_cuda copies only the luma plane to libvmaf and takes 8-bit yuv420p (or
yuv444p16), so only the luma-only models VMAF and VMAF-NEG (VIF, ADM, motion) run there; VMAF v1
(CAMBI, chroma SpEED), PSNR (Y, Cb, Cr) and MS-SSIM stay on CPU libvmaf in the same FFmpeg run, and
the two logs are merged per frame. 10-bit clips, and sizes where a metric is skipped, are scored
on CPU. No scaling happens (both sides have the same size by contract), so `scale_cuda` is not in
the graph. **Not yet run on a GPU**: the graph is checked here with the CUDA filters swapped for
their CPU counterparts (tests/test_vmaf_cuda.py).

Distorted and reference must have the same width and height (scale before, never inside, so
resampling is an explicit evaluation choice). Small frames: libvmaf's MS-SSIM needs both sides
>= 176 px and VMAF v1 (CAMBI, SpEED chroma) >= 240x160 (below that it crashes or writes no log);
`unsupported_metrics(width, height)` names what is skipped, and those metrics are NaN.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from preedit.errors import InputError, UsageError
from preedit.quality.ffmpeg import ffmpeg_exe, ffmpeg_version, run_command

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

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

#: Models libvmaf_cuda computes (luma-only features); the others stay on CPU libvmaf.
CUDA_VMAF_MODELS = ("vmaf", "vmaf_neg")
#: Where VMAF is computed: `auto` = libvmaf_cuda when FFmpeg has it and a CUDA device opens, else CPU.
VMAF_DEVICES = ("cpu", "cuda", "auto")

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
    vmaf_device: str = "cpu",
    cuda_log: Optional[PathLike] = None,
    cuda_device: int = 0,
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
        vmaf_device: `cpu`, or `cuda`: `CUDA_VMAF_MODELS` through hwupload_cuda + libvmaf_cuda into
            `cuda_log` (8-bit only, nothing skipped), the rest on CPU libvmaf into `vmaf_log`.
        cuda_log: libvmaf_cuda's JSON log (required with `vmaf_device="cuda"`).
        cuda_device: CUDA device index for hwupload_cuda.

    Returns:
        The argv list (no shell).
    """
    if bit_depth not in (8, 10):
        raise UsageError(f"bit_depth must be 8 or 10, got {bit_depth}")
    if n_threads < 1:
        raise UsageError(f"n_threads must be >= 1, got {n_threads}")
    if vmaf_device not in ("cpu", "cuda"):
        raise UsageError(f"vmaf_device must be cpu or cuda here, got {vmaf_device!r}")
    cuda = vmaf_device == "cuda"
    if cuda and (bit_depth != 8 or skip or cuda_log is None):
        raise UsageError("libvmaf_cuda scoring needs 8-bit input, every metric and a cuda_log path")
    if ffmpeg is None:
        ffmpeg = ffmpeg_exe()
    on_gpu = CUDA_VMAF_MODELS if cuda else ()
    models = _model_option(key for key in VMAF_MODELS.values() if key not in skip and key not in on_gpu)
    features = "name=psnr" + ("" if "ms_ssim" in skip else "|name=float_ms_ssim")
    # Pair frames by index: equal synthetic timestamps on both inputs (framesync matches by time).
    prep = "settb=1/30,setpts=N,format=" + ("yuv420p10le" if bit_depth == 10 else "yuv420p")
    ways = 3 if cuda else 2
    graph = (
        f"[0:v]{prep},split={ways}{''.join(f'[d{i}]' for i in range(1, ways + 1))};"
        f"[1:v]{prep},split={ways}{''.join(f'[r{i}]' for i in range(1, ways + 1))};"
        f"[d1][r1]libvmaf=model='{models}':feature='{features}'"
        f":log_fmt=json:log_path={_filter_path(vmaf_log)}:n_threads={n_threads}:shortest=1;"
        f"[d2][r2]xpsnr=stats_file={_filter_path(xpsnr_log)}:shortest=1"
    )
    if cuda:
        up = f"hwupload_cuda=device={int(cuda_device)}"
        graph += (
            f";[d3]{up}[dg];[r3]{up}[rg];"
            f"[dg][rg]libvmaf_cuda=model='{_model_option(CUDA_VMAF_MODELS)}'"
            f":log_fmt=json:log_path={_filter_path(cuda_log)}:shortest=1,nullsink"
        )
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
        "-i", str(distorted), "-i", str(reference),
        "-lavfi", graph, "-f", "null", "-",
    ]  # fmt: skip


def _model_option(keys) -> str:
    """libvmaf's `model` option for metric keys (in `VMAF_MODELS` order)."""
    wanted = set(keys)
    return "|".join(f"version={ver}\\:name={key}" for ver, key in VMAF_MODELS.items() if key in wanted)


def choose_vmaf_device(requested: str, *, has_filter: bool, cuda_error: Optional[str],
                       ffmpeg: str = "FFmpeg") -> Tuple[str, Optional[str]]:
    """Where VMAF runs (pure): (`cpu` | `cuda`, the one line saying why CPU when CUDA was asked for, else None).

    Args:
        requested: `cpu`, `cuda` or `auto` (`cuda` falls back like `auto`, and says so).
        has_filter: the FFmpeg binary lists `libvmaf_cuda` in `ffmpeg -filters`.
        cuda_error: None when FFmpeg opened the CUDA device, else its error line.
        ffmpeg: the binary's name, for the message.
    """
    if requested not in VMAF_DEVICES:
        raise UsageError(f"unknown VMAF device {requested!r}; valid: {', '.join(VMAF_DEVICES)}")
    if requested == "cpu":
        return "cpu", None
    if not has_filter:
        return "cpu", (f"--vmaf-device {requested}: {ffmpeg} has no libvmaf_cuda filter "
                       f"(needs an FFmpeg built with --enable-libvmaf-cuda); scoring with CPU libvmaf")
    if cuda_error:
        return "cpu", f"--vmaf-device {requested}: FFmpeg cannot open a CUDA device ({cuda_error}); scoring with CPU libvmaf"
    return "cuda", None


def resolve_vmaf_device(requested: str, cuda_device: int = 0) -> Tuple[str, Optional[str]]:
    """`choose_vmaf_device` with the probes run: `ffmpeg -filters`, then `-init_hw_device cuda` (only if needed)."""
    from preedit.quality.ffmpeg import ffmpeg_cuda_error, ffmpeg_exe, ffmpeg_has_filter

    if requested == "cpu":
        return choose_vmaf_device(requested, has_filter=False, cuda_error=None)
    exe = ffmpeg_exe()
    has = ffmpeg_has_filter("libvmaf_cuda", exe)
    err = ffmpeg_cuda_error(cuda_device, exe) if has else None
    return choose_vmaf_device(requested, has_filter=has, cuda_error=err, ffmpeg=Path(exe).name)


def _log_frames(text: str) -> Tuple[list, str]:
    try:
        data = json.loads(text)
        frames = data["frames"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable libvmaf log: {exc}") from exc
    return frames, str(data.get("version", "unknown"))


def parse_vmaf_models(text: str) -> Tuple[int, Dict[str, List[float]]]:
    """Per-frame VMAF model scores (`vmaf`, `vmaf_neg`, `vmaf_v1`; NaN where absent) from a libvmaf JSON log."""
    frames, _ = _log_frames(text)
    nan = float("nan")
    return len(frames), {key: [float(fr["metrics"].get(key, nan)) for fr in frames] for key in VMAF_MODELS.values()}


def parse_vmaf_log(text: str) -> Tuple[int, Dict[str, List[float]], str]:
    """Parse a libvmaf JSON log.

    Returns:
        `(frames, per_frame, libvmaf_version)` where `per_frame` maps `vmaf`, `vmaf_neg`, `vmaf_v1`,
        `psnr_y`, `psnr_yuv`, `ms_ssim` to per-frame lists (NaN where the log lacks the metric).
    """
    frames, version = _log_frames(text)
    n, out = parse_vmaf_models(text)
    out.update({k: [] for k in ("psnr_y", "psnr_yuv", "ms_ssim")})
    nan = float("nan")
    for fr in frames:
        m = fr["metrics"]
        y, u, v = float(m["psnr_y"]), float(m["psnr_cb"]), float(m["psnr_cr"])
        out["psnr_y"].append(y)
        out["psnr_yuv"].append((6.0 * y + u + v) / 8.0)
        out["ms_ssim"].append(float(m.get("float_ms_ssim", nan)))
    return n, out, version


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
    vmaf_device: str = "cpu",
    cuda_device: int = 0,
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
        vmaf_device: `cpu`, or `cuda` (already resolved, see `resolve_vmaf_device`): VMAF and
            VMAF-NEG on libvmaf_cuda; a 10-bit clip or one with a skipped metric is scored on CPU.
        cuda_device: CUDA device index for libvmaf_cuda.

    Returns:
        `Scores` with per-clip means and the frame count scored.
    """
    for p in (distorted, reference):
        if not Path(p).is_file():
            raise InputError(f"no such file: {p}")
    width, height = size if size is not None else probe_size(reference)
    skip = unsupported_metrics(width, height)
    bit_depth = bit_depth or probe_bit_depth(reference)
    if vmaf_device == "cuda" and (bit_depth != 8 or skip):
        log.info("%s: libvmaf_cuda takes 8-bit clips of at least 240x176; scoring on CPU", Path(distorted).name)
        vmaf_device = "cpu"
    with tempfile.TemporaryDirectory(prefix="preedit_score_") as tmp:
        vlog, xlog, clog = Path(tmp) / "vmaf.json", Path(tmp) / "xpsnr.txt", Path(tmp) / "vmaf_cuda.json"
        cuda = vmaf_device == "cuda"
        cmd = build_score_cmd(distorted, reference, vlog, xlog, n_threads=n_threads, skip=skip,
                              bit_depth=bit_depth, vmaf_device=vmaf_device, cuda_log=clog if cuda else None,
                              cuda_device=cuda_device)
        proc = run_command(cmd, timeout_s=timeout_s, error=InputError, what=f"scoring {Path(distorted).name}")
        logs = [vlog, xlog] + ([clog] if cuda else [])
        if not all(p.is_file() for p in logs):
            # libvmaf reports some faults (e.g. a feature that cannot run at this size) only on stderr.
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise InputError(f"scoring {Path(distorted).name} wrote no log: {lines[0] if lines else 'no output'}")
        return scores_from_logs(vlog.read_text(), xlog.read_text(), clog.read_text() if cuda else None,
                                expect_frames=expect_frames, name=Path(distorted).name)


def scores_from_logs(vmaf_text: str, xpsnr_text: str, cuda_text: Optional[str] = None, *,
                     expect_frames: Optional[int] = None, name: str = "video") -> Scores:
    """`Scores` from one scoring run's logs (pure): libvmaf's, xpsnr's and, with libvmaf_cuda,
    its log, whose `CUDA_VMAF_MODELS` replace the CPU log's (absent there) frame by frame."""
    frames, per_frame, vmaf_version = parse_vmaf_log(vmaf_text)
    if cuda_text is not None:
        n_cuda, on_gpu = parse_vmaf_models(cuda_text)
        if n_cuda != frames:
            raise InputError(f"libvmaf_cuda scored {n_cuda} frames of {name} but CPU libvmaf {frames}")
        per_frame.update({k: on_gpu[k] for k in CUDA_VMAF_MODELS})
    xpsnr = parse_xpsnr_log(xpsnr_text)
    _remember_libvmaf(vmaf_version)
    per_frame["xpsnr_y"] = xpsnr[:frames]
    if len(xpsnr) < frames:
        raise InputError(f"xpsnr scored {len(xpsnr)} frames but libvmaf {frames}")
    if expect_frames is not None and frames != expect_frames:
        raise InputError(f"scored {frames} frames of {name}, expected {expect_frames}")
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
