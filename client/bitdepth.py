"""10-bit sources through the 8-bit network, and HDR / colour signalling carried input → output.

```
 yuv420p10 planes (uint16, limited range) ──to8──> 8-bit NV12 view ──model──> edit8
        │                                                                     │
        └──────── out10 = clamp(in10 + 4·(edit8 − in8), 0, 1023) <────────────┘
```
The network keeps its 8-bit NV12 contract; the edit it makes (edit8 − in8) is applied to the
10-bit signal at 10 bits, so pixels the model leaves alone stay bit-identical to the source.
`to8` is a fixed rounding (`(v + 2) >> 2`, clipped to 255): the same view every time, so the
client can recompute in8 at encode time instead of carrying it.

`ColorSignal` holds the colour tags (primaries, transfer, matrix, range; FFmpeg enum values) and
HDR10 static metadata (mastering display colour volume, content light level) read from the first
decoded frame; `x265_params` / `svtav1_params` write them into the output bitstream.
`output_format(codec, source_bits, signal, asked)` is how one output is encoded (bit depth, pixel
format, encoder options and colour tags): `preedit run`'s encoder and every `preedit ladder`
rendition take it from there.
Pure functions of arrays, except `planes10_of` / `frame10_of` / `edit_frame10` (PyAV frames in and out).
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from preedit.color import nv12_pack, nv12_split

Planes = Tuple[np.ndarray, np.ndarray, np.ndarray]
MAX10 = 1023


def to8(plane10: np.ndarray) -> np.ndarray:
    """10-bit code values (uint16) → the 8-bit view: `(v + 2) >> 2`, clipped to 255."""
    return np.minimum((plane10.astype(np.uint16) + 2) >> 2, 255).astype(np.uint8)


def apply_edit(in10: np.ndarray, in8: np.ndarray, edit8: np.ndarray) -> np.ndarray:
    """`clamp(in10 + 4·(edit8 − in8), 0, 1023)` as uint16; where edit8 == in8 the result is in10."""
    delta = edit8.astype(np.int32) - in8.astype(np.int32)
    return np.clip(in10.astype(np.int32) + 4 * delta, 0, MAX10).astype(np.uint16)


def nv12_view(planes10: Planes) -> np.ndarray:
    """10-bit Y, U, V planes → the 8-bit NV12 `[H*3/2, W]` the model receives."""
    return nv12_pack(*(to8(p) for p in planes10))


def edit_planes10(planes10: Planes, edited_nv12: np.ndarray) -> Planes:
    """Apply the model's 8-bit edit (`edited_nv12`) to the 10-bit planes it was computed from."""
    edits = nv12_split(edited_nv12)
    return tuple(apply_edit(p, to8(p), e) for p, e in zip(planes10, edits))  # type: ignore[return-value]


