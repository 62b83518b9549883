"""CPU encoder: NV12 frames → libx265 / libsvtav1 / libx264 → mp4 / mkv / ts, or raw y4m.

```
 Frame (uint8 NV12 [H*3/2, W], limited range, source pts/time_base)
   │ full-range source → back to full range, tagged full range
   v
 yuv420p AVFrame (pts kept) ──encoder──> packets ──mux──> OUT (.mp4 .mkv .ts)   + audio remuxed
                            └─────────── rawvideo ──────> OUT.y4m (uncompressed, range tagged)
                            └─ live: udp://HOST:PORT (MPEG-TS datagrams, sent as packets leave the encoder)
                                     OUT.m3u8 (HLS sliding window: fMP4 segments, old ones deleted,
                                               EXT-X-ENDLIST written when the run ends, however it ends)
```
`encoder_options` (pure) turns `EncoderSettings` into the FFmpeg encoder name and options;
`PyAvEncoder` does the I/O and always writes the trailer in `finish()`, also after errors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import av
import numpy as np

from preedit import codecs
from preedit.client import bitdepth
from preedit.client.interfaces import Frame, StreamInfo, as_numpy
from preedit.color import deinterleave_uv_into, nv12_limited_to_full
from preedit.sched import forbid_realtime
from preedit.errors import EncodeError, UsageError

log = logging.getLogger(__name__)

CONTAINERS: Dict[str, str] = {".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts", ".y4m": "yuv4mpegpipe",
                              ".m3u8": "hls"}
LIVE_SCHEMES: Dict[str, str] = {"udp": "mpegts"}  # network outputs (PyAV's FFmpeg has no SRT protocol)
UDP_TS_PACKET = 1316  # 7 × 188-byte TS packets per datagram
UNSUPPORTED = {("av1", ".ts"): "FFmpeg's MPEG-TS muxer cannot carry AV1; use .mp4 or .mkv"}
_MATRIX_TAGS = {"bt709": 1, "bt601": 6}


@dataclass(frozen=True)
class EncoderSettings:
    """Rate control for the output encoder; at most one of `crf`, `qp`, `bitrate_kbps`.

    `preset`: x264/x265 preset name, or SVT-AV1 preset 0..13 (lower is slower and better).
    """

    codec: str = "hevc"
    crf: Optional[float] = None
    qp: Optional[int] = None
    bitrate_kbps: Optional[float] = None
    preset: Optional[str] = None
    bit_depth: Optional[int] = None  # None: the input's (10-bit kept for hevc/av1); 8: always 8-bit
    # Encoder controls (preedit.codecs.control_options): GOP length in frames, VBV cap and buffer in
    # kbit/s, tune, the encoder's own pass-through parameter string, closed fixed GOP (ladders).
    keyint: Optional[int] = None
    maxrate_kbps: Optional[float] = None
    bufsize_kbps: Optional[float] = None
    tune: Optional[str] = None
    params: Optional[str] = None
    closed_gop: bool = False
    # Live HLS output (`-o DIR/live.m3u8`): segment length (also the GOP when `keyint` is not given)
    # and how many segments the sliding-window playlist lists (older segment files are deleted).
    hls_time_s: float = 2.0
    hls_list_size: int = 6

    def __post_init__(self) -> None:
        if self.bit_depth not in (None, 8, 10):
            raise UsageError(f"--bit-depth must be 8 or 10, got {self.bit_depth}")
        if self.codec not in codecs.ENCODER_OF:
            raise UsageError(f"unknown codec {self.codec!r}; valid: {', '.join(codecs.ENCODER_OF)}")
        given = [n for n in ("crf", "qp", "bitrate_kbps") if getattr(self, n) is not None]
        if len(given) > 1:
            raise UsageError(f"give at most one of --crf, --qp, --bitrate (got {', '.join(given)})")
        top = codecs.MAX_QUANTIZER[self.codec]
        if self.crf is not None and not 0 <= self.crf <= top:
            raise UsageError(f"--crf for {self.codec} must be in 0..{top}, got {self.crf}")
        if self.qp is not None and not 0 <= self.qp <= top:
            raise UsageError(f"--qp for {self.codec} must be in 0..{top}, got {self.qp}")
        if self.bitrate_kbps is not None and self.bitrate_kbps <= 0:
            raise UsageError(f"--bitrate must be positive (kbit/s), got {self.bitrate_kbps}")
        if self.preset is not None:
            valid = list(codecs.SVT_AV1_PRESETS if self.codec == "av1" else codecs.X26X_PRESETS)
            if str(self.preset) not in valid:
                raise UsageError(f"unknown preset {self.preset!r} for {self.codec}; valid: {', '.join(valid)}")
        if self.keyint is not None and self.keyint < 1:
            raise UsageError(f"--keyint must be >= 1 frame, got {self.keyint}")
        if self.closed_gop and self.keyint is None:
            raise UsageError("--closed-gop needs --keyint FRAMES (the fixed GOP length)")
        for name, value in (("--maxrate", self.maxrate_kbps), ("--bufsize", self.bufsize_kbps)):
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be positive (kbit/s), got {value}")
        if self.maxrate_kbps is not None and self.qp is not None:
            raise UsageError("--maxrate caps --crf or --bitrate, not a constant --qp")
        if self.bufsize_kbps is not None and self.maxrate_kbps is None and self.bitrate_kbps is None:
            raise UsageError("--bufsize needs --maxrate or --bitrate")
        if self.tune is not None and str(self.tune) not in codecs.TUNES[self.codec]:
            raise UsageError(f"--tune {self.tune!r} is not valid for {self.codec}; valid: {', '.join(codecs.TUNES[self.codec])}")
        if not (self.hls_time_s > 0 and math.isfinite(self.hls_time_s)):
            raise UsageError(f"--hls-time must be a positive number of seconds, got {self.hls_time_s}")
        if self.hls_list_size < 1:
            raise UsageError(f"--hls-list-size must be >= 1, got {self.hls_list_size}")
        if self.params:
            codecs.check_params(self.codec, "--" + codecs.PARAMS_OPTION[self.codec], self.params)


def encoder_options(settings: EncoderSettings) -> Tuple[str, Dict[str, str], Optional[int]]:
    """(FFmpeg encoder name, encoder options, bit_rate in bit/s or None) for `settings` (pure).

    The options come from `preedit.codecs.pyav_options` (the one "encode at QP / CRF" builder);
    without `qp`, `crf` or a bitrate the family's default CRF is used.
    """
    codec = settings.codec
    bit_rate = int(settings.bitrate_kbps * 1000) if settings.bitrate_kbps is not None else None
    crf = settings.crf
    if settings.qp is None and crf is None and bit_rate is None:
        crf = codecs.DEFAULT_CRF[codec]
    opts = codecs.pyav_options(codec, qp=settings.qp, crf=crf, preset=settings.preset)
    opts = codecs.control_options(codec, opts, keyint=settings.keyint, maxrate_kbps=settings.maxrate_kbps,
                                  bufsize_kbps=settings.bufsize_kbps, tune=settings.tune, params=settings.params,
                                  closed_gop=settings.closed_gop, bitrate_kbps=settings.bitrate_kbps)
    return codecs.ENCODER_OF[codec], opts, bit_rate


def model_qp(settings: EncoderSettings, info: Optional[StreamInfo] = None) -> Optional[float]:
    """The HEVC-style QP hint sent to the model, or None to use the model's default.

    `--qp`/`--crf` are on the QP scale for x264/x265 and sent as is; SVT-AV1's 0..63 values are
    mapped to the x265 QP of equal quality (`preedit.qp`, per rate-control mode); a bitrate target
    with the stream's `info` gives the bits-per-pixel estimate `preedit.codecs.bitrate_model_qp`
    (None without `info`).
    """
    if settings.qp is not None:
        value = float(settings.qp)
    elif settings.crf is not None:
        value = float(settings.crf)
    elif settings.bitrate_kbps is not None and info is not None:
        fps = float(info.average_rate) if info.average_rate else 25.0
        return codecs.bitrate_model_qp(settings.bitrate_kbps, info.width, info.height, fps)
    else:
        return None
    return codecs.model_qp(settings.codec, value, "qp" if settings.qp is not None else "crf")


class QpFollower:
    """The model's QP hint for one encode, following the QP the encoder actually uses.

    CRF / constant QP: the value itself (`model_qp`), never changed. A bitrate target: starts at the
    bits-per-pixel estimate, and at each `advance()` (the ladder calls it at every GOP start, i.e.
    every segment) moves to the hint of the mean frame QP the encoder reported
    (`preedit.codecs.reported_qp`) for the packets it returned since the last advance, mapped by
    `preedit.codecs.followed_model_qp`. Packets lag frames by the encoder's look-ahead, so the
    hint of segment k comes from the part of segment k-1 already encoded.
    """

    def __init__(self, settings: EncoderSettings, info: Optional[StreamInfo] = None) -> None:
        self.family = settings.codec
        self.qp = model_qp(settings, info)
        self.start = self.qp  # the hint before the encoder reported anything
        self.follows = settings.bitrate_kbps is not None and settings.crf is None and settings.qp is None
        self._window: List[float] = []
        self.history: List[Tuple[int, float]] = []  # (frame index the hint starts at, hint)

    def observe(self, packets: Sequence) -> Sequence:
        """Note the QP each packet reports; returns the packets."""
        if self.follows:
            for p in packets:
                q = codecs.reported_qp(p)
                if q is not None:
                    self._window.append(q)
        return packets

    def advance(self, at_frame: int) -> Optional[float]:
        """Move the hint, from frame `at_frame` on, to what the packets since the last advance
        reported (unchanged when there were none)."""
        if self.follows and self._window:
            self.qp = codecs.followed_model_qp(self.family, float(np.mean(self._window)))
            self._window = []
            self.history.append((at_frame, self.qp))
        return self.qp


def is_url(path: str) -> bool:
    return "://" in str(path)


def container_for(path: str, codec: str) -> str:
    """FFmpeg muxer for an output path (by extension) or network URL (by scheme), checked against the codec."""
    if is_url(path):
        scheme = urlsplit(str(path)).scheme.lower()
        if scheme not in LIVE_SCHEMES:
            raise UsageError(f"cannot send to {scheme}://: valid network outputs: udp://HOST:PORT (MPEG-TS); "
                             "SRT is not available in PyAV's FFmpeg")
        if not urlsplit(str(path)).port:
            raise UsageError(f"{path}: a network output needs a port (udp://HOST:PORT)")
        if codec == "av1":
            raise UsageError(f"cannot send av1 to {path}: {UNSUPPORTED[('av1', '.ts')]}")
        return LIVE_SCHEMES[scheme]
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise UsageError(f"unknown output extension {ext or '(none)'!r} for {path}; valid: {', '.join(CONTAINERS)}")
    if (codec, ext) in UNSUPPORTED:
        raise UsageError(f"cannot write {codec} to {ext}: {UNSUPPORTED[(codec, ext)]}")
    return CONTAINERS[ext]


def open_target(path: str, fmt: str, settings: EncoderSettings) -> Tuple[str, Optional[Dict[str, str]]]:
    """(URL or file name to open, muxer options) for an output: UDP datagrams of whole TS packets; the
    live HLS window (fMP4 segments `<stem>_NNNNN.m4s` beside the playlist, the oldest deleted)."""
    if fmt == "mpegts" and is_url(path):
        return (path if "pkt_size=" in path else f"{path}{'&' if '?' in path else '?'}pkt_size={UDP_TS_PACKET}"), None
    if fmt == "hls":
        p = Path(path)
        return str(p), {"hls_time": f"{settings.hls_time_s:g}", "hls_list_size": str(settings.hls_list_size),
                        "hls_flags": "delete_segments+independent_segments",
                        "hls_segment_type": "fmp4", "hls_fmp4_init_filename": f"{p.stem}_init.mp4",
                        "hls_segment_filename": str(p.parent / f"{p.stem}_%05d.m4s")}
    return path, None


def nv12_to_frame(nv12: np.ndarray, full_range: bool, into=None):
    """NV12 uint8 `[H*3/2, W]` → a yuv420p `av.VideoFrame` (one copy per plane).

    `into`: a yuv420p frame of the same size from an earlier call, to fill again instead of
    allocating (issue 14: a fresh 720p frame costs page faults on every frame). Safe once the
    encoder has taken the frame: `make_writable` copies first if FFmpeg still holds a reference."""
    rows, width = nv12.shape
    height = rows * 2 // 3
    if into is not None and (into.width, into.height, into.format.name) == (width, height, "yuv420p"):
        frame = into
        frame.make_writable()
    else:
        frame = av.VideoFrame(width, height, "yuv420p")
    y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes)
    y[...] = nv12[:height]
    deinterleave_uv_into(nv12[height:], u, v)
    frame.color_range = 2 if full_range else 1
    return frame


class PyAvEncoder:
    """Encode and mux one output with PyAV.

    Args:
        path: output file; the extension picks the container (`.mp4 .mkv .ts .y4m`).
        info: the input stream (size, time base, frame rate, colour range).
        settings: codec and rate control (ignored for `.y4m`).
        audio_streams: input audio streams to copy (packets come through `mux_audio`).
        sample_aspect_ratio: carried to the output when not square.
    """

    def __init__(self, path: str, info: StreamInfo, settings: EncoderSettings,
                 audio_streams: Sequence = (), sample_aspect_ratio: Optional[Fraction] = None) -> None:
        # SVT-AV1 opened as root would put the opening thread and its workers on SCHED_FIFO 99; the
        # codec opens at the first encode, in a thread started after this one (which it inherits).
        forbid_realtime()
        self._av = av
        self.path = str(path)
        self.info = info
        self.settings = settings
        self.raw = Path(self.path).suffix.lower() == ".y4m"
        fmt = container_for(self.path, settings.codec)
        self.full_range = info.color_range == "full"
        self.format = bitdepth.output_format("rawvideo" if self.raw else settings.codec, info.bit_depth, info.signal,
                                             settings.bit_depth)
        self.ten_bit = self.format.bits == 10
        if info.bit_depth == 10 and settings.bit_depth != 8 and not self.ten_bit:
            log.warning("%s: libx264 here encodes 8-bit only; the 10-bit input is encoded 8-bit", self.path)
        self.bits = 0
        self.frames = 0
        self.first_pts: Optional[int] = None
        self.last_end_pts: Optional[int] = None
        self._closed = False
        self._frame = None  # the 8-bit frame filled again for every picture (nv12_to_frame `into`)
        self.qp_follower: Optional[QpFollower] = None  # `follow_qp`: the model's hint follows this encode
        self._on_hint: Optional[Callable[[float], None]] = None
        self._hint_period = 0
        parent = Path(self.path).resolve().parent
        if not is_url(self.path) and not parent.is_dir():
            raise UsageError(f"output folder does not exist: {parent}")
        if fmt == "hls" and settings.keyint is None:  # one GOP per segment: the muxer cuts at key frames
            fps = float(info.average_rate) if info.average_rate else 25.0
            self.settings = replace(settings, keyint=max(1, int(round(settings.hls_time_s * fps))))
        target, options = open_target(self.path, fmt, self.settings)
        if self.raw and self.ten_bit:  # y4m: FFmpeg writes 10-bit as an extension ("C420p10") only when asked to
            options = {"strict": "unofficial"}
        try:
            self.container = av.open(target, "w", format=fmt, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"cannot create {self.path}: {exc}") from None
        try:
            self._add_video(sample_aspect_ratio)
            self._audio = self._add_audio(audio_streams)
        except BaseException:
            self.container.close()
            raise

    def _add_video(self, sar: Optional[Fraction]) -> None:
        info = self.info
        rate = info.average_rate or Fraction(25)
        if self.raw:
            stream = self.container.add_stream("rawvideo", rate=rate)
            self.codec_time_base = Fraction(1) / rate
        else:
            lib, opts, bit_rate = encoder_options(self.settings)
            opts = self.format.encoder_options(opts)  # colour + HDR10 into the bitstream
            try:
                stream = self.container.add_stream(lib, rate=rate, options=opts)
            except (self._av.error.FFmpegError, ValueError) as exc:
                raise EncodeError(f"encoder {lib} is not available: {exc}") from None
            if bit_rate:
                stream.codec_context.bit_rate = bit_rate
            self.codec_time_base = info.time_base
        cc = stream.codec_context
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = self.format.pix_fmt
        cc.time_base = self.codec_time_base
        cc.color_range = 2 if self.full_range else 1
        if info.signal is not None:  # tagged as the input came (unspecified stays unspecified)
            self.format.tag(cc)
        elif info.color_matrix in _MATRIX_TAGS:
            cc.colorspace = _MATRIX_TAGS[info.color_matrix]
        if sar and Fraction(sar) != 1:
            cc.sample_aspect_ratio = Fraction(sar)
        if getattr(info, "rotation", 0) and hasattr(stream, "set_display_rotation"):
            stream.set_display_rotation(info.rotation)  # display matrix side data: players show it upright
        self.stream = stream

    def _add_audio(self, audio_streams: Sequence) -> Dict[int, object]:
        mapping: Dict[int, object] = {}
        if not audio_streams:
            return mapping
        if self.raw:
            log.warning("%s: y4m holds video only; %d audio stream(s) not copied", self.path, len(audio_streams))
            return mapping
        for src in audio_streams:
            try:
                mapping[src.index] = self.container.add_stream_from_template(src)
            except Exception as exc:  # noqa: BLE001 - codec not allowed in this container
                log.warning("%s: audio stream %d (%s) cannot be copied into this container: %s",
                            self.path, src.index, src.codec_context.name, exc)
        return mapping

    def encode(self, frame: Frame) -> None:
        """Encode one frame (uint8 NV12, limited range) at its source timestamp."""
        nv12 = as_numpy(frame.nv12)
        if self.ten_bit:
            planes10 = frame.meta.get("yuv10")
            if planes10 is None:  # an 8-bit frame reached a 10-bit encoder: shift up losslessly
                planes10 = tuple(p.astype(np.uint16) << 2 for p in bitdepth.nv12_split(nv12))
            av_frame = bitdepth.frame10_of(bitdepth.edit_planes10(planes10, np.ascontiguousarray(nv12)))
            av_frame.color_range = 1
        else:
            nv12 = nv12_limited_to_full(nv12) if self.full_range else nv12
            av_frame = self._frame = nv12_to_frame(np.ascontiguousarray(nv12), self.full_range, into=self._frame)
        self.format.tag(av_frame)
        if self.raw:
            av_frame.pts = self.frames
        else:
            av_frame.pts = frame.pts
        av_frame.time_base = self.codec_time_base
        if self.first_pts is None:
            self.first_pts = frame.pts
        if frame.pts is not None:
            step = frame.duration or (int(round(1 / (self.info.average_rate * self.info.time_base)))
                                      if self.info.average_rate else 0)
            self.last_end_pts = frame.pts + step
        try:
            packets = self.stream.encode(av_frame)
            self._mux_video(packets)
        except self._av.error.FFmpegError as exc:
            raise EncodeError(f"encoding frame {frame.index} failed: {exc}") from None
        self.frames += 1
        if self.qp_follower is not None and self.frames % self._hint_period == 0:
            self._on_hint(self.qp_follower.advance(self.frames))

    def follow_qp(self, follower: QpFollower, on_hint: Callable[[float], None], period_frames: int) -> None:
        """Let the model's QP hint follow this encode: every `period_frames` encoded frames,
        `on_hint(hint)` gets what `follower` makes of the QPs the encoder reported since the last time
        (`preedit run --bitrate`: the transport sends it with the frames that follow)."""
        self.qp_follower, self._on_hint, self._hint_period = follower, on_hint, max(1, int(period_frames))

    def _mux_video(self, packets) -> None:
        if self.qp_follower is not None:
            self.qp_follower.observe(packets)
        for packet in packets:
            self.bits += packet.size * 8
            self.container.mux(packet)

    def mux_audio(self, packets: List) -> None:
        """Copy demuxed audio packets unchanged (dropped if their stream was not mapped)."""
        for packet in packets:
            out = self._audio.get(packet.stream.index)
            if out is None or packet.dts is None:
                continue
            packet.stream = out
            try:
                self.container.mux(packet)
            except self._av.error.FFmpegError as exc:
                log.warning("%s: dropped an audio packet: %s", self.path, exc)

    def finish(self) -> dict:
        """Flush the encoder and write the trailer; idempotent. Returns bits and frames written."""
        if not self._closed:
            self._closed = True
            try:
                if self.frames:
                    self._mux_video(self.stream.encode(None))
            except self._av.error.FFmpegError as exc:
                log.warning("%s: flushing the encoder failed: %s", self.path, exc)
            finally:
                self.container.close()
        return {"output_bits": self.bits, "frames": self.frames, "path": self.path}

