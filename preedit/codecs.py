"""The one codec vocabulary: names, families, rate ranges, the model-QP map and the option builders.

```
 family (hevc | av1 | h264) ──ENCODER_OF──> FFmpeg software encoder (libx265 | libsvtav1 | libx264)
 CodecSpec (CODECS[name]): family, R-D ladder, preset, perceptual tuning, hardware (NVENC)
 (family, qp | crf, preset) ─> pyav_options()  ─> PyAV stream options  (client, training round trips)
 (CodecSpec, src, out, crf) ─> ffmpeg_argv()   ─> FFmpeg argv          (R-D evaluation)
 (family, value, mode)      ─> model_qp()      ─> the model's QP input (x265 scale; AV1 via preedit.qp)
```

Every stage that names a codec imports it from here: the client (`--codec`), the evaluation
(`--codecs`), the training round trips and proxy, and the GPU capability probe.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from preedit import qp as qp_scale
from preedit.errors import UsageError

# Bitstream families, in the order the GPU capability probe reports them.
FAMILIES: Tuple[str, ...] = ("h264", "hevc", "av1")
# The client's `--codec` family → the FFmpeg software encoder it drives.
ENCODER_OF: Dict[str, str] = {"hevc": "libx265", "av1": "libsvtav1", "h264": "libx264"}
# Software encoders the training stage round-trips frames through (proxy check, real-codec forward).
ROUNDTRIP_ENCODERS: Tuple[str, ...] = ("libx265", "libsvtav1")
# Quantizer families the differentiable training proxy models.
PROXY_FAMILIES: Tuple[str, ...] = ("hevc", "av1")

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
SVT_AV1_PRESETS = tuple(str(i) for i in range(14))
DEFAULT_CRF: Dict[str, int] = {"h264": 23, "hevc": 28, "av1": 35}
DEFAULT_PRESET: Dict[str, str] = {"h264": "medium", "hevc": "medium", "av1": "8"}
# Largest QP/CRF (AV1: quantizer 0..63) of each family; the smallest is 0.
MAX_QUANTIZER: Dict[str, int] = {"h264": 51, "hevc": 51, "av1": 63}
# Annex-B / OBU elementary stream muxer and file suffix of each family.
ES_MUXER: Dict[str, Tuple[str, str]] = {"hevc": ("hevc", ".hevc"), "h264": ("h264", ".264"), "av1": ("obu", ".obu")}


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
        if self.family not in FAMILIES:
            raise UsageError(f"codec family {self.family!r} must be one of {', '.join(FAMILIES)}")
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
# NVENC encoder names the doctor looks for beside the software ones.
NVENC_ENCODERS: Tuple[str, ...] = ("hevc_nvenc", "av1_nvenc", "h264_nvenc")
# Other spellings of a family (encoder and stream names) the GPU back-end planner accepts.
FAMILY_ALIASES: Dict[str, str] = {
    "h265": "hevc", "x265": "hevc", "avc": "h264", "x264": "h264", "libaom-av1": "av1",
    **{name: family for family, name in ENCODER_OF.items()},
    **{name: name.split("_")[0] for name in NVENC_ENCODERS},
}  # fmt: skip


def get_codec(name: str) -> CodecSpec:
    """Look up a codec by FFmpeg encoder name; `UsageError` lists the valid choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}") from None


def family_of(encoder: str) -> str:
    """Bitstream family of an FFmpeg encoder name (`libsvtav1` → `av1`)."""
    if encoder in CODECS:
        return CODECS[encoder].family
    for family, name in ENCODER_OF.items():
        if name == encoder:
            return family
    raise UsageError(f"unknown encoder {encoder!r}; choose from {', '.join(CODECS)}")


def bitstream_suffix(codec: CodecSpec) -> str:
    """File suffix of the elementary stream this codec's command writes."""
    return ES_MUXER[codec.family][1]


