"""Glue between the client's `--device` factory (`preedit.client.backends`) and the GPU stages.

```
 backends.make_decoder(src, realtime=, max_frames=, ...)      -> ClientNvdecDecoder (audio via PyAV)
 backends.make_transport(url, model, shape, n_slots=, qp=, ...) -> CudaShmTransport
 backends.make_encoder(dst, info, settings, audio_streams=, ...) -> ClientNvencEncoder
```
Each factory raises when its stage cannot run on this GPU (URL input, codec without NVENC, no
PyNvVideoCodec, server refusing CUDA shm); the client factory then logs and uses the CPU stage,
which is how GPU decode + GPU pre-edit + CPU encode happens on an H100.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

from preedit.errors import EncodeError, InputError

from ._decoder import NvdecDecoder
from ._encoder import NvencConfig, NvencEncoder

log = logging.getLogger(__name__)

# x264/x265 preset names → NVENC P1 (fastest) .. P7 (best)
X26X_TO_NVENC = {"ultrafast": "P1", "superfast": "P1", "veryfast": "P2", "faster": "P3", "fast": "P3",
                 "medium": "P4", "slow": "P5", "slower": "P6", "veryslow": "P7", "placebo": "P7"}
DEFAULT_CQ = {"hevc": 28, "h264": 23, "av1": 32}


def nvenc_config_from_settings(settings: Any, *, gop: int = 120, bframes: int = 2) -> NvencConfig:
    """Map the client's `EncoderSettings` (codec, crf | qp | bitrate_kbps, preset) to NVENC (pure).

    CRF maps to NVENC constant quality (`rc=vbr`, `cq`: 0..51, AV1 0..63 like SVT-AV1's CRF);
    QP to `constqp`: HEVC/H.264 QP as is, an AV1 quantizer (0..63, the client's `--qp` scale)
    to NVENC AV1's qindex 0..255 through `preedit.qp.av1_qindex`; bitrate to VBR with max =
    target. SVT-AV1 numeric presets 0..13 map onto P7..P1.
    """
    from preedit.qp import av1_qindex

    codec = settings.codec
    preset = "P4"
    if getattr(settings, "preset", None) is not None:
        p = str(settings.preset)
        if p.isdigit():
            preset = f"P{max(1, min(7, 7 - int(p) // 2))}"
        else:
            preset = X26X_TO_NVENC.get(p, "P4")
    common = dict(codec=codec, preset=preset, gop=gop, bframes=bframes)
    if getattr(settings, "qp", None) is not None:
        if codec == "av1":
            qp = int(round(av1_qindex(max(0, min(63, settings.qp)))))
        else:
            qp = int(max(0, min(51, settings.qp)))
        return NvencConfig(rc="constqp", qp=qp, cq=None, **common)
    if getattr(settings, "bitrate_kbps", None) is not None:
        return NvencConfig(rc="vbr", cq=None, bitrate_kbps=int(settings.bitrate_kbps), **common)
    crf = getattr(settings, "crf", None)
    if crf is None:
        cq = DEFAULT_CQ.get(codec, 28)
    else:
        cq = round(crf)
    return NvencConfig(rc="vbr", cq=int(max(0, min(63 if codec == "av1" else 51, cq))), **common)


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
            import av

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


class ClientNvencEncoder(NvencEncoder):
    """`NvencEncoder` constructed from the client's (path, StreamInfo, EncoderSettings).

    Audio packets the pipeline passes to `mux_audio` are not needed: the source's audio is copied
    from `audio_streams`' file at `finish()` (files only; a live URL source loses its audio here).
    """

    def __init__(self, path, info, settings, *, audio_streams: Sequence = (), sample_aspect_ratio=None,
                 device_id: int = 0, nvc: Any = None, **_ignored: Any) -> None:
        from ._caps import capabilities

        if nvc is None:
            caps = capabilities(device_id)
            if settings.codec not in caps.get("nvenc", []):
                name = (caps.get("device") or {}).get("name", "this machine")
                raise EncodeError(f"{name} has no NVENC for {settings.codec} "
                                  f"(NVENC codecs: {', '.join(caps.get('nvenc', [])) or 'none'})")
        audio_from = None
        if audio_streams:
            name = getattr(getattr(audio_streams[0], "container", None), "name", None)
            audio_from = Path(name) if name and Path(name).is_file() else None
            if audio_from is None:
                log.warning("NVENC output: audio of a non-file source is not copied")
        super().__init__(Path(path), info.width, info.height, nvenc_config_from_settings(settings),
                         time_base=Fraction(info.time_base), frame_rate=info.average_rate, audio_from=audio_from,
                         device_id=device_id, nvc=nvc)
        self.info = info
        self.frames = 0
        self.first_pts: Optional[int] = None  # read by the pipeline for the media duration
        self.last_end_pts: Optional[int] = None

    def encode(self, frame) -> None:
        super().encode(frame)
        self.frames += 1
        if frame.pts is not None:
            self.first_pts = frame.pts if self.first_pts is None else self.first_pts
            rate = self.info.average_rate
            step = frame.duration or (int(round(1 / (rate * self.info.time_base))) if rate else 0)
            self.last_end_pts = frame.pts + step

    def mux_audio(self, packets: list) -> None:  # noqa: D401 - protocol method
        """No-op: audio is copied from the source file at `finish()`."""

    def finish(self) -> dict:
        stats = super().finish()
        stats.setdefault("output_bits", self.out_path.stat().st_size * 8 if self.out_path.exists() else 0)
        self._stats = dict(stats)
        return stats


def make_client_decoder(source, *, realtime: bool = False, max_frames: Optional[int] = None,
                        device_id: int = 0, **_ignored: Any):
    """NVDEC decoder for a local file; raises for URLs and real-time pacing (CPU decoder does those)."""
    text = str(source)
    if "://" in text:
        raise InputError("the NVDEC decoder reads local files; live URLs use the CPU decoder")
    if realtime:
        raise InputError("real-time pacing is implemented by the CPU decoder")
    from ._caps import capabilities

    caps = capabilities(device_id)
    codecs = caps["nvdec"] if caps.get("cuda") else None
    return ClientNvdecDecoder(source, max_frames=max_frames, device_id=device_id, ring_size=0, nvdec_codecs=codecs)
