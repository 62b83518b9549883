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
    "make_decoder", "make_transport", "make_encoder", "NvencConfig",
    "decode_timestamps", "mux_elementary",
]


def available() -> bool:
    """True when torch sees a CUDA device (cheap; no NVDEC/NVENC probe)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_decoder(path, **kwargs: Any):
    """`NvdecDecoder(path, device_id=0, ring_size=8, ...)`: CUDA NV12 frames from NVDEC."""
    from ._decoder import NvdecDecoder

    return NvdecDecoder(path, **kwargs)


def make_transport(url: str, model: str, frame_shape, n_slots: int = 4, **kwargs: Any):
    """`CudaShmTransport(...)`: Triton over a ring of registered CUDA shared-memory slots."""
    from ._transport import CudaShmTransport

    return CudaShmTransport(url, model, frame_shape, n_slots, **kwargs)


def make_encoder(out_path, width: int, height: int, config=None, **kwargs: Any):
    """`NvencEncoder(...)`: NVENC from device NV12, muxed with source timestamps and audio."""
    from ._encoder import NvencConfig as _Cfg, NvencEncoder

    return NvencEncoder(out_path, width, height, config or _Cfg(), **kwargs)


def __getattr__(name: str):
    if name == "NvencConfig":
        from ._encoder import NvencConfig

        return NvencConfig
    raise AttributeError(name)
