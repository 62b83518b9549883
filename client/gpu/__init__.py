"""Deprecated: the GPU stages moved into the client's stage packages; import from there instead.

    preedit.client.gpu.capabilities      -> preedit.client.hardware.capabilities
    preedit.client.gpu.NvdecDecoder      -> preedit.client.decode.NvdecDecoder
    preedit.client.gpu.NvencEncoder      -> preedit.client.encode.NvencEncoder
    preedit.client.gpu.CudaShmTransport  -> preedit.client.transport.CudaShmTransport
    preedit.client.gpu.plan_backends     -> preedit.client.backends.plan_backends

Kept only while callers outside client/ move over; it will be deleted.
"""

from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "capabilities": "preedit.client.hardware", "architecture": "preedit.client.hardware",
    "documented_codecs": "preedit.client.hardware",
    "NvdecDecoder": "preedit.client.decode", "NvencConfig": "preedit.client.encode",
    "NvencEncoder": "preedit.client.encode", "CudaShmTransport": "preedit.client.transport",
    "plan_backends": "preedit.client.backends", "BackendPlan": "preedit.client.backends",
    "log_plan": "preedit.client.backends", "decode_timestamps": "preedit.client.encode",
    "mux_elementary": "preedit.client.encode",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(name)
    warnings.warn(f"preedit.client.gpu.{name} moved: import it from {_MOVED[name]}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
