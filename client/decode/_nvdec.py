"""GPU decoder: NVDEC (PyNvVideoCodec) producing device NV12 frames the caller owns.

```
 file ──CreateDemuxer──> packets (pts) ──CreateDecoder.Decode()──> DecodedFrame (borrowed, pool)
   ──torch.from_dlpack──> view [H*3/2, W] ──copy into an owned tensor (ring of K)──> Frame.nv12
```
Decoded frames are views into a decoder-owned pool that the next `Decode()` overwrites (brief
§1.5), so every frame is copied (device-to-device) before the next packet is decoded. The copy
lands in a ring of `ring_size` pre-allocated tensors (a consumer may hold at most `ring_size - 2`
frames), or with `ring_size=0` in a fresh tensor per frame (what the client pipeline uses: a
bypassed frame can wait in three queues). Full-range input (yuvj420p) is converted to limited range on the GPU, as the CPU decoder does.
`ClientNvdecDecoder` adds what the pipeline needs (audio demuxed by PyAV, `max_frames`,
`decode_ns`); `make_nvdec_decoder` refuses what NVDEC cannot do (real-time pacing).

URL input (udp://, http(s)://, rtmp://, file://, ...: whatever PyAV's FFmpeg opens) is demuxed on
the CPU by `PyAvPacketDemuxer`, which hands NVDEC the compressed video packets:
```
 URL ──PyAV demux──> video packets ──h264/hevc_mp4toannexb (only for AVCC/HVCC: MP4, FLV/RTMP, MKV)──>
     nvc.PacketData(bsl_data, bsl, pts, dts, key) ──Decode()──> frames (pts = the packet pts)
   └── audio packets ──> frame.meta["audio"] (like the CPU decoder)
 end of input, or a live source silent for open_timeout_s ──> empty PacketData: NVDEC flushes
```
This path is tested with a fake NVDEC backed by FFmpeg's software decoder (tests/test_gpu_url_nvdec.py);
it has not run on NVDEC hardware.
"""

from __future__ import annotations

import contextlib
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import av

from preedit.client import hardware
from preedit.client.decode._pyav import is_url, open_input
from preedit.client.interfaces import Frame, StreamInfo
from preedit.color import full_to_limited_chroma, full_to_limited_luma
from preedit.errors import InputError, StreamError

log = logging.getLogger(__name__)


class DeviceRing:
    """K pre-allocated tensors handed out round-robin (no allocation per frame).

    Args:
        make: callable returning one fresh tensor (e.g. `torch.empty(..., device="cuda")`).
        size: number of tensors; frame i lands in tensor `i % size`.
    """

    def __init__(self, make, size: int) -> None:
        if size < 2:
            raise ValueError(f"a device ring needs at least 2 buffers, got {size}")
        self.buffers = [make() for _ in range(size)]
        self.count = 0

    def next(self):
        buf = self.buffers[self.count % len(self.buffers)]
        self.count += 1
        return buf


def full_to_limited_(nv12, height: int) -> None:
    """In place: full-range (0..255) NV12 → limited range (Y 16..235, UV 16..240), uint8.

    The same maths as the CPU path (`preedit.color`), run on the tensor's device.
    """
    nv12[:height] = full_to_limited_luma(nv12[:height])
    nv12[height:] = full_to_limited_chroma(nv12[height:])


