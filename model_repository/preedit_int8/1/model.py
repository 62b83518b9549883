"""Triton python-backend model: runs the pre-editor's ONNX graph with ONNX Runtime on CPU.

Copied verbatim into `model_repository/<name>/1/model.py` by `preedit export`; it depends only on
NumPy and onnxruntime (no preedit import), so the repository serves from any Python with those.

```
 requests (NV12_IN uint8 [n, H*3/2, W], optional QP fp32 [n, 1])
   ──group by frame size──> one ORT run per size (dynamic batching across streams)
   ──split──> responses (NV12_OUT uint8 [n, H*3/2, W])
```
Parameters (config.pbtxt): `onnx_file`, `default_qp`, `intra_op_threads` (0 = ORT default).
"""

import json
import os
import sys

# WAR: the python-backend stub embeds the system libpython and runs it isolated (-I), so
# PYTHONPATH is ignored by the interpreter itself; `preedit serve` points it at the project's
# virtualenv, and we apply it here. A no-op where PYTHONPATH is unset (e.g. the NGC container).
for _path in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.default_qp = np.float32(params.get("default_qp", "32"))
        self.in_name = params.get("input_frames", "NV12_IN")
        self.qp_name = params.get("input_qp", "QP")
        self.out_name = params.get("output_frames", "NV12_OUT")
        self.has_qp = any(i.name == self.qp_name for i in self.session.get_inputs())

    def _qp(self, request, n):
        tensor = pb_utils.get_input_tensor_by_name(request, self.qp_name)
        if tensor is None:
            return np.full((n, 1), self.default_qp, dtype=np.float32)
        return tensor.as_numpy().astype(np.float32, copy=False).reshape(n, 1)

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for i, request in enumerate(requests):
            try:
                frames = pb_utils.get_input_tensor_by_name(request, self.in_name).as_numpy()
                if frames.ndim != 3 or frames.shape[1] % 3 or frames.shape[2] % 2 or (frames.shape[1] * 2 // 3) % 2:
                    raise ValueError(f"{self.in_name} must be uint8 [n, H*3/2, W] with even H and W, got {frames.shape}")
                groups.setdefault(frames.shape[1:], []).append((i, frames, self._qp(request, frames.shape[0])))
            except Exception as exc:  # one bad request must not fail the batch
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
        for members in groups.values():
            try:
                frames = np.concatenate([m[1] for m in members]) if len(members) > 1 else members[0][1]
                feeds = {self.in_name: np.ascontiguousarray(frames, dtype=np.uint8)}
                if self.has_qp:
                    feeds[self.qp_name] = np.concatenate([m[2] for m in members])
                out = self.session.run([self.out_name], feeds)[0]
                start = 0
                for i, part, _ in members:
                    n = part.shape[0]
                    tensor = pb_utils.Tensor(self.out_name, out[start:start + n])
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[tensor])
                    start += n
            except Exception as exc:
                for i, _, _ in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
        return responses

    def finalize(self):
        self.session = None