def planes10_of(frame, width: int, height: int) -> Planes:
    """A yuv420p10le AVFrame → uint16 planes Y `[H, W]`, U, V `[H/2, W/2]` (copies; cropped)."""
    out = []
    for i, (h, w) in enumerate(((height, width), (height // 2, width // 2), (height // 2, width // 2))):
        plane = frame.planes[i]
        arr = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        out.append(np.ascontiguousarray(arr[:h, :w]))
    return tuple(out)  # type: ignore[return-value]


def frame10_of(planes10: Planes):
    """uint16 planes → a yuv420p10le `av.VideoFrame`."""
    import av  # lazy: av

    y = planes10[0]
    frame = av.VideoFrame(y.shape[1], y.shape[0], "yuv420p10le")
    for i, data in enumerate(planes10):
        plane = frame.planes[i]
        dst = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        dst[:, : data.shape[1]] = data
    return frame


def split_frame10(frame) -> Tuple[np.ndarray, Callable[[np.ndarray], object]]:
    """A yuv420p10le AVFrame as (its 8-bit NV12 view, a function taking the model's edit of that
    view to the edited yuv420p10le frame, the edit applied at 10 bits by `edit_planes10`, limited range)."""
    planes10 = planes10_of(frame, frame.width, frame.height)

    def finish(edited8: np.ndarray):
        out = frame10_of(edit_planes10(planes10, edited8))
        out.color_range = 1
        return out

    return nv12_view(planes10), finish


def edit_frame10(frame, run: Callable[[np.ndarray], np.ndarray]):
    """Pre-edit a yuv420p10le AVFrame: `run` maps the 8-bit NV12 view to the model's edit of it,
    applied at 10 bits (`edit_planes10`); returns a new yuv420p10le frame (limited range)."""
    view, finish = split_frame10(frame)
    return finish(run(view))


def bare_frame(frame):
    """A copy of a yuv420p / yuv420p10le frame's pixels and range without the input's side data
    (libx265 with a fixed keyint crashes on frames carrying the source's unregistered SEI)."""
    import av

    if frame.format.name == "yuv420p10le":
        out = frame10_of(planes10_of(frame, frame.width, frame.height))
    else:
        out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    out.color_range = frame.color_range
    return out


class _Decoded:
    """A packet decoded while peeking, replayed as one (`.stream`, `.decode()`)."""

    def __init__(self, stream, frames) -> None:
        self.stream, self._frames = stream, frames

    def decode(self):
        return self._frames


def peek_first_frame(packets: Iterator, video) -> Tuple[Optional[object], Iterator]:
    """Decode `packets` (a PyAV demux iterator) until stream `video` gives its first frame; returns
    that frame (None if none) and an iterator over every packet, the ones read so far replayed
    (already decoded), so a caller can choose its output format from the first frame and still
    encode every frame."""
    seen = []
    for packet in packets:
        frames = list(packet.decode())
        seen.append(_Decoded(packet.stream, frames))
        if packet.stream is video and frames:
            return frames[0], itertools.chain(seen, packets)
    return None, iter(seen)


def keeps_10_bits(frame) -> bool:
    """True when the 10-bit path takes a decoded frame: 10-bit limited-range YUV or P010 (else 8-bit)."""
    fmt = frame.format
    bits = max((int(c.bits) for c in fmt.components), default=8)
    full = fmt.name.startswith("yuvj") or int(frame.color_range or 0) == 2
    return bits == 10 and not full and fmt.name.startswith(("yuv4", "p010"))


# -- colour signalling and HDR10 static metadata -----------------------------------------------
# FFmpeg enum values → x265 / SVT-AV1 names (ITU-T H.273 code points; both encoders use them).
PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
             10: "smpte428", 11: "smpte431", 12: "smpte432"}
TRANSFERS = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}
MATRICES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc",
            10: "bt2020c"}
UNSPECIFIED = 2


@dataclass(frozen=True)
class ColorSignal:
    """Colour tags (FFmpeg enum values; 2 = unspecified) and HDR10 static metadata of a stream.

    `master_display`: x265 syntax `G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)` (chromaticity in 1/50000,
    luminance in 1/10000 cd/m²); `max_cll`: (MaxCLL, MaxFALL) in cd/m².
    """

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    color_range: int = 0  # 0 unspecified, 1 limited (tv), 2 full (pc)
    master_display: Optional[str] = None
    max_cll: Optional[Tuple[int, int]] = None

    @property
    def is_hdr(self) -> bool:
        return self.transfer in (16, 18) or self.master_display is not None


def _q(num: int, den: int, scale: int) -> int:
    return int(round(num * scale / den)) if den else 0


def parse_mastering_display(raw: bytes) -> Optional[str]:
    """FFmpeg `AVMasteringDisplayMetadata` bytes → x265 `master-display` string (None if incomplete)."""
    if len(raw) < 88:
        return None
    v = struct.unpack_from("<20i2i", raw)
    (rx, rxd, ry, ryd, gx, gxd, gy, gyd, bx, bxd, by, byd, wx, wxd, wy, wyd, mn, mnd, mx, mxd,
     has_primaries, has_luminance) = v
    if not (has_primaries and has_luminance):
        return None
    c = lambda n, d: _q(n, d, 50000)  # noqa: E731
    return (f"G({c(gx, gxd)},{c(gy, gyd)})B({c(bx, bxd)},{c(by, byd)})R({c(rx, rxd)},{c(ry, ryd)})"
            f"WP({c(wx, wxd)},{c(wy, wyd)})L({_q(mx, mxd, 10000)},{_q(mn, mnd, 10000)})")


def parse_content_light(raw: bytes) -> Optional[Tuple[int, int]]:
    """FFmpeg `AVContentLightMetadata` bytes → (MaxCLL, MaxFALL)."""
    if len(raw) < 8:
        return None
    max_cll, max_fall = struct.unpack_from("<2I", raw)
    return int(max_cll), int(max_fall)


def signal_of(frame) -> ColorSignal:
    """The colour tags and HDR10 side data of a decoded PyAV frame."""
    master = cll = None
    for sd in getattr(frame, "side_data", ()) or ():
        name = getattr(sd.type, "name", str(sd.type))
        if name == "MASTERING_DISPLAY_METADATA":
            master = parse_mastering_display(bytes(sd))
        elif name == "CONTENT_LIGHT_LEVEL":
            cll = parse_content_light(bytes(sd))
    return ColorSignal(primaries=int(frame.color_primaries or UNSPECIFIED), transfer=int(frame.color_trc or UNSPECIFIED),
                       matrix=int(frame.colorspace or UNSPECIFIED), color_range=int(frame.color_range or 0),
                       master_display=master, max_cll=cll)


