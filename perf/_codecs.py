"""Encoders of the evaluation: ladders, perceptual tunings, pure encode commands, bitstream size.

```
 variant input (.y4m) ─> build_encode_cmd(codec, rate, filter, tune) ─> elementary stream
                          (libx265 .hevc | libx264 .264 | libsvtav1 .obu | *_nvenc)
 elementary stream ─> video_bytes() = size without SEI NAL units (encoder info strings)
```

Ladders are CRF values (constant quality, so each encoder's adaptive quantisation and
psycho-visual tools stay on as users run them). Defaults were chosen so small and medium clips
span about VMAF 60-95; override with `--ladder codec=v1,v2,...`.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from preedit import qp as qp_scale
from preedit.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecSpec:
    """One encoder as the evaluation drives it.

    Attributes:
        name: FFmpeg encoder name.
        family: bitstream family (`hevc`, `h264`, `av1`): decides the muxer and NAL parsing.
        ladder: default rate points (CRF / CQ values, high quality first).
        preset: default speed preset.
        tune_args: extra FFmpeg args of the codec's own perceptual tuning (the `tune` variant).
        tune_label: human description of `tune_args`.
        hardware: True for NVENC encoders (used only when a working GPU encoder is found).
    """

    name: str
    family: str
    ladder: Tuple[float, ...]
    preset: str
    tune_args: Tuple[str, ...]
    tune_label: str
    hardware: bool = False

    def __post_init__(self) -> None:
        if self.family not in ("hevc", "h264", "av1"):
            raise UsageError(f"codec family {self.family!r} must be one of hevc, h264, av1")
        if len(self.ladder) < 2:
            raise UsageError(f"{self.name}: a ladder needs at least 2 rate points")


CODECS: Dict[str, CodecSpec] = {
    "libx265": CodecSpec(
        "libx265", "hevc", (22, 27, 32, 37, 42), "fast",
        ("-x265-params", "aq-mode=3:psy-rdoq=1.0"), "x265 aq-mode=3 (auto-variance, dark bias) + psy-rdoq=1.0",
    ),
    "libsvtav1": CodecSpec(
        "libsvtav1", "av1", (36, 44, 51, 57, 63), "8",
        ("-svtav1-params", "tune=0"), "SVT-AV1 tune=0 (visual quality; default tune=1 is PSNR)",
    ),
    "libx264": CodecSpec(
        "libx264", "h264", (20, 25, 30, 35, 40), "medium",
        ("-aq-mode", "3", "-psy-rd", "1.0:0.15"), "x264 aq-mode=3 + psy-rd 1.0:0.15 (trellis psy, as tune=film)",
    ),
    "hevc_nvenc": CodecSpec(
        "hevc_nvenc", "hevc", (22, 27, 32, 37, 42), "p5",
        ("-spatial-aq", "1", "-temporal-aq", "1"), "NVENC spatial + temporal AQ", hardware=True,
    ),
    "av1_nvenc": CodecSpec(
        "av1_nvenc", "av1", (36, 44, 51, 57, 63), "p5",
        ("-spatial-aq", "1", "-temporal-aq", "1"), "NVENC spatial + temporal AQ", hardware=True,
    ),
}  # fmt: skip

_MUXER = {"hevc": ("hevc", ".hevc"), "h264": ("h264", ".264"), "av1": ("obu", ".obu")}


def get_codec(name: str) -> CodecSpec:
    """Look up a codec by FFmpeg encoder name; `UsageError` lists the valid choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}") from None


def bitstream_suffix(codec: CodecSpec) -> str:
    """File suffix of the elementary stream this codec's command writes."""
    return _MUXER[codec.family][1]


def model_qp(codec: CodecSpec, value: float, qp_range: Tuple[float, float] = (10.0, 51.0)) -> float:
    """The pre-editor's QP input for a rate point (`preedit.qp.model_qp`: AV1 CRF → x265 QP of equal
    quality), clamped to `qp_range`."""
    return float(min(max(qp_scale.model_qp(codec.family, value), qp_range[0]), qp_range[1]))


def build_encode_cmd(
    codec: CodecSpec,
    src: Path,
    out: Path,
    value: float,
    *,
    preset: Optional[str] = None,
    vf: Optional[str] = None,
    tune: bool = False,
    ffmpeg: Optional[str] = None,
) -> List[str]:
    """FFmpeg argv encoding `src` (8-bit 4:2:0 y4m) at one rate point into an elementary stream.

    Args:
        codec: encoder spec.
        src: input .y4m (reference or pre-edited frames).
        out: output elementary stream path (`bitstream_suffix(codec)`).
        value: CRF (software) or CQ (NVENC) value.
        preset: speed preset; the codec default when None.
        vf: optional FFmpeg video filter applied before encoding (e.g. `unsharp=5:5:1.0`).
        tune: add the codec's perceptual tuning args.
        ffmpeg: FFmpeg executable; defaults to imageio-ffmpeg's.

    Returns:
        argv list (no shell).
    """
    if ffmpeg is None:
        from preedit.perf._run import ffmpeg_exe

        ffmpeg = ffmpeg_exe()
    v = f"{value:g}"
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src)]
    if vf:
        cmd += ["-vf", vf]
    cmd += ["-an", "-c:v", codec.name, "-preset", preset or codec.preset, "-pix_fmt", "yuv420p", "-color_range", "tv"]
    if codec.hardware:
        cmd += ["-rc", "vbr", "-cq", v, "-b:v", "0"]
    else:
        cmd += ["-crf", v]
    params = list(codec.tune_args) if tune else []
    if codec.name == "libx265":
        # info=0: no encoder-settings SEI; log-level=error: quiet.
        extra = "log-level=error:info=0"
        if params:
            extra += ":" + params[1]
            params = []
        cmd += ["-x265-params", extra]
    cmd += params
    cmd += ["-f", _MUXER[codec.family][0], str(out)]
    return cmd