class NvdecDecoder:
    """`Decoder` on NVDEC: yields `Frame`s whose `nv12` is a CUDA uint8 `[H*3/2, W]` tensor.

    Args:
        path: input file (mp4/mkv/raw Annex-B); the demuxer is PyNvVideoCodec's (FFmpeg inside).
        device_id: CUDA ordinal.
        ring_size: owned output buffers reused round-robin; a consumer may hold at most
            `ring_size - 2` frames. 0 allocates a fresh tensor per frame (no limit; the client
            pipeline uses this, since a bypassed frame can sit in three queues).
        cuda_stream: `torch.cuda.Stream` for the decoder and the copies (a dedicated one by default).
        nvc: PyNvVideoCodec module (injected by tests).
        color_range: `limited` or `full` (full is converted to limited on the GPU); None → ask the demuxer.
        demuxer: packet source with PyNvVideoCodec's demuxer interface (`PyAvPacketDemuxer` for
            URLs); None → `nvc.CreateDemuxer(path)` (local files).
    """

    def __init__(self, path, *, device_id: int = 0, ring_size: int = 8, cuda_stream=None,
                 nvc: Any = None, color_range: Optional[str] = None, time_base: Optional[Fraction] = None,
                 demuxer: Any = None) -> None:
        import torch  # lazy: torch

        self.path = Path(path) if demuxer is None else None
        self.name = str(path) if demuxer is not None else Path(path).name
        if demuxer is None and not self.path.is_file():
            raise InputError(f"input not found: {self.path}")
        if nvc is None:
            nvc = hardware.import_nvc()
            if nvc is None:
                raise InputError("PyNvVideoCodec is not importable on this host: NVDEC unavailable")
        self._nvc = nvc
        self.device_id = device_id
        self.device = torch.device("cuda", device_id) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(device_id)
            torch.zeros(1, device=self.device)  # primary context current on this thread (brief §1.2)
            self.stream = cuda_stream or torch.cuda.Stream(device=self.device)
            stream_handle = int(self.stream.cuda_stream)
        else:
            self.stream, stream_handle = None, 0
        try:
            self._demux = demuxer if demuxer is not None else nvc.CreateDemuxer(filename=str(self.path))
            self._dec = nvc.CreateDecoder(gpuid=device_id, codec=self._demux.GetNvCodecId(), cudacontext=0,
                                          cudastream=stream_handle, usedevicememory=True)
        except Exception as exc:  # noqa: BLE001 - PyNvVCException / unsupported codec
            raise InputError(f"NVDEC cannot open {self.name}: {exc}") from None
        self.width = _first_int(self._demux, ("Width", "GetWidth"))
        self.height = _first_int(self._demux, ("Height", "GetHeight"))
        rate_num = _first_int(self._demux, ("AvgFrameRateNum",))
        rate_den = _first_int(self._demux, ("AvgFrameRateDen",))
        fps = _first_float(self._demux, ("FrameRate",))
        if rate_num and rate_den:
            self.frame_rate: Optional[Fraction] = Fraction(rate_num, rate_den)
        else:
            self.frame_rate = Fraction(fps).limit_denominator(1001) if fps else None
        self.time_base = time_base or _guess_time_base(self._demux, self.path)
        self.color_range = color_range or _demux_range(self._demux)
        self.color_matrix = "bt709"
        self.frame_count_hint: Optional[int] = None
        self.ring_size = ring_size
        self._ring: Optional[DeviceRing] = None
        self.decode_s = 0.0
        self.frames = 0

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(width=self.width or 0, height=self.height or 0, time_base=self.time_base,
                          average_rate=self.frame_rate, color_range=self.color_range, color_matrix=self.color_matrix,
                          frame_count_hint=self.frame_count_hint, codec_name=self.codec_name)

    @property
    def codec_name(self) -> str:
        return _codec_name(self._demux) if self._demux is not None else ""

    @property
    def bit_depth(self) -> Optional[int]:
        return _first_int(self._demux, ("BitDepth",)) if self._demux is not None else None

    def _owned(self, view):
        import torch  # lazy: torch

        if not self.ring_size:  # fresh tensor per frame (torch's caching allocator makes this cheap)
            dev = view.device if view.device.type == "cuda" else self.device
            if not self.height:
                self.height, self.width = view.shape[0] * 2 // 3, view.shape[1]
            buf = torch.empty(tuple(view.shape), dtype=torch.uint8, device=dev)
            buf.copy_(view, non_blocking=True)
            return buf
        if self._ring is None:
            shape, dev = tuple(view.shape), view.device if view.device.type == "cuda" else self.device
            self._ring = DeviceRing(lambda: torch.empty(shape, dtype=torch.uint8, device=dev), self.ring_size)
            if not self.height:
                self.height, self.width = shape[0] * 2 // 3, shape[1]
        buf = self._ring.next()
        if tuple(buf.shape) != tuple(view.shape):
            raise InputError(f"frame size changed mid-stream ({tuple(view.shape)} vs {tuple(buf.shape)}): "
                             "resolution changes are not supported on the NVDEC path")
        buf.copy_(view, non_blocking=True)
        return buf

    def __iter__(self) -> Iterator:
        import torch  # lazy: torch

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # iteration may run in another thread (brief §1.2)
        for packet in self._demux:
            t0 = time.perf_counter()
            # Decode and copy on the decoder's stream; the stream context is left before yielding
            # so the consumer's work runs on its own stream.
            ctx = torch.cuda.stream(self.stream) if self.stream is not None else _nullcontext()
            with ctx:
                out: List = []
                for df in self._dec.Decode(packet):
                    view = torch.from_dlpack(df)
                    owned = self._owned(view)  # copy out of the decoder's pool before the next Decode
                    if self.color_range == "full":
                        full_to_limited_(owned, self.height)
                    out.append((owned, getattr(df, "timestamp", None)))
            if self.stream is not None and out:
                self.stream.synchronize()
            self.decode_s += time.perf_counter() - t0
            for owned, ts in out:
                yield Frame(index=self.frames, pts=None if ts is None else int(ts), time_base=self.time_base,
                            nv12=owned, t_decoded_ns=time.monotonic_ns(), meta={"device": "cuda"})
                self.frames += 1

    def close(self) -> None:
        closer = getattr(self._demux, "close", None)  # PyAvPacketDemuxer holds a container
        self._dec = None
        self._demux = None
        self._ring = None
        if closer is not None:
            closer()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _first_int(obj, names) -> Optional[int]:
    for name in names:
        fn = getattr(obj, name, None)
        if fn is not None:
            try:
                return int(fn())
            except Exception:  # noqa: BLE001
                continue
    return None


