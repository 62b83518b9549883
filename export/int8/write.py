"""Writing the deterministic model: quantize, check bit for bit, write `preedit_int8` with its record.

```
 float net + calibration frames ──quantize──> IntModel ──build_onnx──> int8 ONNX
   ──ORT output == integer reference digests?──> model_repository/preedit_int8/{config.pbtxt, contract.json,
                                                  1/model.onnx, 1/int_model.npz}
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from preedit.engines import OrtEngine
from preedit.errors import ModelError
from preedit.export.int8.compare import VERIFY_CLIP, first_mismatch, run_frames, verification_frames, verification_record
from preedit.export.int8.frames import load_frames
from preedit.export.int8.onnx import build_onnx
from preedit.export.int8.quantize import DEFAULT_SCHEME, quantize
from preedit.export.int8.reference import IntModel
from preedit.export.repository import write_onnx_model
from preedit.paths import clips_dir

#: Calibration clips: training side of the split (quality is measured on the held-out clips).
CALIB_CLIPS = ("bottle-detection.mp4", "asl-book.mkv", "stream-of-water.webm", "face-webcam-1080x720.mp4")
INT8_MODEL_NAME = "preedit_int8"
INT_MODEL_FILE = "int_model.npz"


def default_calibration_frames(count: int = 16, max_width: int = 640) -> List[np.ndarray]:
    """`count` frames interleaved over `CALIB_CLIPS` (every 4th frame of each clip)."""
    per_clip = -(-count // len(CALIB_CLIPS))
    groups = [load_frames(clips_dir() / c, per_clip * 4, max_width=max_width)[::4] for c in CALIB_CLIPS
              if (clips_dir() / c).is_file()]
    if not groups:
        raise ModelError(f"no calibration clips found under {clips_dir()} (looked for {', '.join(CALIB_CLIPS)})")
    pool = [g[i] for i in range(per_clip) for g in groups if i < len(g)]
    return pool[:count]


def export_deterministic(net, repo_dir: Path, calib_frames: Optional[Sequence[np.ndarray]] = None,
                         scheme=None, *, model_name: str = INT8_MODEL_NAME, verify_clip: str = VERIFY_CLIP,
                         verify_frames: int = 9, metadata: Optional[Mapping] = None, **config_kwargs) -> Path:
    """Quantize `net`, check it bit for bit, and write `<repo_dir>/<model_name>/`.

    Args:
        net: float `PreEditorNet`.
        repo_dir: model repository root.
        calib_frames: uint8 NV12 frames `[H*3/2, W]` (default: `default_calibration_frames()`).
        scheme: `QuantScheme` (default: `quantize.DEFAULT_SCHEME`, the search's pick).
        model_name: served model name.
        verify_clip: raw clip (shared clip set) whose reference digests go into the config.
        verify_frames: frames of `verify_clip` recorded.
        metadata: extra JSON-able provenance for contract.json (e.g. the checkpoint path).
        config_kwargs: passed to the lead's `cpu_model_config` (max_batch_size, instance_count, ...).

    Returns:
        The model directory.

    Raises:
        ModelError: when ONNX Runtime's output differs from the NumPy integer reference.
    """
    scheme = scheme or DEFAULT_SCHEME
    if calib_frames is None:
        calib_frames = default_calibration_frames(scheme.calib_frames)
    model = quantize(net, calib_frames, scheme)
    onnx_bytes = build_onnx(model)
    frames = verification_frames(verify_clip, verify_frames)
    record = verification_record(model, verify_clip, frames=frames)
    got = run_frames(OrtEngine(onnx_bytes, threads=0), frames, record["qps"])
    bad = first_mismatch(record["output_sha256"], got)
    if bad is not None:
        raise ModelError(f"int8 ONNX Runtime output differs from the integer reference at frame {bad['frame']}")
    params = dict(config_kwargs.pop("extra_parameters", {}) or {})
    params.update({
        "deterministic": "true",
        "quant_scheme": json.dumps(scheme.to_dict(), sort_keys=True),
        "int_model_sha256": model.content_hash(),
        "verify_clip": verify_clip,
        "verify_qps": json.dumps(record["qps"]),
        "verify_output_sha256": json.dumps(record["output_sha256"]),
        "verify_sha256": record["sha256"],
    })
    meta = {"deterministic": True, "quant_scheme": scheme.to_dict(), "int_model_sha256": model.content_hash(),
            "verification": record, "net_config": {k: getattr(net.config, k) for k in ("channels", "depth", "max_delta")},
            "source": "int8 static quantization (preedit.export.int8.quantize)"}
    meta.update(metadata or {})
    model_dir = write_onnx_model(onnx_bytes, Path(repo_dir), model_name, metadata=meta,
                                 extra_parameters=params, **config_kwargs)
    (model_dir / "1" / INT_MODEL_FILE).write_bytes(model.to_npz_bytes())
    return model_dir


def load_int_model(model_dir: Path, version: int = 1) -> IntModel:
    path = Path(model_dir) / str(version) / INT_MODEL_FILE
    if not path.is_file():
        raise ModelError(f"no integer model at {path}; export with `preedit export --deterministic`")
    return IntModel.from_npz_bytes(path.read_bytes())