def _colour_entries(sig: ColorSignal, keys: Tuple[str, str, str], by_name: bool) -> List[str]:
    """`key=value` entries for the primaries, transfer and matrix of `sig` that are specified; values
    by name (x265) or by their ITU-T H.273 number (SVT-AV1)."""
    parts = []
    for key, value, table in zip(keys, (sig.primaries, sig.transfer, sig.matrix), (PRIMARIES, TRANSFERS, MATRICES)):
        if value in table:
            parts.append(f"{key}={table[value] if by_name else value}")
    return parts


def x265_params(sig: ColorSignal) -> str:
    """x265 `-x265-params` entries carrying `sig` (VUI colour description and HDR10 SEI)."""
    parts = _colour_entries(sig, ("colorprim", "transfer", "colormatrix"), by_name=True)
    if sig.master_display:
        parts.append(f"master-display={sig.master_display}")
    if sig.max_cll:
        parts.append(f"max-cll={sig.max_cll[0]},{sig.max_cll[1]}")
    if sig.master_display or sig.max_cll:
        parts.append("hdr10=1")
    return ":".join(parts)


def svtav1_params(sig: ColorSignal) -> str:
    """SVT-AV1 `-svtav1-params` entries carrying `sig` (sequence header colour config + HDR10 OBUs)."""
    parts = _colour_entries(sig, ("color-primaries", "transfer-characteristics", "matrix-coefficients"), by_name=False)
    if sig.master_display:
        # SVT-AV1 takes the x265 syntax with chromaticities / luminances as decimals.
        nums = [int(n) for n in sig.master_display.replace("(", ",").replace(")", ",").split(",")
                if n.strip().isdigit()]
        g, b, r, wp, lum = nums[0:2], nums[2:4], nums[4:6], nums[6:8], nums[8:10]
        f = lambda xy: f"({xy[0] / 50000:.5f},{xy[1] / 50000:.5f})"  # noqa: E731
        parts.append(f"mastering-display=G{f(g)}B{f(b)}R{f(r)}WP{f(wp)}L({lum[0] / 10000:.4f},{lum[1] / 10000:.4f})")
    if sig.max_cll:
        parts.append(f"content-light={sig.max_cll[0]},{sig.max_cll[1]}")
    return ":".join(parts)


def merge_params(existing: str, extra: str) -> str:
    """Join two `key=value:key=value` parameter strings (`extra` appended)."""
    return ":".join(p for p in (existing, extra) if p)


# -- how one output is encoded: bit depth and the signal it carries ---------------------------------
@dataclass(frozen=True)
class OutputFormat:
    """Bit depth and colour signalling of one encoded output (a `run` output, a ladder rendition).

    `codec`: `hevc`, `av1`, `h264`, or `rawvideo` (y4m); `bits`: 8 or 10; `signal`: the input's
    `ColorSignal`, carried as it came (None: nothing to carry).
    """

    codec: str
    bits: int = 8
    signal: Optional[ColorSignal] = None

    @property
    def pix_fmt(self) -> str:
        return "yuv420p10le" if self.bits == 10 else "yuv420p"

    def encoder_options(self, opts: Dict[str, str]) -> Dict[str, str]:
        """`opts` with the colour description and HDR10 metadata joined into `x265-params` / `svtav1-params`."""
        if self.signal is None or self.codec not in ("hevc", "av1"):
            return dict(opts)
        key, build = ("x265-params", x265_params) if self.codec == "hevc" else ("svtav1-params", svtav1_params)
        out = {**opts, key: merge_params(opts.get(key, ""), build(self.signal))}
        return {k: v for k, v in out.items() if v}

    def tag(self, target) -> None:
        """Colour tags of the signal on a codec context or frame (unspecified stays unspecified)."""
        if self.signal is not None:
            target.color_primaries, target.color_trc = self.signal.primaries, self.signal.transfer
            target.colorspace = self.signal.matrix


def output_format(codec: str, source_bits: int, signal: Optional[ColorSignal] = None,
                  asked: Optional[int] = None) -> OutputFormat:
    """10 bits when the source is 10-bit and `codec` encodes 10-bit here (hevc, av1, y4m `rawvideo`;
    libx264 in PyAV's FFmpeg is 8-bit only), unless 8 is `asked` (`--bit-depth 8`); else 8."""
    ten = source_bits == 10 and asked != 8 and codec != "h264"
    return OutputFormat(codec, 10 if ten else 8, signal)
