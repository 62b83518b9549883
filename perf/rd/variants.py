"""Variants and bitstreams of the evaluation: how frames are prepared, encoder probes, bitstream size.

```
 variant (source | preedit | unsharp | hqdn3d | tune) ─> preedit.codecs.ffmpeg_argv(...) ─> stream
                          (libx265 .hevc | libx264 .264 | libsvtav1 .obu | *_nvenc)
 elementary stream ─> video_bytes() = size without SEI NAL units (encoder info strings)
```

The codec table itself (ladders, presets, perceptual tunings) is `preedit.codecs.CODECS`. Ladders
are CRF values (constant quality, so each encoder's adaptive quantisation and psycho-visual tools
stay on as users run them); override with `--ladder codec=v1,v2,...`.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from preedit.codecs import ES_MUXER, get_codec
from preedit.errors import EncodeError, UsageError
from preedit.quality.ffmpeg import ffmpeg_exe, parse_version, run_command

log = logging.getLogger(__name__)


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


def _probe_encode(name: str, loglevel: str) -> tuple:
    """A 2-frame test encode with encoder `name`: (stderr, first 4 kB of the bitstream)."""
    codec = get_codec(name)
    with tempfile.TemporaryDirectory(prefix="preedit_enc_") as tmp:
        out = Path(tmp) / f"t{ES_MUXER[codec.family][1]}"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, "-f", "lavfi", "-i",
               "testsrc2=size=256x144:rate=25:duration=0.08", "-c:v", codec.name, "-f",
               ES_MUXER[codec.family][0], str(out)]  # fmt: skip
        proc = run_command(cmd, timeout_s=60, error=EncodeError, what=f"{name} probe")
        return proc.stderr, out.read_bytes()[:4096]


@functools.lru_cache(maxsize=None)
def encoder_available(name: str) -> bool:
    """True when a 2-frame test encode with `name` succeeds (NVENC needs a working GPU and driver)."""
    try:
        _probe_encode(name, "error")
    except EncodeError as exc:
        log.info("encoder %s unavailable: %s", name, exc)
        return False
    return True


@functools.lru_cache(maxsize=None)
def encoder_version(name: str) -> str:
    """Encoder library version string (from a tiny test encode's log or bitstream)."""
    try:
        stderr, head = _probe_encode(name, "info")
    except EncodeError:
        return "unavailable"
    text = stderr + head.decode("latin-1")
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
        bit_depth: the encode's bit depth; None: the reference's (10 for a 10-bit source).
    """

    name: str
    description: str
    vf: Optional[str] = None
    tune: bool = False
    preedited: bool = False
    bit_depth: Optional[int] = None


VARIANTS: Dict[str, Variant] = {
    "source": Variant("source", "plain encode of the source (anchor)"),
    "preedit": Variant("preedit", "pre-edited by the model, then plain encode", preedited=True),
    "unsharp": Variant("unsharp", "FFmpeg unsharp=5:5:1.0:5:5:0.0 luma sharpening (VMAF-inflating trick)",
                       vf="unsharp=5:5:1.0:5:5:0.0"),
    "hqdn3d": Variant("hqdn3d", "FFmpeg hqdn3d=4:3:6:4.5 denoise", vf="hqdn3d=4:3:6:4.5"),
    "tune": Variant("tune", "the codec's own perceptual tuning (see codec table)", tune=True),
    # The banding-prone alternative to a 10-bit encode: the source rounded to 8 bits ((v + 2) >> 2,
    # no dither, as `preedit run --bit-depth 8`), encoded 8-bit, scored against the 10-bit source.
    "8bit": Variant("8bit", "the source rounded to 8 bits and encoded 8-bit (10-bit sources; = source on 8-bit ones)",
                    vf="scale=sws_dither=none,format=yuv420p", bit_depth=8),
}  # fmt: skip


def bitstream_pix_fmt(path: Path) -> str:
    """Pixel format the decoder reports for an elementary stream (`yuv420p10le` for Main10 / AV1 10-bit)."""
    import av

    try:
        with av.open(str(path)) as c:
            fmt = c.streams.video[0].codec_context.format
            return fmt.name if fmt is not None else "unknown"
    except (av.error.FFmpegError, IndexError) as exc:
        raise EncodeError(f"cannot read back {path.name}: {exc}") from None


def get_variant(name: str) -> Variant:
    """Look up a variant; `UsageError` lists the valid choices."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UsageError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from None