def _nal_units(data: bytes) -> List[Tuple[int, int]]:
    """(start, end) of each Annex-B NAL unit payload (after its start code)."""
    starts = []
    i, n = 0, len(data)
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    spans = []
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        while e > s and data[e - 1] == 0 and k + 1 < len(starts):  # zero_byte of a 4-byte start code
            e -= 1
        spans.append((s, e))
    return spans


def video_bytes(data: bytes, family: str) -> int:
    """Bitstream size in bytes, excluding SEI NAL units (H.264 type 6, HEVC types 39/40).

    SEI carries encoder info strings and metadata, not pictures; x264 writes ~1 kB of them, which
    would dominate the rate of short, low-rate test encodes. AV1 OBU streams count in full.
    """
    if family == "av1":
        return len(data)
    sei = 0
    for s, e in _nal_units(data):
        if s >= e:
            continue
        nal_type = data[s] & 0x1F if family == "h264" else (data[s] >> 1) & 0x3F
        if (family == "h264" and nal_type == 6) or (family == "hevc" and nal_type in (39, 40)):
            sei += e - s + 3
    return len(data) - sei


@functools.lru_cache(maxsize=None)
def encoder_available(name: str) -> bool:
    """True when a 2-frame test encode with `name` succeeds (NVENC needs a working GPU and driver)."""
    from preedit.errors import EncodeError
    from preedit.perf._run import ffmpeg_exe, run_command

    codec = get_codec(name)
    with tempfile.TemporaryDirectory(prefix="preedit_enc_") as tmp:
        out = Path(tmp) / f"t{bitstream_suffix(codec)}"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
               "testsrc2=size=256x144:rate=25:duration=0.08", "-c:v", codec.name, "-f",
               _MUXER[codec.family][0], str(out)]  # fmt: skip
        try:
            run_command(cmd, timeout_s=60, error=EncodeError, what=f"{name} probe")
        except EncodeError as exc:
            log.info("encoder %s unavailable: %s", name, exc)
            return False
    return True


@functools.lru_cache(maxsize=None)
def encoder_version(name: str) -> str:
    """Encoder library version string (from a tiny test encode's log or bitstream)."""
    from preedit.errors import EncodeError
    from preedit.perf._run import ffmpeg_exe, parse_version, run_command

    codec = get_codec(name)
    with tempfile.TemporaryDirectory(prefix="preedit_ver_") as tmp:
        out = Path(tmp) / f"t{bitstream_suffix(codec)}"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", "-f", "lavfi", "-i",
               "testsrc2=size=256x144:rate=25:duration=0.08", "-c:v", codec.name, "-f",
               _MUXER[codec.family][0], str(out)]  # fmt: skip
        try:
            proc = run_command(cmd, timeout_s=60, error=EncodeError, what=f"{name} version probe")
        except EncodeError:
            return "unavailable"
        text = proc.stderr + out.read_bytes()[:4096].decode("latin-1")
    patterns = {
        "libx265": r"HEVC encoder version ([^\s]+)",
        "libx264": r"(x264 - core [0-9]+ r[0-9]+ [0-9a-f]+)",
        "libsvtav1": r"SVT-AV1 Encoder Lib (v[^\s]+)",
    }
    found = parse_version(patterns.get(name, r"$^"), text)
    return found or "unknown"


@dataclass(frozen=True)
class Variant:
    """One way of preparing the frames before the encoder.

    Attributes:
        name: short key used in reports (`source`, `preedit`, `unsharp`, `hqdn3d`, `tune`).
        description: what it does, for the report.
        vf: FFmpeg filter applied at encode time (None for none).
        tune: use the codec's perceptual tuning args.
        preedited: encode the pre-edited frames instead of the reference.
    """

    name: str
    description: str
    vf: Optional[str] = None
    tune: bool = False
    preedited: bool = False


VARIANTS: Dict[str, Variant] = {
    "source": Variant("source", "plain encode of the source (anchor)"),
    "preedit": Variant("preedit", "pre-edited by the model, then plain encode", preedited=True),
    "unsharp": Variant("unsharp", "FFmpeg unsharp=5:5:1.0:5:5:0.0 luma sharpening (VMAF-inflating trick)",
                       vf="unsharp=5:5:1.0:5:5:0.0"),
    "hqdn3d": Variant("hqdn3d", "FFmpeg hqdn3d=4:3:6:4.5 denoise", vf="hqdn3d=4:3:6:4.5"),
    "tune": Variant("tune", "the codec's own perceptual tuning (see codec table)", tune=True),
}  # fmt: skip


def get_variant(name: str) -> Variant:
    """Look up a variant; `UsageError` lists the valid choices."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UsageError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from None
