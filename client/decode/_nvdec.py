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
`decode_ns`); `make_nvdec_decoder` refuses what NVDEC cannot do (URLs, real-time pacing).
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import av

from preedit.client import hardware
from preedit.client.interfaces import Frame, StreamInfo
from preedit.color import full_to_limited_chroma, full_to_limited_luma
from preedit.errors import InputError

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
    """

    def __init__(self, path: Path, *, device_id: int = 0, ring_size: int = 8, cuda_stream=None,
                 nvc: Any = None, color_range: Optional[str] = None, time_base: Optional[Fraction] = None) -> None:
        import torch  # lazy: torch

        self.path = Path(path)
        if not self.path.is_file():
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
            self._demux = nvc.CreateDemuxer(filename=str(self.path))
            self._dec = nvc.CreateDecoder(gpuid=device_id, codec=self._demux.GetNvCodecId(), cudacontext=0,
                                          cudastream=stream_handle, usedevicememory=True)
        except Exception as exc:  # noqa: BLE001 - PyNvVCException / unsupported codec
            raise InputError(f"NVDEC cannot open {self.path.name}: {exc}") from None
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
        self._dec = None
        self._demux = None
        self._ring = None


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


class ClientNvdecDecoder(NvdecDecoder):
    """`NvdecDecoder` with what the client pipeline also needs: audio, max_frames, decode_ns.

    Audio is demuxed with PyAV from the same file (NVDEC has no audio) and handed over at the
    end via `take_audio()`; stream indices are the source file's, so the CPU encoder's audio
    mapping applies unchanged.
    """

    def __init__(self, source, *, max_frames: Optional[int] = None, nvdec_codecs: Optional[Sequence[str]] = None,
                 **kwargs: Any) -> None:
        self._audio_container = None
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
            yield frame
            t_prev = time.perf_counter_ns()

    def take_audio(self) -> List:
        if self._audio_container is None or not self.audio_streams:
            return []
        return [p for p in self._audio_container.demux(*self.audio_streams) if p.dts is not None]

    def close(self) -> None:
        super().close()
        if self._audio_container is not None:
            self._audio_container.close()
            self._audio_container = None


def make_nvdec_decoder(source, *, realtime: bool = False, max_frames: Optional[int] = None,
                       device_id: int = 0, **_ignored: Any) -> "ClientNvdecDecoder":
    """NVDEC decoder for a local file; raises for URLs and real-time pacing (CPU decoder does those)."""
    text = str(source)
    if "://" in text:
        raise InputError("the NVDEC decoder reads local files; live URLs use the CPU decoder")
    if realtime:
        raise InputError("real-time pacing is implemented by the CPU decoder")
    caps = hardware.capabilities(device_id)
    codecs = caps["nvdec"] if caps.get("cuda") else None
    return ClientNvdecDecoder(source, max_frames=max_frames, device_id=device_id, ring_size=0, nvdec_codecs=codecs)
