"""The one place that picks each client stage's back end for `--device cpu|cuda|auto`, and falls back.

```
 device + capabilities() + output codec ──plan_backends() (pure)──> BackendPlan(decode, preedit, encode, reasons)
 select_backends() ──> Backends: make_decoder / make_transport / make_encoder
   stage planned on cuda:  GPU implementation; if it refuses (real-time pacing, codec without NVDEC,
                           server without CUDA shm, ...) the CPU one, logged (runtime fallback)
   stage planned on cpu:   CPU implementation
      decode   PyAvDecoder        | make_nvdec_decoder (ClientNvdecDecoder)
      preedit  TritonTransport    | CudaShmTransport
      encode   PyAvEncoder        | ClientNvencEncoder
```
The planner is pure (every decision is unit-tested on CPU). A fallback replaces one stage only
(GPU decode + GPU pre-edit + CPU encode is the normal plan on an H100). `strict=True` turns
every fallback into a `UsageError` (tests and benchmarks want that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from preedit import codecs
from preedit.client.decode import PyAvDecoder, make_nvdec_decoder
from preedit.client.encode import ClientNvencEncoder, EncoderSettings, PyAvEncoder
from preedit.client import hardware
from preedit.client.interfaces import Decoder, Encoder, PreEditor, StreamInfo
from preedit.client.transport import CudaShmTransport, TritonTransport
from preedit.errors import UsageError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
STAGES = ("decode", "preedit", "encode")


@dataclass(frozen=True)
class BackendPlan:
    """Which implementation runs each stage, and why any stage fell back to the CPU."""

    decode: str
    preedit: str
    encode: str
    reasons: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stage in STAGES:
            if getattr(self, stage) not in ("cpu", "cuda"):
                raise ValueError(f"{stage} back end must be cpu or cuda, got {getattr(self, stage)!r}")

    @property
    def any_cuda(self) -> bool:
        return "cuda" in (self.decode, self.preedit, self.encode)

    def describe(self) -> str:
        return f"decode={self.decode} preedit={self.preedit} encode={self.encode}"


def _norm_codec(name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    name = name.lower()
    return codecs.FAMILY_ALIASES.get(name, name)


def plan_backends(device: str, caps: Mapping, *, input_codec: Optional[str] = None,
                  output_codec: Optional[str] = None, input_bit_depth: int = 8,
                  server_shares_gpu: bool = True, strict: bool = False) -> BackendPlan:
    """Choose each stage's back end (pure).

    Args:
        device: `cpu`, `cuda` or `auto`.
        caps: `capabilities()` output (`cuda`, `nvdec`, `nvenc`, `video_stages_usable`).
        input_codec: codec of the input video stream (`h264`, `hevc`, `av1`, `vp8`, ...); None:
            not known yet (the NVDEC decoder checks it when it opens the input, and the client
            falls back to the CPU decoder then).
        output_codec: codec to encode (`hevc`, `av1`, `h264`); None = unknown (CPU).
        input_bit_depth: 8, or 10 for P010 sources (NVDEC path is 8-bit NV12 only here).
        server_shares_gpu: Triton runs on this host and GPU, so CUDA shared memory is possible.
        strict: raise `UsageError` instead of falling back (only meaningful with `device="cuda"`).

    Returns:
        The plan; `reasons` lists one line per stage that is not on the GPU although asked for.
    """
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cpu":
        return BackendPlan("cpu", "cpu", "cpu", [])
    reasons: List[str] = []
    if not caps.get("cuda"):
        why = "; ".join(caps.get("reasons", [])) or "no CUDA device"
        if strict:
            raise UsageError(f"--device cuda asked for, but {why}")
        return BackendPlan("cpu", "cpu", "cpu", [f"all stages on CPU: {why}"])
    video_ok = caps.get("video_stages_usable", True)
    in_codec, out_codec = _norm_codec(input_codec), _norm_codec(output_codec)

    decode = "cuda"
    if not video_ok:
        decode, why = "cpu", "PyNvVideoCodec is not importable"
    elif in_codec is not None and in_codec not in caps.get("nvdec", []):
        decode, why = "cpu", f"NVDEC on this GPU cannot decode {in_codec} (has: {', '.join(caps.get('nvdec', [])) or 'none'})"
    elif input_bit_depth != 8:
        decode, why = "cpu", f"{input_bit_depth}-bit input: the GPU decoder path is 8-bit NV12 only"
    if decode == "cpu":
        reasons.append(f"decode on CPU: {why}")

    preedit = "cuda" if server_shares_gpu else "cpu"
    if preedit == "cpu":
        reasons.append("pre-edit transport on system shared memory: Triton is not on this GPU")

    encode = "cuda"
    if not video_ok:
        encode, why = "cpu", "PyNvVideoCodec is not importable"
    elif out_codec is None:
        encode, why = "cpu", "output codec unknown"
    elif out_codec not in caps.get("nvenc", []):
        name = (caps.get("device") or {}).get("name", "this GPU")
        have = ", ".join(caps.get("nvenc", [])) or "no NVENC at all"
        encode, why = "cpu", f"{name} cannot NVENC-encode {out_codec} ({have})"
    if encode == "cpu":
        reasons.append(f"encode on CPU: {why}")

    if strict and reasons:
        raise UsageError("--device cuda with fallback disabled, but " + "; ".join(reasons))
    return BackendPlan(decode, preedit, encode, reasons)


def log_plan(plan: BackendPlan, logger: logging.Logger = log) -> None:
    """One INFO line for the plan, one WARNING per fallback."""
    logger.info("back ends: %s", plan.describe())
    for reason in plan.reasons:
        logger.warning("GPU fallback: %s", reason)


# -- stage implementations ---------------------------------------------------------------------
def _cpu_decoder(source: str, *, realtime: bool = False, max_frames: Optional[int] = None,
                 open_timeout_s: float = 10.0, **_gpu_only: Any) -> Decoder:
    return PyAvDecoder(source, realtime=realtime, open_timeout_s=open_timeout_s, max_frames=max_frames)


def _cuda_decoder(source: str, *, realtime: bool = False, max_frames: Optional[int] = None,
                  open_timeout_s: float = 10.0, device_id: int = 0, **_cpu_only: Any) -> Decoder:
    return make_nvdec_decoder(source, realtime=realtime, max_frames=max_frames, device_id=device_id,
                              open_timeout_s=open_timeout_s)


def _cpu_transport(url: str, model: str, frame_shape: Tuple[int, int], *, n_slots: int = 4,
                   qp: Optional[float] = None, request_timeout_s: float = 30.0,
                   connect_timeout_s: float = 10.0, headers: Optional[dict] = None,
                   **_gpu_only: Any) -> PreEditor:
    return TritonTransport(url, model, frame_shape, n_slots, qp=qp, request_timeout_s=request_timeout_s,
                           connect_timeout_s=connect_timeout_s, headers=headers)


def _cuda_transport(url: str, model: str, frame_shape: Tuple[int, int], *, n_slots: int = 4,
                    qp: Optional[float] = None, request_timeout_s: float = 30.0, device_id: int = 0,
                    output_device: str = "cuda", headers: Optional[dict] = None,
                    **_cpu_only: Any) -> PreEditor:
    return CudaShmTransport(url, model, frame_shape, n_slots, qp=qp, request_timeout_s=request_timeout_s,
                            device_id=device_id, output_device=output_device, headers=headers)


def _cpu_encoder(path: str, info: StreamInfo, settings: EncoderSettings, *, audio_streams: Sequence = (),
                 sample_aspect_ratio: Any = None, **_gpu_only: Any) -> Encoder:
    return PyAvEncoder(path, info, settings, audio_streams=audio_streams, sample_aspect_ratio=sample_aspect_ratio)


def _cuda_encoder(path: str, info: StreamInfo, settings: EncoderSettings, *, audio_streams: Sequence = (),
                  sample_aspect_ratio: Any = None, device_id: int = 0, **_cpu_only: Any) -> Encoder:
    return ClientNvencEncoder(path, info, settings, audio_streams=audio_streams,
                              sample_aspect_ratio=sample_aspect_ratio, device_id=device_id)


# stage -> (CPU factory, GPU factory); tests swap entries to fake a GPU.
IMPLEMENTATIONS: Dict[str, Tuple[Callable[..., Any], Callable[..., Any]]] = {
    "decode": (_cpu_decoder, _cuda_decoder),
    "preedit": (_cpu_transport, _cuda_transport),
    "encode": (_cpu_encoder, _cuda_encoder),
}


@dataclass
class Backends:
    """The stage factories of one run: each makes the planned implementation, falling back once.

    `stage_devices` says where each stage actually ran (`decode`, `preedit`, `encode` → `cpu` |
    `cuda`), updated as stages are made.
    """

    device: str
    plan: BackendPlan
    strict: bool = False
    stage_devices: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage_devices = {stage: getattr(self.plan, stage) for stage in STAGES}

    def _make(self, stage: str, *args: Any, **kw: Any) -> Any:
        cpu, cuda = IMPLEMENTATIONS[stage]
        if getattr(self.plan, stage) == "cuda":
            try:
                made = cuda(*args, **kw)
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - any GPU-side refusal falls back for this stage
                if self.strict:
                    raise UsageError(f"--device cuda with fallback disabled, but the GPU {stage} stage "
                                     f"failed: {exc}") from None
                log.warning("GPU fallback: %s on CPU: %s", stage, exc)
            else:
                self.stage_devices[stage] = "cuda"
                return made
        self.stage_devices[stage] = "cpu"
        return cpu(*args, **kw)

    def make_decoder(self, source: str, **kw: Any) -> Decoder:
        """`realtime=`, `max_frames=`, `open_timeout_s=` (URL open/read timeout), `device_id=` (GPU)."""
        return self._make("decode", source, **kw)

    def make_transport(self, url: str, model: str, frame_shape: Tuple[int, int], **kw: Any) -> PreEditor:
        """`n_slots=`, `qp=`, `request_timeout_s=`, `headers=` (server key), `connect_timeout_s=` (CPU),
        `device_id=` (GPU)."""
        return self._make("preedit", url, model, frame_shape, **kw)

    def make_encoder(self, path: str, info: StreamInfo, settings: EncoderSettings, **kw: Any) -> Encoder:
        """`audio_streams=`, `sample_aspect_ratio=`, `device_id=` (GPU)."""
        return self._make("encode", path, info, settings, **kw)


def select_backends(device: str = "cpu", *, output_codec: Optional[str] = None, strict: bool = False,
                    caps: Optional[Mapping] = None) -> Backends:
    """The stage factories for `device` (see module docstring).

    Args:
        device: `cpu`, `cuda` or `auto`.
        output_codec: the codec the run encodes (decides whether NVENC can be used).
        strict: no fallback: a stage that cannot run on the GPU raises `UsageError`.
        caps: `capabilities()` output (probed when None and `device` is not `cpu`).
    """
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cpu":
        return Backends("cpu", plan_backends("cpu", {}))
    caps = hardware.capabilities() if caps is None else caps
    if not caps.get("cuda"):
        if device == "cuda":
            raise UsageError("--device cuda: no usable GPU back end on this machine (see `preedit doctor`); "
                             "valid here: cpu, auto")
        log.info("--device auto: no usable GPU back end; using the CPU pipeline")
        return Backends("cpu", plan_backends("cpu", {}))
    plan = plan_backends(device, caps, output_codec=output_codec, strict=strict)
    log_plan(plan, log)
    return Backends("cuda", plan, strict=strict)
