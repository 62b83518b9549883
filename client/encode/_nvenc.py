"""GPU encoder: NVENC (PyNvVideoCodec) from device NV12, muxed with the source timestamps and audio.

```
 Frame.nv12 (CUDA uint8 [H*3/2, W], contiguous) ──Encode(frame, pic_params{inputTimeStamp=index})
   ──> [{data, timestamp, picture_type}, ...] (delayed by B-frames + lookahead)
   ──> LiveEsMuxer.add(): muxed as it arrives (source PTS, online DTS) into mp4/mkv/ts
 finish(): EndEncode() flush ──> LiveEsMuxer.close(): audio copy, trailer
```
Needs PyNvVideoCodec ≥ 2.1: 2.0.x returns bare bytes without per-packet timestamp or picture
type, which cannot be muxed right with B-frames (refused with a clear message).
Every rate-control knob is explicit (NVENC defaults are an infinite GOP and const-QP, brief §0.6).
The frame is copied by NVENC into its own input buffer on the encoder's stream, so the encoder
gets the same CUDA stream as the producer and the caller may reuse its tensor afterwards.
PyNvVideoCodec is imported lazily and can be injected (`nvc=`) so tests run a fake on CPU.
`ClientNvencEncoder` builds the stage from the client's `(path, StreamInfo, EncoderSettings)`
(`nvenc_config_from_settings` is the pure mapping) and raises `EncodeError` where this GPU has
no NVENC for the codec, and for 10-bit or HDR output (`nvenc_refusal`): this path feeds NVENC
8-bit NV12 and writes no colour description or HDR10 metadata, so such a run falls back to the
CPU encoder (Main10 / AV1 10-bit, tags and HDR10 carried) instead of dropping to 8-bit SDR.
P010 input to NVENC is not wired: it has never run on a GPU with NVENC here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from preedit.client.encode._mux import ES_CODECS, EsSpool, LiveEsMuxer, container_for, mux_elementary
from preedit.client.encode._pyav import EncoderSettings
from preedit.client import bitdepth, hardware
from preedit.client.interfaces import Frame, StreamInfo
from preedit.errors import EncodeError, UsageError
from preedit.qp import av1_qindex

log = logging.getLogger(__name__)

PRESETS = tuple(f"P{i}" for i in range(1, 8))
RATE_CONTROLS = ("constqp", "vbr", "cbr")
TUNINGS = ("high_quality", "low_latency", "ultra_low_latency", "lossless", "uhq")
KEY_PICTURE_TYPES = (2, 3)  # NV_ENC_PIC_TYPE_I, NV_ENC_PIC_TYPE_IDR
MIN_PYNVVIDEOCODEC = (2, 1)
_OLD_NVC = ("PyNvVideoCodec {} returns encoded packets as bare bytes (no timestamp, no picture type): "
            "B-frames would be misordered and keyframes unmarked; install PyNvVideoCodec>=2.1")


def check_nvc_version(nvc: Any) -> None:
    """Refuse PyNvVideoCodec < 2.1 (by `__version__`; a module without one is checked per packet)."""
    version = getattr(nvc, "__version__", None)
    if not isinstance(version, str):
        return
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < MIN_PYNVVIDEOCODEC:
        raise EncodeError(_OLD_NVC.format(version))


@dataclass(frozen=True)
class NvencConfig:
    """NVENC settings; every one is passed explicitly to `CreateEncoder`.

    `rc="vbr"` with `cq` is NVENC's constant-quality mode; `rc="constqp"` uses `qp` for all
    frame types; `cbr`/`vbr` with `bitrate_kbps` are the bitrate modes. `bframes` is the number
    of B-frames between references; `gop` frames between IDRs.

    Scales are NVENC's per codec (FFmpeg `nvenc_av1.c` / `nvenc_hevc.c` option ranges): `qp` is
    0..51 for HEVC/H.264 and an AV1 *qindex* 0..255 for AV1; `cq` is 0..51, AV1 0..63.
    `aq` enables spatial AQ at `aq_strength` (0 = NVENC's automatic strength, 1 weakest .. 15).
    `colorspace` is the matrix the NV12 was made with; it is *not* handed to PyNvVideoCodec,
    whose VUI setup tags the stream full range whenever a colorspace is given (ours is limited).
    """

    codec: str = "hevc"
    preset: str = "P4"
    tuning_info: str = "high_quality"
    rc: str = "vbr"
    cq: Optional[int] = 28
    qp: Optional[int] = None
    bitrate_kbps: Optional[int] = None
    max_bitrate_kbps: Optional[int] = None
    gop: int = 120
    bframes: int = 2
    lookahead: int = 0
    aq: bool = False
    aq_strength: int = 0
    colorspace: str = "bt709"

    def __post_init__(self) -> None:
        if self.codec not in ES_CODECS:
            raise UsageError(f"NVENC codec {self.codec!r} unknown; valid: {', '.join(ES_CODECS)}")
        if self.preset not in PRESETS:
            raise UsageError(f"NVENC preset {self.preset!r} unknown; valid: {', '.join(PRESETS)} (upper case)")
        if self.rc not in RATE_CONTROLS:
            raise UsageError(f"NVENC rate control {self.rc!r} unknown; valid: {', '.join(RATE_CONTROLS)}")
        if self.tuning_info not in TUNINGS:
            raise UsageError(f"NVENC tuning {self.tuning_info!r} unknown; valid: {', '.join(TUNINGS)}")
        qp_top, cq_top = (255, 63) if self.codec == "av1" else (51, 51)
        if self.rc == "constqp" and self.qp is None:
            raise UsageError(f"NVENC rc=constqp needs qp (0..{qp_top})")
        if self.rc == "cbr" and not self.bitrate_kbps:
            raise UsageError("NVENC rc=cbr needs bitrate_kbps")
        if self.rc == "vbr" and self.cq is None and not self.bitrate_kbps:
            raise UsageError("NVENC rc=vbr needs cq (constant quality) or bitrate_kbps")
        for name, top in (("cq", cq_top), ("qp", qp_top)):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= top:
                raise UsageError(f"NVENC {self.codec} {name} must be in 0..{top}, got {value}")
        if not 0 <= self.aq_strength <= 15:
            raise UsageError(f"NVENC aq_strength must be in 0..15 (0 = automatic), got {self.aq_strength}")
        if self.gop < 1 or not 0 <= self.bframes <= 4 or self.lookahead < 0:
            raise UsageError("NVENC needs gop >= 1, bframes in 0..4, lookahead >= 0")
        if self.colorspace not in ("bt601", "bt709"):
            raise UsageError(f"NVENC colorspace {self.colorspace!r}; valid: bt601, bt709")


def nvenc_options(cfg: NvencConfig, *, fps: Fraction, gpu_id: int = 0, cuda_stream: int = 0) -> Dict[str, Any]:
    """Keyword arguments for `PyNvVideoCodec.CreateEncoder` (pure).

    Bitrates are given in bits per second as integers (the option parser reads a bare number
    as bps; `"10M"` would mean 10·1024² bps). PyNvVideoCodec's option parser reads `fps` with
    `std::stoi` into `frameRateNum` (den 1), so only the nearest integer goes here; a fractional
    rate (29.97) is then set exactly by `set_exact_frame_rate` through the encoder's documented
    reconfigure call. No `colorspace` key: see `NvencConfig`.
    """
    opts: Dict[str, Any] = {
        "codec": cfg.codec,
        "preset": cfg.preset,
        "tuning_info": cfg.tuning_info,
        "rc": cfg.rc,
        "gop": cfg.gop,
        "idrperiod": cfg.gop,
        "bf": cfg.bframes,
        "fps": _fps_option(fps),
        "gpu_id": gpu_id,
    }
    if cfg.rc == "constqp":
        opts["constqp"] = f"{cfg.qp},{cfg.qp},{cfg.qp}"
    if cfg.cq is not None and cfg.rc == "vbr":
        opts["cq"] = cfg.cq
    if cfg.bitrate_kbps:
        opts["bitrate"] = cfg.bitrate_kbps * 1000
        opts["maxbitrate"] = (cfg.max_bitrate_kbps or cfg.bitrate_kbps) * 1000
    if cfg.lookahead:
        opts["lookahead"] = cfg.lookahead
    if cfg.aq:
        opts["aq"] = str(cfg.aq_strength)  # the value is the strength; "1" would be the weakest
    if cfg.codec == "av1":
        opts["use_ivf_container"] = 0  # raw low-overhead OBUs; we mux ourselves
    if cuda_stream:
        opts["cudastream"] = int(cuda_stream)
    return opts


def _exact_rate(fps) -> Fraction:
    rate = Fraction(fps).limit_denominator(1_000_000) if fps else Fraction(30)
    return rate if rate > 0 else Fraction(30)


def _fps_option(fps) -> int:
    """NVENC's `fps` creation option: an integer (the parser's `stoi` would cut "30000/1001")."""
    return max(1, round(_exact_rate(fps)))


def set_exact_frame_rate(enc: Any, fps) -> bool:
    """Give a created encoder the exact rational rate (e.g. 30000/1001) via Reconfigure.

    Returns True when the encoder runs at the exact rate: integer rates need nothing; otherwise
    `GetEncodeReconfigureParams()` → set `frameRateNum`/`frameRateDen` → `Reconfigure(params)`.
    """
    rate = _exact_rate(fps)
    if rate.denominator == 1:
        return True
    get = getattr(enc, "GetEncodeReconfigureParams", None)
    apply = getattr(enc, "Reconfigure", None)
    if get is None or apply is None:
        log.warning("NVENC encoder has no Reconfigure: rate control runs at %d fps, not %s", round(rate), rate)
        return False
    try:
        params = get()
        params.frameRateNum, params.frameRateDen = rate.numerator, rate.denominator
        apply(params)
    except Exception as exc:  # noqa: BLE001 - PyNvVCException
        log.warning("NVENC could not be set to %s fps (%s): rate control runs at %d fps", rate, exc, round(rate))
        return False
    return True


def normalize_packets(result: Any) -> List[Tuple[bytes, Optional[int], bool]]:
    """`Encode()`/`EndEncode()` output → `[(bytes, frame_index or None, keyframe)]`.

    PyNvVideoCodec ≥ 2.1 returns a list of dicts (`data`, `timestamp`, `picture_type`); 1.x/2.0
    returned one blob (bytes or a list of ints) without timestamps.
    """
    if result is None:
        return []
    if isinstance(result, (bytes, bytearray, memoryview)):
        return [(bytes(result), None, False)] if len(result) else []
    items = list(result)
    if not items:
        return []
    if isinstance(items[0], int):
        return [(bytes(bytearray(items)), None, False)]
    out = []
    for item in items:
        if isinstance(item, dict):
            data = bytes(item["data"])
            ts = item.get("timestamp")
            key = item.get("picture_type") in KEY_PICTURE_TYPES
        else:
            data, ts, key = bytes(item), None, False
        if data:
            out.append((data, None if ts is None else int(ts), key))
    return out


class NvencEncoder:
    """`Encoder` on NVENC: HEVC / AV1 / H.264 from device NV12, muxed at `finish()`.

    Args:
        out_path: `.mp4`, `.mov`, `.mkv` or `.ts` (AV1 is refused in `.ts`).
        width, height: frame size (even).
        config: NVENC settings.
        time_base: time base of the frames' `pts`; `frame_rate`: nominal rate (for NVENC's RC).
        audio_from: source file whose audio is copied at mux time.
        device_id: CUDA ordinal; `cuda_stream`: the producer's stream handle (int, non-zero).
        nvc: the PyNvVideoCodec module (injected by tests); imported lazily by default.
    """

    def __init__(self, out_path: Path, width: int, height: int, config: NvencConfig = NvencConfig(), *,
                 time_base: Fraction = Fraction(1, 30), frame_rate: Optional[Fraction] = None,
                 audio_from: Optional[Path] = None, device_id: int = 0, cuda_stream: int = 0,
                 nvc: Any = None) -> None:
        if width % 2 or height % 2:
            raise UsageError(f"NVENC needs even width and height, got {width}x{height}")
        self.out_path = Path(out_path)
        fmt = container_for(self.out_path)
        if config.codec == "av1" and fmt == "mpegts":
            raise UsageError("AV1 in MPEG-TS is not supported by this muxer; use .mkv or .mp4")
        self.width, self.height, self.config = width, height, config
        self.time_base, self.frame_rate = time_base, frame_rate or Fraction(30)
        self.audio_from, self.device_id = audio_from, device_id
        if nvc is None:
            nvc = hardware.import_nvc()
            if nvc is None:
                raise EncodeError("PyNvVideoCodec is not importable on this host: NVENC unavailable")
        check_nvc_version(nvc)
        self._nvc = nvc
        opts = nvenc_options(config, fps=self.frame_rate, gpu_id=device_id, cuda_stream=cuda_stream)
        try:
            self._enc = nvc.CreateEncoder(width, height, "NV12", False, **opts)
        except Exception as exc:  # noqa: BLE001 - PyNvVCException etc.
            raise EncodeError(f"NVENC {config.codec} encoder could not be created on GPU {device_id}: {exc}") from None
        self.exact_frame_rate = set_exact_frame_rate(self._enc, self.frame_rate)
        self.bframes_actual = _call_or_none(self._enc, "GetNumBFrames")
        if self.bframes_actual is not None and self.bframes_actual != config.bframes:
            log.warning("NVENC uses %s B-frames, asked for %d", self.bframes_actual, config.bframes)
        try:
            self.muxer = LiveEsMuxer(config.codec, self.out_path, width=width, height=height,
                                     time_base=time_base, frame_rate=self.frame_rate,
                                     reorder_depth=max(config.bframes, self.bframes_actual or 0),
                                     audio_from=audio_from)
        except Exception:
            _call_or_none(self._enc, "EndEncode")
            raise
        self.packets_muxed = 0
        self.frame_pts: List[Optional[int]] = []
        self.encode_s = 0.0
        self._finished = False

    def _pic_params(self, index: int):
        make = getattr(self._nvc, "NV_ENC_PIC_PARAMS", None)
        if make is None:
            return None
        params = make()
        params.inputTimeStamp = index
        return params

    def encode(self, frame) -> None:
        """Encode one frame (`frame.nv12`: CUDA uint8 `[H*3/2, W]`, or a NumPy array → uploaded)."""
        if self._finished:
            raise EncodeError("encode() after finish()")
        nv12 = _as_cuda_nv12(frame.nv12, self.height, self.width, self.device_id)
        index = len(self.frame_pts)
        self.frame_pts.append(frame.pts)
        t0 = time.perf_counter()
        params = self._pic_params(index)
        try:
            result = self._enc.Encode(nv12, params) if params is not None else self._enc.Encode(nv12)
        except Exception as exc:  # noqa: BLE001
            raise EncodeError(f"NVENC Encode failed at frame {index}: {exc}") from None
        self.encode_s += time.perf_counter() - t0
        self._mux(result)

    def _mux(self, result: Any) -> None:
        for data, ts, key in normalize_packets(result):
            if ts is None:
                raise EncodeError(_OLD_NVC.format(getattr(self._nvc, "__version__", "(this version)")))
            self.muxer.add(data, ts, key, self.frame_pts)
            self.packets_muxed += 1

    def finish(self) -> dict:
        """Flush (`EndEncode`), mux with source timestamps and audio, and return stats.

        Idempotent: a second call returns the first call's stats (the client calls it again
        on shutdown).
        """
        if self._finished:
            return dict(self._stats)
        self._finished = True
        self._stats: dict = {}
        try:
            t0 = time.perf_counter()
            result = self._enc.EndEncode()
            self.encode_s += time.perf_counter() - t0
            self._mux(result)
            if self.packets_muxed != len(self.frame_pts):
                log.warning("NVENC returned %d packets for %d frames", self.packets_muxed, len(self.frame_pts))
        finally:
            stats = self.muxer.close()  # what was muxed stays playable whatever ended the run
        stats.update(encoder=f"nvenc_{self.config.codec}", config=asdict(self.config), path=str(self.out_path),
                     frames_in=len(self.frame_pts), encode_s=round(self.encode_s, 4),
                     bframes_actual=self.bframes_actual)
        self._stats = stats
        return stats


def _call_or_none(obj, name: str):
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def _as_cuda_nv12(nv12, height: int, width: int, device_id: int):
    """A contiguous uint8 `[H*3/2, W]` tensor on the GPU (NVENC reads the chroma at `Y + W*H`)."""
    import torch  # lazy: torch

    t = nv12 if isinstance(nv12, torch.Tensor) else torch.from_numpy(nv12)
    if tuple(t.shape) != (height * 3 // 2, width) or t.dtype != torch.uint8:
        raise EncodeError(f"NVENC wants uint8 NV12 of shape {(height * 3 // 2, width)}, got {tuple(t.shape)} {t.dtype}")
    if t.device.type != "cuda" and torch.cuda.is_available():
        t = t.to(f"cuda:{device_id}", non_blocking=False)
    return t.contiguous()


# x264/x265 preset names → NVENC P1 (fastest) .. P7 (best)
X26X_TO_NVENC = {"ultrafast": "P1", "superfast": "P1", "veryfast": "P2", "faster": "P3", "fast": "P3",
                 "medium": "P4", "slow": "P5", "slower": "P6", "veryslow": "P7", "placebo": "P7"}
DEFAULT_CQ = {"hevc": 28, "h264": 23, "av1": 32}


def nvenc_config_from_settings(settings: EncoderSettings, *, gop: int = 120, bframes: int = 2) -> NvencConfig:
    """Map the client's `EncoderSettings` (codec, crf | qp | bitrate_kbps, preset) to NVENC (pure).

    CRF maps to NVENC constant quality (`rc=vbr`, `cq`: 0..51, AV1 0..63 like SVT-AV1's CRF);
    QP to `constqp`: HEVC/H.264 QP as is, an AV1 quantizer (0..63, the client's `--qp` scale)
    to NVENC AV1's qindex 0..255 through `preedit.qp.av1_qindex`; bitrate to VBR with max =
    target. SVT-AV1 numeric presets 0..13 map onto P7..P1.
    """
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


def nvenc_refusal(info: StreamInfo, settings: EncoderSettings) -> Optional[str]:
    """Why this NVENC path cannot encode `info` as asked (None: it can).

    10-bit / HDR limitation, clearly marked: the path takes 8-bit NV12 only (no P010) and sets no
    VUI colour description or HDR10 SEI, so 10-bit output (a 10-bit source without `--bit-depth 8`)
    and PQ / HLG / mastering-display sources go to the CPU encoder.
    """
    fmt = bitdepth.output_format(settings.codec, info.bit_depth, info.signal, settings.bit_depth)
    if fmt.bits == 10:
        return "10-bit output: this NVENC path takes 8-bit NV12 only (P010 not wired)"
    if info.signal is not None and info.signal.is_hdr:
        return "HDR input: this NVENC path writes no transfer characteristic or HDR10 metadata"
    return None


class ClientNvencEncoder(NvencEncoder):
    """`NvencEncoder` constructed from the client's (path, StreamInfo, EncoderSettings).

    Audio packets the pipeline passes to `mux_audio` are not needed: the source's audio is copied
    from `audio_streams`' file at `finish()` (files only; a live URL source loses its audio here).
    """

    def __init__(self, path, info: StreamInfo, settings: EncoderSettings, *, audio_streams: Sequence = (), sample_aspect_ratio=None,
                 device_id: int = 0, nvc: Any = None, **_ignored: Any) -> None:
        refusal = nvenc_refusal(info, settings)
        if refusal:
            raise EncodeError(f"NVENC not used: {refusal}")
        if nvc is None:
            caps = hardware.capabilities(device_id)
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

    def encode(self, frame: Frame) -> None:
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