def _first_float(obj, names) -> Optional[float]:
    for name in names:
        fn = getattr(obj, name, None)
        if fn is not None:
            try:
                return float(fn())
            except Exception:  # noqa: BLE001
                continue
    return None


def _demux_range(demux) -> str:
    fn = getattr(demux, "ColorRange", None)
    try:
        value = str(fn()) if fn is not None else ""
    except Exception:  # noqa: BLE001
        value = ""
    return "full" if ("JPEG" in value.upper() or "FULL" in value.upper() or value.strip() == "2") else "limited"


def _codec_name(demux) -> str:
    try:
        return str(demux.GetNvCodecId()).split(".")[-1].lower()
    except Exception:  # noqa: BLE001
        return ""


def _guess_time_base(demux, path: Optional[Path] = None) -> Fraction:
    """Time base of the packet pts (the container stream's: 1/30000, 1/57600, 1/1000, ...).

    PyNvVideoCodec 2.2 exposes it as `GetTimebaseNum()/GetTimebaseDen()` (seen on an H100 with
    2.2.4); older releases do not, then PyAV is asked, and 1/90000 is the last resort (warned).
    """
    num = _first_int(demux, ("GetTimebaseNum",))
    den = _first_int(demux, ("GetTimebaseDen",))
    if num and den:
        return Fraction(num, den)
    if path is not None:
        try:
            with av.open(str(path)) as container:
                return Fraction(container.streams.video[0].time_base)
        except Exception:  # noqa: BLE001 - PyAV missing or cannot open
            pass
    log.warning("cannot tell the time base of %s; assuming 1/90000", path)
    return Fraction(1, 90000)


