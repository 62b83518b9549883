"""Pre-editors the evaluation can run: ONNX Runtime on the model repository, a checkpoint, or Triton.

```
 reference .y4m ─(I420 -> NV12 uint8 [N, H*3/2, W], QP fp32 [N, 1])─> pre-editor ─> NV12 ─> .y4m
```

Every pre-editor has `.model_hash` (content hash used in cache keys and reports; None when the
content cannot be known, which disables caching of pre-edited points) and
`.edit(nv12, qp) -> nv12` on uint8 NV12 `[N, H*3/2, W]` (limited range, any even H and W).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import List, Optional

import numpy as np

from preedit.errors import ModelError, ServerError

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxPreEditor:
    """ONNX Runtime on `<model_dir>/<version>/model.onnx`, hash from `<model_dir>/contract.json`."""

    def __init__(self, model_dir: Path, version: int = 1, threads: int = 1) -> None:
        import json

        import onnxruntime as ort

        onnx_path = Path(model_dir) / str(version) / "model.onnx"
        if not onnx_path.is_file():
            raise ModelError(f"no ONNX model at {onnx_path}; run `preedit export` or pass --checkpoint")
        contract_path = Path(model_dir) / "contract.json"
        file_hash = sha256_file(onnx_path)
        self.model_hash = file_hash
        self.source = str(onnx_path)
        self.description = "onnx"
        if contract_path.is_file():
            meta = json.loads(contract_path.read_text())
            recorded = meta.get("model_sha256")
            if recorded and recorded != file_hash:
                log.warning("contract.json hash %s differs from model.onnx %s; using the file's", recorded[:12],
                            file_hash[:12])  # fmt: skip
            self.description = str(meta.get("source", "onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._has_qp = any(i.name == "QP" for i in self._session.get_inputs())

    def edit(self, nv12: np.ndarray, qp: float) -> np.ndarray:
        """uint8 NV12 `[N, H*3/2, W]` -> uint8 NV12, same shape."""
        feeds = {"NV12_IN": np.ascontiguousarray(nv12, dtype=np.uint8)}
        if self._has_qp:
            feeds["QP"] = np.full((nv12.shape[0], 1), qp, dtype=np.float32)
        return self._session.run(["NV12_OUT"], feeds)[0]


class TorchPreEditor:
    """A `PreEditorNet` in-process (checkpoint or object), through the deploy form `NV12PreEditor`."""

    def __init__(self, net, model_hash: Optional[str] = None, description: str = "torch") -> None:
        import torch

        from preedit.network import NV12PreEditor

        self._module = NV12PreEditor(net.eval())
        if model_hash is None:
            h = hashlib.sha256()
            for name, tensor in sorted(net.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            model_hash = h.hexdigest()
        self.model_hash = model_hash
        self.description = description
        self.source = description
        self._torch = torch

    @classmethod
    def from_checkpoint(cls, path: Path) -> "TorchPreEditor":
        """Load with `preedit.network.load_checkpoint`; the hash is the file's SHA-256."""
        from preedit.network import load_checkpoint

        net, _ = load_checkpoint(path)
        return cls(net, sha256_file(Path(path)), f"checkpoint {Path(path).name}")

    def edit(self, nv12: np.ndarray, qp: float) -> np.ndarray:
        """uint8 NV12 `[N, H*3/2, W]` -> uint8 NV12, same shape."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(nv12))
            q = torch.full((nv12.shape[0], 1), float(qp), dtype=torch.float32)
            return self._module(x, q).numpy()


class TritonPreEditor:
    """The served model over gRPC (`--url host:port`)."""

    def __init__(self, url: str, model_name: str = "preedit", model_hash: Optional[str] = None) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        try:
            self._client = grpcclient.InferenceServerClient(url=url)
            ready = self._client.is_model_ready(model_name)
        except Exception as exc:  # connection refused, DNS, ...
            raise ServerError(f"Triton at {url} unreachable: {exc}") from None
        if not ready:
            raise ServerError(f"model {model_name!r} is not ready on Triton at {url}")
        self._model = model_name
        self.model_hash = model_hash
        self.description = f"triton {url}/{model_name}"
        self.source = self.description

    def edit(self, nv12: np.ndarray, qp: float) -> np.ndarray:
        """uint8 NV12 `[N, H*3/2, W]` -> uint8 NV12, same shape (batches of at most 8)."""
        g = self._grpc
        outs: List[np.ndarray] = []
        for i in range(0, nv12.shape[0], 8):
            chunk = np.ascontiguousarray(nv12[i : i + 8], dtype=np.uint8)
            a = g.InferInput("NV12_IN", list(chunk.shape), "UINT8")
            a.set_data_from_numpy(chunk)
            b = g.InferInput("QP", [chunk.shape[0], 1], "FP32")
            b.set_data_from_numpy(np.full((chunk.shape[0], 1), qp, dtype=np.float32))
            try:
                res = self._client.infer(self._model, [a, b], outputs=[g.InferRequestedOutput("NV12_OUT")])
            except Exception as exc:
                raise ServerError(f"Triton inference failed: {exc}") from None
            outs.append(res.as_numpy("NV12_OUT"))
        return np.concatenate(outs, axis=0)


def preedit_y4m(editor, src: Path, dst: Path, qp: float, batch: int = 4) -> Path:
    """Pre-edit every frame of an 8-bit 4:2:0 `src` .y4m into `dst` (same header)."""
    from preedit.color import i420_to_nv12, nv12_to_i420
    from preedit.quality.y4m import iter_batches, read_y4m, write_y4m

    header, frames = read_y4m(src)
    out = []
    for chunk in iter_batches(frames, batch):
        nv12 = np.stack([i420_to_nv12(y, u, v) for y, u, v in chunk])
        edited = editor.edit(nv12, qp)
        if edited.shape != nv12.shape or edited.dtype != np.uint8:
            raise ModelError(f"pre-editor returned {edited.dtype} {edited.shape}, expected uint8 {nv12.shape}")
        out.extend(nv12_to_i420(e) for e in edited)
    return write_y4m(dst, header, out)