def model_qp(family: str, value: float, mode: str = "crf", qp_range: Optional[Tuple[float, float]] = None) -> float:
    """The model's QP input for a rate-control value of a codec family (`preedit.qp.model_qp`:
    AV1 quantizer → x265 QP of equal quality, per rate-control `mode`), clamped to `qp_range`."""
    qp = float(qp_scale.model_qp(family, value, mode))
    return qp if qp_range is None else float(min(max(qp, qp_range[0]), qp_range[1]))


def pyav_options(family: str, *, qp: Optional[float] = None, crf: Optional[float] = None,
                 preset: Optional[str] = None) -> Dict[str, str]:
    """PyAV (FFmpeg AVOptions) encoder options for a constant-QP, CRF or (neither) bitrate encode.

    Args:
        family: `hevc` (libx265), `av1` (libsvtav1) or `h264` (libx264).
        qp: constant quantizer (x26x QP 0..51, AV1 quantizer 0..63); SVT-AV1 turns its adaptive
            quantisation off so the quantizer is fixed (`rc=0:qp=q:aq-mode=0`).
        crf: constant rate factor (the encoder's adaptive quantisation stays on).
        preset: x26x preset name or SVT-AV1 preset number; the family default when None (SVT-AV1
            falls back to its default for an x26x name, so one `preset` can serve both encoders).

    Returns:
        options dict; the caller sets a bit rate itself when neither `qp` nor `crf` is given.
    """
    if family not in ENCODER_OF:
        raise UsageError(f"unknown codec {family!r}; valid: {', '.join(ENCODER_OF)}")
    if qp is not None and crf is not None:
        raise UsageError("give at most one of qp and crf")
    name = str(preset or DEFAULT_PRESET[family])
    if family == "av1" and not name.isdigit():
        name = DEFAULT_PRESET["av1"]
    opts: Dict[str, str] = {"preset": name}
    x265_params = ["log-level=error"]
    if qp is not None:
        if family == "hevc":
            x265_params.insert(0, f"qp={int(qp)}")
        elif family == "av1":
            opts["svtav1-params"] = f"rc=0:qp={int(qp)}:aq-mode=0"
        else:
            opts["qp"] = str(int(qp))
    elif crf is not None:
        opts["crf"] = f"{crf:g}"
    if family == "hevc":
        opts["x265-params"] = ":".join(x265_params)
    return opts


def ffmpeg_argv(codec: CodecSpec, src: Path, out: Path, value: float, *, preset: Optional[str] = None,
                vf: Optional[str] = None, tune: bool = False, ffmpeg: Optional[str] = None,
                bit_depth: int = 8) -> List[str]:
    """FFmpeg argv encoding `src` (4:2:0 y4m, 8- or 10-bit) at one CRF/CQ point into an elementary stream.

    Args:
        codec: encoder spec.
        src: input .y4m (reference or pre-edited frames).
        out: output elementary stream path (`bitstream_suffix(codec)`).
        value: CRF (software, through `pyav_options`) or CQ (NVENC) value.
        preset: speed preset; the codec default when None.
        vf: optional FFmpeg video filter applied before encoding (e.g. `unsharp=5:5:1.0`).
        tune: add the codec's perceptual tuning args.
        ffmpeg: FFmpeg executable; defaults to imageio-ffmpeg's.
        bit_depth: the encode's: 8 (`yuv420p`) or 10 (`yuv420p10le`: Main10, AV1 10-bit, High10;
            NVENC `p010le`).

    Returns:
        argv list (no shell).
    """
    if bit_depth not in (8, 10):
        raise UsageError(f"bit_depth must be 8 or 10, got {bit_depth}")
    if ffmpeg is None:
        from preedit.quality.ffmpeg import ffmpeg_exe  # lazy: imageio-ffmpeg only when encoding

        ffmpeg = ffmpeg_exe()
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src)]
    if vf:
        cmd += ["-vf", vf]
    pix_fmt = "yuv420p" if bit_depth == 8 else "p010le" if codec.hardware else "yuv420p10le"
    cmd += ["-an", "-c:v", codec.name, "-preset", preset or codec.preset, "-pix_fmt", pix_fmt, "-color_range", "tv"]
    params = list(codec.tune_args) if tune else []
    if codec.hardware:
        cmd += ["-rc", "vbr", "-cq", f"{value:g}", "-b:v", "0"]
    else:
        opts = pyav_options(codec.family, crf=value, preset=preset or codec.preset)
        cmd += ["-crf", opts["crf"]]
        if codec.family == "hevc":
            # info=0: no encoder-settings SEI; the codec's tuning joins the one -x265-params.
            extra = opts["x265-params"] + ":info=0"
            if params:
                extra += ":" + params[1]
                params = []
            cmd += ["-x265-params", extra]
    cmd += params
    cmd += ["-f", ES_MUXER[codec.family][0], str(out)]
    return cmd


