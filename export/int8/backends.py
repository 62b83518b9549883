"""Backends of the determinism check: every way the float and the int8 model run on this host.

```
 float net ──> PyTorch eager fp32 · ONNX Runtime (threads 1|N, graph optimisation on|off)
 IntModel  ──> NumPy integer reference · ORT int8 · PyTorch fbgemm|qnnpack|x86|onednn
```
Each backend is an `Engine` of `preedit.engines` (or a plain callable of the same shape).
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from preedit.engines import OrtEngine, TorchEngine
from preedit.export.int8.onnx import build_onnx
from preedit.export.int8.reference import IntModel, reference_forward
from preedit.export.int8.torch import TorchFloatIntPreEditor, TorchInt8PreEditor, available_engines
from preedit.export.onnx_export import export_onnx_bytes

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # an Engine, or any uint8 [N, H*3/2, W], fp32 [N, 1] -> uint8


def ort_variants(onnx_bytes: bytes, prefix: str = "ort") -> Dict[str, Runner]:
    """ORT with 1 thread / all threads, graph optimisations on / off."""
    out: Dict[str, Runner] = {}
    for threads, optimize in itertools.product((1, 0), (True, False)):
        name = f"{prefix}-t{'all' if threads == 0 else threads}-{'opt' if optimize else 'noopt'}"
        out[name] = OrtEngine(onnx_bytes, threads, optimize)
    return out


def float_backends(net, onnx_bytes: Optional[bytes] = None) -> Dict[str, Runner]:
    """PyTorch eager fp32 and the ORT variants of the float model's ONNX export."""
    if onnx_bytes is None:
        onnx_bytes = export_onnx_bytes(net)
    return {"torch-fp32": TorchEngine(net), **ort_variants(onnx_bytes)}


def int8_backends(model: IntModel, onnx_bytes: Optional[bytes] = None,
                  engines: Optional[Sequence[str]] = None) -> Dict[str, Runner]:
    """NumPy reference, ORT variants of the int8 ONNX, and PyTorch quantized engines."""
    if onnx_bytes is None:
        onnx_bytes = build_onnx(model)
    out: Dict[str, Runner] = {"numpy-ref": lambda x, q: reference_forward(model, x, q)}
    out.update(ort_variants(onnx_bytes))
    for engine in engines if engines is not None else available_engines():
        out[f"torch-{engine}"] = TorchInt8PreEditor(model, engine)
    out["torch-fp32-cpu"] = TorchFloatIntPreEditor(model, "cpu")
    return out