# Codecs NVDEC takes from PyAV packets (FFmpeg codec name → PyNvVideoCodec cudaVideoCodec member).
NVDEC_CODEC_OF = {"h264": "H264", "hevc": "HEVC", "av1": "AV1"}
_ANNEXB_FILTER = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


def needs_annexb_filter(codec: str, extradata: Optional[bytes]) -> bool:
    """True when H.264/HEVC packets are length-prefixed (AVCC/HVCC: MP4, MOV, FLV/RTMP, MKV) and must
    be converted to Annex-B start codes for NVDEC. MPEG-TS (udp://, HLS) already carries Annex-B,
    with no or Annex-B extradata; AV1 is passed as it is (OBUs, as PyNvVideoCodec's own demuxer does)."""
    if codec not in _ANNEXB_FILTER or not extradata:
        return False
    return not (extradata[:3] == b"\0\0\1" or extradata[:4] == b"\0\0\0\1")


class PyAvPacketDemuxer:
    """PyNvVideoCodec's demuxer interface over PyAV, for inputs NVDEC's own demuxer does not open (URLs).

    Iterating yields `nvc.PacketData` for each video packet (pointing into the PyAV packet, which
    stays alive until the next packet is asked for: `Decode()` parses it synchronously) and ends
    with an empty one, which makes NVDEC flush its reorder buffer. Packets before the first key
    frame are dropped (joining a live stream mid-GOP). Audio packets collect in `pending_audio`.

    Args:
        source: FFmpeg URL (or any path PyAV opens).
        nvc: PyNvVideoCodec module (for `PacketData` and the codec enum).
        open_timeout_s: open/read timeout; a live source silent this long after its first frame has ended.
    """

    def __init__(self, source: str, nvc: Any, *, open_timeout_s: float = 10.0) -> None:
        self.source = str(source)
        self._nvc = nvc
        self.read_timeout_s = open_timeout_s
        self.container, _ = open_input(self.source, open_timeout_s)
        try:
            self._setup()
        except BaseException:
            self.container.close()
            raise

    def _setup(self) -> None:
        streams = self.container.streams
        if not streams.video:
            raise InputError(f"{self.source} has no video stream")
        self.stream = video = streams.video[0]
        cc = video.codec_context
        self.codec = cc.codec.canonical_name if cc.codec is not None else (cc.name or "")
        if self.codec not in NVDEC_CODEC_OF:
            raise InputError(f"NVDEC path takes {', '.join(NVDEC_CODEC_OF)} streams, {self.source} is {self.codec}")
        self._codec_id = _nvc_codec_member(self._nvc, NVDEC_CODEC_OF[self.codec])
        self.audio_streams = list(streams.audio)
        self.pending_audio: List = []
        self._bsf = None
        if needs_annexb_filter(self.codec, cc.extradata):
            from av.bitstream import BitStreamFilterContext

            self._bsf = BitStreamFilterContext(_ANNEXB_FILTER[self.codec], in_stream=video)
        rate = video.average_rate or video.guessed_rate
        self.frame_rate = Fraction(rate) if rate else None
        self.time_base = Fraction(video.time_base) if video.time_base else Fraction(1, 90000)
        self.full_range = cc.color_range == 2 or (cc.format is not None and cc.format.name.startswith("yuvj"))
        self.color_matrix = {5: "bt601", 6: "bt601"}.get(int(cc.colorspace or 0), "bt709")
        self.sample_aspect_ratio = video.sample_aspect_ratio or cc.sample_aspect_ratio
        self.bit_depth = _format_depth(cc.format)
        self.packets_sent = 0
        self._step = int(round(1 / (self.frame_rate * self.time_base))) if self.frame_rate else 1

    # -- PyNvVideoCodec demuxer interface -------------------------------------------------------
    def GetNvCodecId(self):  # noqa: N802 - PyNvVideoCodec's name
        return self._codec_id

    def Width(self) -> int:  # noqa: N802
        return int(self.stream.codec_context.width or 0)

    def Height(self) -> int:  # noqa: N802
        return int(self.stream.codec_context.height or 0)

    def BitDepth(self) -> Optional[int]:  # noqa: N802
        return self.bit_depth

    def AvgFrameRateNum(self) -> int:  # noqa: N802
        return self.frame_rate.numerator if self.frame_rate else 0

    def AvgFrameRateDen(self) -> int:  # noqa: N802
        return self.frame_rate.denominator if self.frame_rate else 0

    def GetTimebaseNum(self) -> int:  # noqa: N802
        return self.time_base.numerator

    def GetTimebaseDen(self) -> int:  # noqa: N802
        return self.time_base.denominator

    def ColorRange(self) -> str:  # noqa: N802
        return "JPEG" if self.full_range else "MPEG"

    def __iter__(self) -> Iterator:
        keep = None  # the PyAV packet the last PacketData points into
        for packet in self._video_packets():
            keep = packet
            yield self._packet_data(packet)
        del keep
        yield self._nvc.PacketData()  # bsl = 0: end of stream, NVDEC flushes

    def _packet_data(self, packet):
        pd = self._nvc.PacketData()
        pd.bsl_data = int(packet.buffer_ptr)
        pd.bsl = int(packet.size)
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:  # raw elementary stream: decode-order times (right for streams without B-frames)
            pts = self.packets_sent * self._step
        pd.pts = int(pts)
        pd.dts = int(packet.dts if packet.dts is not None else pts)
        pd.key = int(bool(packet.is_keyframe))
        self.packets_sent += 1
        return pd

    def _video_packets(self) -> Iterator:
        started = False
        for packet in self._demux():
            if packet.stream.type == "audio":
                if packet.size:
                    self.pending_audio.append(packet)
                continue
            if not packet.size:  # PyAV's end-of-stream packet
                continue
            if not started and not packet.is_keyframe:
                continue
            started = True
            yield from (self._bsf.filter(packet) if self._bsf is not None else (packet,))
        if self._bsf is not None:
            yield from self._bsf.filter(None)

    def _demux(self) -> Iterator:
        sent = 0
        try:
            for packet in self.container.demux(self.stream, *self.audio_streams):
                if packet.stream.type == "video" and packet.size:
                    sent += 1
                yield packet
        except av.error.EOFError:
            return
        except av.error.ExitError:  # PyAV's read timeout interrupted a network read
            if sent:
                log.warning("%s: no data for %.0f s after %d video packets; treating the silence as end of stream",
                            self.source, self.read_timeout_s, sent)
                return
            raise InputError(f"no data from {self.source} within {self.read_timeout_s:.0f} s") from None
        except av.error.FFmpegError as exc:
            if not sent:
                raise InputError(f"cannot read {self.source}: {exc}") from None
            raise StreamError(f"input stream broke after {sent} video packets: {exc}") from None

    def take_pending_audio(self) -> List:
        taken, self.pending_audio = self.pending_audio, []
        return taken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def _nvc_codec_member(nvc, name: str):
    return hardware._nvc_codec(nvc, name)  # release-tolerant enum lookup