# ---- encoder controls (`preedit run --keyint/--maxrate/--bufsize/--tune/--<lib>-params`, `preedit ladder`) ----
# The encoder's own pass-through option for `key=value:key=value` parameter strings.
PARAMS_OPTION: Dict[str, str] = {"hevc": "x265-params", "av1": "svtav1-params", "h264": "x264-params"}
# `--tune` values: x264/x265 tune names; SVT-AV1's numeric `tune` (0 VQ, 1 PSNR, 2 SSIM).
TUNES: Dict[str, Tuple[str, ...]] = {
    "h264": ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
    "hevc": ("psnr", "ssim", "grain", "zerolatency", "fastdecode", "animation"),
    "av1": ("0", "1", "2"),
}


def control_options(family: str, opts: Dict[str, str], *, keyint: Optional[int] = None,
                    maxrate_kbps: Optional[float] = None, bufsize_kbps: Optional[float] = None,
                    tune: Optional[str] = None, params: Optional[str] = None,
                    closed_gop: bool = False, bitrate_kbps: Optional[float] = None) -> Dict[str, str]:
    """`opts` (from `pyav_options`) plus GOP, VBV, tune and pass-through encoder parameters.

    keyint/maxrate/bufsize use FFmpeg's generic AVCodecContext options (`g`, `maxrate`, `bufsize`),
    which libx264, libx265 (keyint-max, vbv-maxrate, vbv-bufsize) and libsvtav1 (keyint, mbr: capped
    CRF) all read. `closed_gop` makes every keyframe an IDR at exactly `keyint` frames with scene-cut
    keyframes off, so renditions encoded separately cut at the same timestamps. `params` joins the
    encoder's own `x265-params` / `svtav1-params` / `x264-params` string (after ours, so it wins).
    SVT-AV1 caps only CRF ("Max Bitrate only supported with CRF mode": it refuses to open): with a
    `bitrate_kbps` target its cap becomes `overshoot-pct`, the most VBR may exceed the target by.
    """
    out = dict(opts)
    extra: List[str] = []
    if keyint is not None:
        out["g"] = str(int(keyint))
    if maxrate_kbps is not None and family == "av1" and bitrate_kbps:
        extra.append(f"overshoot-pct={min(100, max(0, round(100 * (maxrate_kbps / bitrate_kbps - 1))))}")
    elif maxrate_kbps is not None:
        out["maxrate"] = f"{int(maxrate_kbps * 1000)}"
    if bufsize_kbps is not None:
        out["bufsize"] = f"{int(bufsize_kbps * 1000)}"
    if tune is not None:
        if family == "av1":
            extra.append(f"tune={tune}")
        else:
            out["tune"] = tune
    if closed_gop:
        if keyint is None:
            raise UsageError("a closed GOP needs a keyint")
        k = int(keyint)
        if family == "hevc":
            extra += [f"keyint={k}", f"min-keyint={k}", "scenecut=0", "no-open-gop=1"]
        elif family == "h264":
            extra += [f"keyint={k}", f"min-keyint={k}", "scenecut=0", "open-gop=0"]
        else:
            extra += [f"keyint={k}", "irefresh-type=2", "scd=0"]
    if params:
        extra.append(params)
    if extra:
        key = PARAMS_OPTION[family]
        out[key] = ":".join(([out[key]] if out.get(key) else []) + extra)
    return out


