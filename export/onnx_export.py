"""Trace the deploy form of the network to ONNX and check it against PyTorch with ONNX Runtime.

```
 PreEditorNet ──NV12PreEditor──> torch.onnx.export (dynamic batch/rows/width)
   ──> ONNX Runtime vs PyTorch on frames of several sizes ──> CheckResult (+ content hash)
```
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from preedit.engines import OrtEngine
from preedit.errors import ModelError
from preedit.network import NV12PreEditor, PreEditorNet
from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

OPSET = 17
CHECK_SHAPES: Tuple[Tuple[int, int, int], ...] = ((1, 360, 640), (2, 270, 482), (1, 358, 642))


@dataclass(frozen=True)
class CheckResult:
    """ONNX Runtime vs PyTorch on the same uint8 frames."""

    frames: int
    max_abs_diff: int
    mismatch_share: float

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx_bytes(net: PreEditorNet) -> bytes:
    """Serialized ONNX of `NV12PreEditor(net)` with dynamic batch, rows and width."""
    module = NV12PreEditor(net.eval().cpu())
    example = (torch.zeros(1, 405, 482, dtype=torch.uint8), torch.full((1, 1), 32.0))
    axes = {0: "batch", 1: "rows", 2: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, buffer,
            input_names=[FRAMES_IN.name, QP_IN.name], output_names=[FRAMES_OUT.name],
            dynamic_axes={FRAMES_IN.name: axes, QP_IN.name: {0: "batch"}, FRAMES_OUT.name: axes},
            opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def synthetic_frames(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic textured NV12 frames (gradients + noise), uint8 `[batch, H*3/2, W]`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : height * 3 // 2, 0:width]
    base = 16 + (xx * 3 + yy * 2) % 220
    noise = rng.integers(-20, 21, size=(batch, height * 3 // 2, width))
    return np.clip(base[None] + noise, 0, 255).astype(np.uint8)


def check_onnx(onnx_bytes: bytes, net: PreEditorNet, frames: Optional[Sequence[np.ndarray]] = None,
               qp: float = 32.0) -> CheckResult:
    """Run ONNX Runtime and PyTorch on the same frames; count differing output pixels."""
    engine = OrtEngine(onnx_bytes, threads=0, inter_op_threads=None)
    module = NV12PreEditor(net.eval().cpu())
    if frames is None:
        frames = [synthetic_frames(b, h, w, seed=i) for i, (b, h, w) in enumerate(CHECK_SHAPES)]
    total = differing = count = 0
    worst = 0
    for batch in frames:
        q = np.full((batch.shape[0], 1), qp, dtype=np.float32)
        got = engine.run(batch, q)
        with torch.no_grad():
            want = module(torch.from_numpy(batch), torch.from_numpy(q)).numpy()
        if got.shape != want.shape:
            raise ModelError(f"ONNX output shape {got.shape} != PyTorch {want.shape} for input {batch.shape}")
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        worst = max(worst, int(diff.max()))
        differing += int(np.count_nonzero(diff))
        total += diff.size
        count += batch.shape[0]
    return CheckResult(frames=count, max_abs_diff=worst, mismatch_share=differing / max(total, 1))


def export_checked(net: PreEditorNet, frames: Optional[List[np.ndarray]] = None,
                   max_abs_diff: int = 1, max_mismatch_share: float = 1e-3) -> Tuple[bytes, CheckResult]:
    """Export and verify; raises ModelError when ONNX Runtime disagrees beyond float rounding ties."""
    data = export_onnx_bytes(net)
    result = check_onnx(data, net, frames)
    if result.max_abs_diff > max_abs_diff or result.mismatch_share > max_mismatch_share:
        raise ModelError(f"ONNX Runtime disagrees with PyTorch: max |diff| {result.max_abs_diff}, "
                         f"{result.mismatch_share:.2e} of pixels differ")
    return data, result


def write_onnx(data: bytes, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