def _format_depth(fmt) -> Optional[int]:
    if fmt is None:
        return None
    try:
        return max(int(c.bits) for c in fmt.components)
    except Exception:  # noqa: BLE001
        return 10 if "10" in fmt.name else 8


class ClientNvdecDecoder(NvdecDecoder):
    """`NvdecDecoder` with what the client pipeline also needs: audio, max_frames, decode_ns.

    Local files: NVDEC's demuxer reads the video; audio is demuxed with PyAV from the same file
    and handed over at the end via `take_audio()`. URLs: PyAV demuxes once (`PyAvPacketDemuxer`);
    audio packets ride in `frame.meta["audio"]` as they arrive, as with the CPU decoder. Stream
    indices are the source's, so the CPU encoder's audio mapping applies unchanged.
    """

    def __init__(self, source, *, max_frames: Optional[int] = None, nvdec_codecs: Optional[Sequence[str]] = None,
                 open_timeout_s: float = 10.0, **kwargs: Any) -> None:
        self._audio_container = None
        self._live: Optional[PyAvPacketDemuxer] = None
        if is_url(str(source)):
            nvc = kwargs.get("nvc") or hardware.import_nvc()
            if nvc is None:
                raise InputError("PyNvVideoCodec is not importable on this host: NVDEC unavailable")
            kwargs["nvc"] = nvc
            self._live = PyAvPacketDemuxer(str(source), nvc, open_timeout_s=open_timeout_s)
            try:
                super().__init__(str(source), demuxer=self._live, **kwargs)
            except BaseException:
                self._live.close()
                raise
        else:
            super().__init__(Path(source), **kwargs)
        depth = self.bit_depth
        if depth not in (None, 8):
            self.close()
            raise InputError(f"{depth}-bit input: the NVDEC path is 8-bit NV12 only (the CPU decoder converts it)")
        if nvdec_codecs is not None and self.codec_name and self.codec_name not in nvdec_codecs:
            codec = self.codec_name
            self.close()
            raise InputError(f"NVDEC on this GPU does not decode {codec} (it does: {', '.join(nvdec_codecs) or 'none'})")
        self.max_frames = max_frames
        self.audio_streams: List = []
        self.sample_aspect_ratio = None
        if self._live is not None:
            self.audio_streams = self._live.audio_streams
            self.sample_aspect_ratio = self._live.sample_aspect_ratio
            self.color_matrix = self._live.color_matrix
            return
        try:
            self._audio_container = av.open(str(source))
            self.audio_streams = list(self._audio_container.streams.audio)
            video = self._audio_container.streams.video[0]
            self.sample_aspect_ratio = video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio
            if kwargs.get("color_range") is None and video.codec_context.color_range == 2:
                self.color_range = "full"
            self.color_matrix = {5: "bt601", 6: "bt601"}.get(int(video.codec_context.colorspace or 0), "bt709")
            self.frame_count_hint = video.frames or None
        except Exception as exc:  # noqa: BLE001 - no PyAV: video only
            log.debug("no PyAV side-container for %s: %s", source, exc)

    def __iter__(self) -> Iterator:
        t_prev = time.perf_counter_ns()
        for frame in super().__iter__():
            if self.max_frames is not None and frame.index >= self.max_frames:
                break
            now = time.perf_counter_ns()
            frame.meta["decode_ns"] = now - t_prev
            if self._live is not None and self._live.pending_audio:
                frame.meta["audio"] = self._live.take_pending_audio()
            yield frame
            t_prev = time.perf_counter_ns()

    def take_audio(self) -> List:
        if self._live is not None:
            return self._live.take_pending_audio()
        if self._audio_container is None or not self.audio_streams:
            return []
        return [p for p in self._audio_container.demux(*self.audio_streams) if p.dts is not None]

    def close(self) -> None:
        super().close()
        if self._audio_container is not None:
            self._audio_container.close()
            self._audio_container = None


def make_nvdec_decoder(source, *, realtime: bool = False, max_frames: Optional[int] = None,
                       device_id: int = 0, open_timeout_s: float = 10.0, **_ignored: Any) -> "ClientNvdecDecoder":
    """NVDEC decoder for a local file or a URL (PyAV demuxes URLs); raises for real-time pacing (the CPU decoder paces)."""
    if realtime:
        raise InputError("real-time pacing is implemented by the CPU decoder")
    caps = hardware.capabilities(device_id)
    codecs = caps["nvdec"] if caps.get("cuda") else None
    return ClientNvdecDecoder(source, max_frames=max_frames, device_id=device_id, ring_size=0, nvdec_codecs=codecs,
                              open_timeout_s=open_timeout_s)