def check_params(family: str, option: str, params: str) -> None:
    """Reject an encoder parameter string the encoder itself does not accept (`UsageError` naming `option`).

    The syntax is checked first (`key=value` pairs joined by `:`); then a 64×64 frame is encoded with
    the string and the encoder's own parser messages ("Unknown option", "Invalid value", "Error
    parsing option") are read back from FFmpeg's log.
    """
    import av  # lazy: av
    import av.logging  # lazy: av

    for item in params.split(":"):
        k, sep, v = item.partition("=")
        if not k or not all(c.isalnum() or c in "-_" for c in k) or (sep and not v):
            raise UsageError(f"{option}: bad entry {item!r} in {params!r} (want key=value:key=value)")
    before = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(True) as logs:
            out = av.open(io.BytesIO(), "w", format="matroska")
            try:
                stream = out.add_stream(ENCODER_OF[family], rate=25, options={PARAMS_OPTION[family]: ("log-level=error:" if family == "hevc" else "") + params})
                stream.width = stream.height = 64
                stream.pix_fmt = "yuv420p"
                frame = av.VideoFrame.from_ndarray(np.zeros((96, 64), np.uint8), format="yuv420p")
                for packet in list(stream.encode(frame)) + list(stream.encode()):
                    out.mux(packet)
            except (av.error.FFmpegError, ValueError) as exc:
                raise UsageError(f"{option}: {ENCODER_OF[family]} rejects {params!r}: {exc}") from None
            finally:
                out.close()
    finally:
        av.logging.set_level(before)
    bad = [msg.strip() for level, _name, msg in logs if level <= av.logging.WARNING
           and any(s in msg for s in ("Unknown option", "Invalid value", "Error parsing", "nvalid"))]
    if bad:
        raise UsageError(f"{option}: {ENCODER_OF[family]} rejects {params!r}: {bad[0]}")


def bitrate_model_qp(kbps: float, width: int, height: int, fps: float) -> float:
    """The model's QP hint (x265 scale) for a target bitrate, estimated from bits per pixel.

    x265 `medium` spends about 0.064 bit/pixel at QP 28 on typical 1080p content and roughly halves
    the rate per +5 QP, so QP ≈ 28 − 5·log2(bpp / 0.064), clamped to 12..51. A rough look-ahead-free
    estimate: it follows the rate and resolution each output actually gets, instead of a constant.
    """
    bpp = kbps * 1000.0 / max(1.0, width * height * max(fps, 1e-3))
    return float(min(51.0, max(12.0, 28.0 - 5.0 * math.log2(bpp / 0.064))))


# libavcodec's QP → "quality" factor of AV_PKT_DATA_QUALITY_STATS (FF_QP2LAMBDA).
FF_QP2LAMBDA = 118


def reported_qp(packet) -> Optional[float]:
    """The frame QP an encoder reported with an encoded packet, or None when it reported none.

    libx264, libx265 and libsvtav1 attach AV_PKT_DATA_QUALITY_STATS to each packet: a little-endian
    int32 quality (QP × FF_QP2LAMBDA; x26x QP 0..51, AV1 quantizer 0..63), then the picture type.
    """
    data = packet.get_sidedata("quality_stats") if packet.has_sidedata("quality_stats") else None
    if data is None:
        return None
    raw = bytes(data)
    if len(raw) < 4:
        return None
    return int.from_bytes(raw[:4], "little", signed=True) / FF_QP2LAMBDA


def followed_model_qp(family: str, reported_mean: float, qp_range: Optional[Tuple[float, float]] = None) -> float:
    """The model's QP hint for a rate-controlled encode whose frames reported `reported_mean` on
    average: the hint of the CRF encode that reports the same mean QP (`preedit.qp.reported_qp_to_crf`)."""
    crf = qp_scale.reported_qp_to_crf(family, reported_mean)
    if family == "av1":
        crf = min(max(crf, 0.0), 63.0)
    return model_qp(family, crf, "crf", qp_range)
