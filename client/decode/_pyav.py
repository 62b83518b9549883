"""CPU decoder: any FFmpeg-readable input (files, udp://, raw .yuv; PyAV has no SRT) → limited-range NV12.

```
 input ──PyAV demux──> video packets ──decode──> AVFrame (any pix_fmt, any range, 8/10-bit)
   │                                                │ 10-bit / 4:2:2 / RGB → yuv420p (warned)
   │                                                │ odd W or H → cropped to even (warned)
   │                                                │ full range → limited (restored on output)
   │                                                v
   └── audio packets (kept for remux) ──────────> Frame(nv12 uint8 [H*3/2, W], pts, time_base)
```
Raw `.yuv` files carry their geometry in the name: `name_320x192_12fps.yuv`,
`name_480x270_yuv420p10le.yuv` (frame rate defaults to 25 fps when absent).
"""

from __future__ import annotations

import dataclasses

import logging
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import av
import numpy as np

from preedit.client import bitdepth, telemetry
from preedit.client.interfaces import Frame, StreamInfo
from preedit.color import interleave_uv_into, nv12_full_to_limited
from preedit.errors import InputError, StreamError
from preedit.sched import usable_cores

log = logging.getLogger(__name__)

DIRECT_FORMATS = ("yuv420p", "yuvj420p")
#: Fewest cores at which the CPU decoder adds FFmpeg frame threads (thread type AUTO); below it,
#: slice threads only (issue 14). On a small box the encoder's and the server's threads already fill
#: the cores, and frame threading costs ~20 % more decode CPU (720p H.264: 1.5 vs 1.25 ms a frame)
#: for parallelism nothing can use; the decoded pictures are the same either way.
FRAME_THREADS_MIN_CORES = 5
MAX_DECODE_ERRORS = 25
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(source: str) -> bool:
    return bool(_URL.match(str(source)))


@dataclass(frozen=True)
class RawGeometry:
    """Geometry of a headerless raw video file, read from its name."""

    width: int
    height: int
    fps: Fraction
    pix_fmt: str


def parse_raw_name(name: str, default_fps: int = 25) -> Optional[RawGeometry]:
    """`clip_320x192_12fps.yuv` → RawGeometry(320, 192, 12, "yuv420p"); None without a `WxH` token."""
    stem = Path(name).name
    size = re.search(r"(?:^|[_.-])(\d{2,5})x(\d{2,5})(?=[_.-]|$)", stem)
    if not size:
        return None
    fps = re.search(r"(?:^|[_.-])(\d+(?:\.\d+)?)(?:fps|hz)(?=[_.-]|$)", stem, re.IGNORECASE)
    fmt = re.search(r"(?:^|[_.-])(yuv4[24][024]p(?:1[02]le)?|nv12|p010le)(?=[_.-]|$)", stem)
    return RawGeometry(int(size.group(1)), int(size.group(2)),
                       Fraction(fps.group(1)) if fps else Fraction(default_fps),
                       fmt.group(1) if fmt else "yuv420p")


def decoder_thread_type(cores: int) -> str:
    """FFmpeg thread type of the CPU decoder on a machine with `cores` usable cores (pure)."""
    return "AUTO" if cores >= FRAME_THREADS_MIN_CORES else "SLICE"


def _plane(frame, i: int, height: int, width: int) -> np.ndarray:
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:height, :width]


