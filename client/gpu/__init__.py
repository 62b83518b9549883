"""GPU back ends of the client: NVDEC decode, CUDA shared-memory transport, NVENC encode.

```
 file ──NvdecDecoder──> CUDA NV12 ──CudaShmTransport (Triton, CUDA IPC regions)──> CUDA NV12
      ──NvencEncoder (HEVC/AV1/H.264, EndEncode flush)──> raw ES ──mux (source pts, audio)──> mp4|mkv|ts
 capabilities() + plan_backends(): per-stage choice, logged fallback to the CPU stage
```
Heavy modules (torch.cuda, PyNvVideoCodec, cuda-python via tritonclient) are imported only
inside the factories, so CPU installs import this package freely. Used by the client's
`--device cpu|cuda|auto` factory: `plan = plan_backends(device, capabilities(), input_codec=..,
output_codec=..)`, then `make_decoder` / `make_transport` / `make_encoder` for the stages the
plan puts on `cuda`.
"""

from __future__ import annotations

from typing import Any

from ._caps import architecture, capabilities, documented_codecs
from ._fallback import DEVICES, STAGES, BackendPlan, log_plan, plan_backends
from ._mux import decode_timestamps, mux_elementary

__all__ = [
    "available", "capabilities", "architecture", "documented_codecs",
    "DEVICES", "STAGES", "BackendPlan", "plan_backends", "log_plan",
    "make_decoder", "make_transport", "make_encoder", "NvencConfig", "NvencEncoder", "NvdecDecoder",
    "CudaShmTransport",
    "decode_timestamps", "mux_elementary",
]


def available() -> bool:
    """True when torch sees a CUDA device (cheap; no NVDEC/NVENC probe); False with PREEDIT_FORCE_CPU=1."""
    import os

    if os.environ.get("PREEDIT_FORCE_CPU") == "1":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_decoder(source, **kwargs: Any):
    """NVDEC decoder for the client (`realtime=`, `max_frames=`, ...): CUDA NV12 frames + audio.

    Raises for inputs NVDEC does not take (URLs, real-time pacing); the client then uses its
    CPU decoder. Use `NvdecDecoder` directly for the bare stage.
    """
    from ._adapters import make_client_decoder

    return make_client_decoder(source, **kwargs)


def make_transport(url: str, model: str, frame_shape, n_slots: int = 4, *, qp=None,
                   request_timeout_s: float = 30.0, device_id: int = 0, output_device: str = "cuda",
                   **_ignored: Any):
    """`CudaShmTransport(...)`: Triton over a ring of registered CUDA shared-memory slots.

    Accepts (and ignores) the CPU transport's retry/connect options, so the client's factory
    can call either with the same arguments.
    """
    from ._transport import CudaShmTransport

    return CudaShmTransport(url, model, frame_shape, n_slots, qp=qp, request_timeout_s=request_timeout_s,
                            device_id=device_id, output_device=output_device)


def make_encoder(path, info, settings, **kwargs: Any):
    """NVENC encoder from the client's `(path, StreamInfo, EncoderSettings, audio_streams=...)`.

    Raises `EncodeError` when this GPU has no NVENC for `settings.codec` (H100/H200/A100: none;
    AV1 needs Ada+); the client then encodes on the CPU. `NvencEncoder` is the bare stage.
    """
    from ._adapters import ClientNvencEncoder

    return ClientNvencEncoder(path, info, settings, **kwargs)


def __getattr__(name: str):
    if name in ("NvencConfig", "NvencEncoder"):
        from . import _encoder

        return getattr(_encoder, name)
    if name == "NvdecDecoder":
        from ._decoder import NvdecDecoder

        return NvdecDecoder
    if name == "CudaShmTransport":
        from ._transport import CudaShmTransport

        return CudaShmTransport
    raise AttributeError(name)
