"""Pick the decoder, transport and encoder back ends for `--device cpu|cuda|auto`.

```
 --device cpu   PyAvDecoder ─ TritonTransport (system shm) ─ PyAvEncoder
 --device cuda  preedit.client.gpu stages where the GPU has them, CPU per stage otherwise (logged)
 --device auto  cuda if preedit.client.gpu reports a usable GPU, else cpu (logged)
```
The GPU module (`client/gpu/`) exposes `available()`, `make_decoder(source, **kw)`,
`make_transport(url, model, frame_shape, **kw)` and `make_encoder(path, info, settings, **kw)`;
a `make_*` that raises or returns None falls back to the CPU stage with a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from preedit.errors import UsageError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")


def as_numpy(nv12: Any) -> np.ndarray:
    """A frame buffer as a NumPy array (copies CUDA tensors to host)."""
    if isinstance(nv12, np.ndarray):
        return nv12
    if hasattr(nv12, "cpu"):
        return nv12.cpu().numpy()
    return np.asarray(nv12)


def _cpu_decoder(source, **kw):
    from preedit.client.decode import PyAvDecoder

    return PyAvDecoder(source, **kw)


def _cpu_transport(url, model, frame_shape, **kw):
    from preedit.client.transport import TritonTransport

    return TritonTransport(url, model, frame_shape, **kw)


def _cpu_encoder(path, info, settings, **kw):
    from preedit.client.encode import PyAvEncoder

    return PyAvEncoder(path, info, settings, **kw)


@dataclass
class Backends:
    """Factories for the three stages, and the device each one runs on."""

    device: str
    make_decoder: Callable
    make_transport: Callable
    make_encoder: Callable
    stage_devices: dict


def _gpu_module() -> Optional[Any]:
    try:
        from preedit.client import gpu  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - missing module or missing CUDA packages
        log.debug("GPU back ends not importable: %s", exc)
        return None
    return gpu


def _with_fallback(stage: str, gpu_factory: Optional[Callable], cpu_factory: Callable, devices: dict) -> Callable:
    if gpu_factory is None:
        devices[stage] = "cpu"
        return cpu_factory

    def make(*args, **kw):
        try:
            made = gpu_factory(*args, **kw)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any GPU-side failure falls back per stage
            log.info("GPU %s unavailable (%s); using the CPU %s", stage, exc, stage)
            made = None
        if made is None:
            devices[stage] = "cpu"
            return cpu_factory(*args, **kw)
        devices[stage] = "cuda"
        return made

    return make


def select_backends(device: str = "cpu") -> Backends:
    """The stage factories for `device` (see module docstring)."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    devices = {"decoder": "cpu", "transport": "cpu", "encoder": "cpu"}
    if device == "cpu":
        return Backends("cpu", _cpu_decoder, _cpu_transport, _cpu_encoder, devices)
    gpu = _gpu_module()
    usable = False
    if gpu is not None:
        try:
            usable = bool(gpu.available())
        except Exception as exc:  # noqa: BLE001
            log.debug("GPU availability check failed: %s", exc)
    if not usable:
        if device == "cuda":
            raise UsageError("--device cuda: no usable GPU back end on this machine (see `preedit doctor`); "
                             "valid here: cpu, auto")
        log.info("--device auto: no usable GPU back end; using the CPU pipeline")
        return Backends("cpu", _cpu_decoder, _cpu_transport, _cpu_encoder, devices)
    return Backends(
        "cuda",
        _with_fallback("decoder", getattr(gpu, "make_decoder", None), _cpu_decoder, devices),
        _with_fallback("transport", getattr(gpu, "make_transport", None), _cpu_transport, devices),
        _with_fallback("encoder", getattr(gpu, "make_encoder", None), _cpu_encoder, devices),
        devices,
    )