def yuv420p_to_nv12(frame, width: int, height: int) -> np.ndarray:
    """An 8-bit yuv420p/yuvj420p AVFrame → NV12 uint8 `[height*3/2, width]` (crops to `width`x`height`)."""
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = _plane(frame, 0, height, width)
    interleave_uv_into(_plane(frame, 1, height // 2, width // 2), _plane(frame, 2, height // 2, width // 2),
                       out[height:])
    return out


def _signal_of(frame):
    """The input's colour signal; an RGB source is converted with `source_matrix`, so it is tagged so."""
    sig = bitdepth.signal_of(frame)
    if frame.format.is_rgb:
        sig = dataclasses.replace(sig, matrix={"bt709": 1, "bt601": 6}[source_matrix(frame)])
    return sig


def source_matrix(frame) -> str:
    """The YUV matrix of `frame`: as tagged (BT.709 / BT.601), else FFmpeg's convention for an
    unspecified one (RGB sources too): BT.601 below 720 lines, BT.709 from 720."""
    tagged = {1: "bt709", 5: "bt601", 6: "bt601"}.get(int(frame.colorspace or 0))
    if tagged:
        return tagged
    if int(frame.colorspace or 0) in (0, 2):  # RGB / unspecified
        return "bt709" if frame.height >= 720 else "bt601"
    return "bt709"


_SWS_MATRIX = {"bt709": "itu709", "bt601": "itu601"}


def is_full_range(frame) -> bool:
    return frame.format.name.startswith("yuvj") or int(frame.color_range or 0) == 2


def open_input(source: str, open_timeout_s: float = 10.0) -> Tuple["av.container.InputContainer", Optional[RawGeometry]]:
    """Open a file, raw `.yuv` (geometry from its name) or FFmpeg URL with PyAV: (container, raw geometry or None).

    URLs get `open_timeout_s` as their open and read timeout. Every failure is one `InputError` line.
    """
    source = str(source)
    kwargs: dict = {}
    raw = None
    if not is_url(source):
        if not os.path.exists(source):
            raise InputError(f"input not found: {source}")
        if os.path.isdir(source):
            raise InputError(f"input is a directory, not a video: {source}")
        if source.lower().endswith(".yuv"):
            raw = parse_raw_name(source)
            if raw is None:
                raise InputError(f"raw .yuv input needs its geometry in the file name, e.g. "
                                 f"clip_640x360_30fps.yuv or clip_640x360_yuv420p10le.yuv: {source}")
            kwargs = dict(format="rawvideo", options={"video_size": f"{raw.width}x{raw.height}",
                                                      "pixel_format": raw.pix_fmt,
                                                      "framerate": str(raw.fps)})
    else:
        kwargs = dict(timeout=(open_timeout_s, open_timeout_s))
    try:
        return av.open(source, **kwargs), raw
    except av.error.FileNotFoundError:
        raise InputError(f"input not found: {source}") from None
    except av.error.ExitError:  # the open/read timeout fired: a live source that never sent
        raise InputError(f"no data from {source} within {open_timeout_s:g} s "
                         f"(--read-timeout-s {open_timeout_s:g})") from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot open {source} as video: {_av_message(exc)}") from None


class PyAvDecoder:
    """Decode one input with PyAV into limited-range NV12 `Frame`s (see module docstring).

    Args:
        source: file path or FFmpeg URL.
        realtime: pace file input at its native frame rate (like `ffmpeg -re`), to rehearse live.
        max_frames: stop after this many frames (a segment of the input; no truncation check).
        open_timeout_s: network open / read timeout for URLs; a live source silent this long after
            its first frame has ended (UDP has no end-of-stream signal).
    """

    def __init__(self, source: str, realtime: bool = False, open_timeout_s: float = 10.0,
                 max_frames: Optional[int] = None) -> None:
        self.max_frames = max_frames
        self._av = av
        self.source = str(source)
        self.realtime = realtime
        self.decode_errors = 0
        self.pending_audio: List = []
        self._warned: set = set()
        self.read_timeout_s = open_timeout_s
        self.container, raw = open_input(self.source, open_timeout_s)
        try:
            self._setup(raw)
        except BaseException:
            self.container.close()
            raise

    def _setup(self, raw: Optional[RawGeometry]) -> None:
        streams = self.container.streams
        if not streams.video:
            kinds = sorted({s.type for s in streams}) or ["none"]
            raise InputError(f"{self.source} has no video stream (streams: {', '.join(kinds)})")
        self.stream = streams.video[0]
        self.stream.thread_type = decoder_thread_type(usable_cores())
        self.audio_streams = list(streams.audio)
        self._packets = self.container.demux(self.stream, *self.audio_streams)
        self._frames = self._decoded_frames()
        first = next(self._frames, None)
        if first is None:
            raise InputError(f"{self.source}: no decodable video frames")
        self._first = first
        cc = self.stream.codec_context
        width, height = first.width, first.height
        self.crop = (width & ~1, height & ~1)
        if self.crop != (width, height):
            log.warning("%s: odd size %dx%d cropped to %dx%d (4:2:0 encoders need even sizes)",
                        self.source, width, height, *self.crop)
        bit_depth = _bit_depth(first.format)
        # 10-bit limited range: kept at 10 bits (model sees the 8-bit view, see client/bitdepth.py).
        self.ten_bit = bitdepth.keeps_10_bits(first)
        if bit_depth > 8 and not self.ten_bit:
            log.warning("%s: %d-bit input (%s) converted to 8-bit for the 8-bit model and encoder",
                        self.source, bit_depth, first.format.name)
        elif not self.ten_bit and first.format.name not in DIRECT_FORMATS:
            log.warning("%s: pixel format %s converted to yuv420p", self.source, first.format.name)
        rotation = int(getattr(first, "rotation", 0) or 0)
        if rotation:
            log.info("%s: rotation metadata (%d degrees) carried to the output as a display matrix",
                     self.source, rotation)
        rate = self.stream.average_rate or self.stream.guessed_rate or (raw.fps if raw else None)
        hint = self.stream.frames or None
        self.info = StreamInfo(
            width=self.crop[0], height=self.crop[1], time_base=self.stream.time_base or Fraction(1, 90000),
            average_rate=Fraction(rate) if rate else None,
            color_range="full" if is_full_range(first) else "limited",
            color_matrix=source_matrix(first),
            pix_fmt=first.format.name, bit_depth=bit_depth, frame_count_hint=hint,
            codec_name=cc.name or "", rotation=rotation, signal=_signal_of(first),
        )
        self.sample_aspect_ratio = self.stream.sample_aspect_ratio or cc.sample_aspect_ratio
        if self.stream.duration and self.stream.time_base:
            self.duration_s: Optional[float] = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration and raw is None:  # Matroska/WebM: container-level duration only
            self.duration_s = self.container.duration / 1e6
        else:
            self.duration_s = None

    # -- decoding ----------------------------------------------------------------------------
    def _decoded_frames(self) -> Iterator:
        av = self._av
        decoded = 0
        try:
            for packet in self._packets:
                if packet.stream.type == "audio":
                    if packet.size:
                        self.pending_audio.append(packet)
                    continue
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.UndefinedError) as exc:
                    self._conceal(exc, decoded)
                    continue
                for frame in frames:
                    decoded += 1
                    yield frame
            # demux() ends with an empty packet whose decode() flushes the reordering buffer.
        except av.error.EOFError:
            return
        except av.error.ExitError:  # PyAV's read timeout interrupted a network read
            if is_url(self.source) and decoded:
                log.warning("%s: no data for %.0f s after %d frames; treating the silence as end of stream",
                            self.source, self.read_timeout_s, decoded)
                return
            raise InputError(f"no data from {self.source} within {self.read_timeout_s:.0f} s") from None
        except av.error.FFmpegError as exc:
            if decoded == 0:
                raise InputError(f"cannot decode {self.source}: {_av_message(exc)}") from None
            raise StreamError(f"input stream broke after {decoded} frames: {_av_message(exc)}") from None

    def _conceal(self, exc, decoded: int) -> None:
        if decoded == 0 and is_url(self.source):
            # Joining a live stream mid-GOP: packets before the first key frame do not decode.
            log.debug("%s: waiting for a decodable key frame (%s)", self.source, _av_message(exc))
            return
        self.decode_errors += 1
        telemetry.count_error("stream")
        if decoded == 0 and self.decode_errors >= 3:
            raise InputError(f"cannot decode {self.source}: {_av_message(exc)}")
        if self.decode_errors > MAX_DECODE_ERRORS:
            raise StreamError(f"input stream corrupt: {self.decode_errors} undecodable packets after "
                              f"{decoded} frames ({_av_message(exc)})")
        log.warning("%s: skipped an undecodable packet after frame %d: %s", self.source, decoded, _av_message(exc))

    def to_nv12(self, frame) -> Tuple[np.ndarray, bool]:
        """One AVFrame → (limited-range NV12 uint8 `[H*3/2, W]`, whether the source was full range)."""
        full = is_full_range(frame)
        if (frame.width & ~1, frame.height & ~1) != self.crop:
            raise StreamError(f"frame size changed mid-stream from {self.crop[0]}x{self.crop[1]} to "
                              f"{frame.width}x{frame.height}; split the input at the change")
        if frame.format.name not in DIRECT_FORMATS:
            rng = 2 if full else 1
            extra = {"dst_colorspace": _SWS_MATRIX[self.info.color_matrix]} if frame.format.is_rgb else {}
            frame = frame.reformat(format="yuv420p", src_color_range=rng, dst_color_range=rng, **extra)
        width, height = self.crop
        nv12 = yuv420p_to_nv12(frame, width, height)
        return (nv12_full_to_limited(nv12) if full else nv12), full

    def to_planes10(self, frame) -> bitdepth.Planes:
        """One 10-bit AVFrame → uint16 yuv420p10 planes (cropped), 4:2:2 / P010 reformatted first."""
        if (frame.width & ~1, frame.height & ~1) != self.crop:
            raise StreamError(f"frame size changed mid-stream from {self.crop[0]}x{self.crop[1]} to "
                              f"{frame.width}x{frame.height}; split the input at the change")
        if frame.format.name != "yuv420p10le":
            frame = frame.reformat(format="yuv420p10le", src_color_range=1, dst_color_range=1)
        return bitdepth.planes10_of(frame, *self.crop)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        t_start = time.monotonic()
        pts0: Optional[float] = None
        time_base = self.info.time_base
        frame_step = (1 / self.info.average_rate / time_base) if self.info.average_rate else None
        last_pts: Optional[int] = None
        frames = self._frames_with_first()
        while self.max_frames is None or index < self.max_frames:
            t0 = time.perf_counter_ns()
            av_frame = next(frames, None)
            if av_frame is None:
                break
            planes10 = self.to_planes10(av_frame) if self.ten_bit else None
            nv12, full = (bitdepth.nv12_view(planes10), False) if planes10 else self.to_nv12(av_frame)
            pts = av_frame.pts
            if pts is None:
                pts = int(round(index * frame_step)) if frame_step else index
            if self.realtime:
                pts_s = float(pts * time_base)
                pts0 = pts_s if pts0 is None else pts0
                wait = (pts_s - pts0) - (time.monotonic() - t_start)
                if wait > 0:
                    time.sleep(wait)
            t1 = time.perf_counter_ns()
            frame = Frame(index=index, pts=pts, time_base=time_base, nv12=nv12,
                          duration=getattr(av_frame, "duration", None) or None, t_decoded_ns=t1,
                          meta={"full_range": full, "decode_ns": t1 - t0})
            if planes10:
                frame.meta["yuv10"] = planes10
            if self.pending_audio:
                frame.meta["audio"], self.pending_audio = self.pending_audio, []
            last_pts = pts
            index += 1
            yield frame
        if self.max_frames is None or index < self.max_frames:
            self._check_complete(index, last_pts)

    def _frames_with_first(self) -> Iterator:
        first, self._first = self._first, None
        if first is not None:
            yield first
        yield from self._frames

    def _check_complete(self, count: int, last_pts: Optional[int]) -> None:
        hint = self.info.frame_count_hint
        if hint and count < hint:
            raise StreamError(f"input ended early: decoded {count} of {hint} frames (truncated or corrupt)")
        if not hint and self.duration_s and last_pts is not None and self.info.average_rate:
            end_s = float(last_pts * self.info.time_base) + float(1 / self.info.average_rate)
            start_s = float((self.stream.start_time or 0) * self.info.time_base)
            if end_s - start_s < self.duration_s - max(0.5, 3 / float(self.info.average_rate)):
                raise StreamError(f"input ended early at {end_s - start_s:.2f} s of {self.duration_s:.2f} s "
                                  f"(truncated or corrupt)")

    def take_audio(self) -> List:
        """Audio packets demuxed after the last video frame."""
        packets, self.pending_audio = self.pending_audio, []
        return packets

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001
            pass


def _bit_depth(fmt) -> int:
    try:
        return max(int(c.bits) for c in fmt.components)
    except Exception:  # noqa: BLE001
        return 10 if "10" in fmt.name else 8


def _av_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]
