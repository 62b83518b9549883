"""Triton python-backend model: runs the pre-editor's ONNX graph with ONNX Runtime on CPU.

Copied verbatim into `model_repository/<name>/1/model.py` by `preedit export`; it depends only on
NumPy and onnxruntime (no preedit import), so the repository serves from any Python with those.

```
 requests (NV12_IN uint8 [n, H*3/2, W], optional QP fp32 [n, 1])
   ──one ORT run per frame──> (merge_requests "1": one run per frame size, requests merged)
     output bound to a buffer reused across calls (no per-frame allocation)
   ──> responses (NV12_OUT uint8 [n, H*3/2, W])
```
Parameters (config.pbtxt): `onnx_file`, `default_qp`, `intra_op_threads` (0 = auto: the cores this
process may use, divided among the model's CPU instances, so instances do not oversubscribe them;
the environment variable `PREEDIT_ORT_THREADS` overrides auto), `allow_spinning` ("0" default: ORT's
idle threads sleep instead of spinning, which on a host shared with the encoder and Triton's own
threads costs less than it saves), `merge_requests` ("0" default: the frames Triton hands over
together, in one request or several, run one by one: on CPU a batch of two 720p frames costs ~17 %
more a frame than two runs of one (cache); "1" merges same-size requests into one run).
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


def _intra_op_threads(value, config):
    """ORT intra-op threads: the configured value, or (0) PREEDIT_ORT_THREADS, or the usable cores
    shared among this model's CPU instances (at least 1)."""
    threads = int(value)
    if threads > 0:
        return threads
    env = os.environ.get("PREEDIT_ORT_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    return max(1, cores // instances)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = _intra_op_threads(params.get("intra_op_threads", "0"), config)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.default_qp = np.float32(params.get("default_qp", "32"))
        self.in_name = params.get("input_frames", "NV12_IN")
        self.qp_name = params.get("input_qp", "QP")
        self.out_name = params.get("output_frames", "NV12_OUT")
        self.has_qp = any(i.name == self.qp_name for i in self.session.get_inputs())
        self.threads = options.intra_op_num_threads
        self.merge = params.get("merge_requests", "0") == "1"
        self._out = {}  # (position in execute(), (n, H*3/2, W)) -> output buffer reused across calls

    def _infer(self, feeds, shape, position=0):
        """One ORT run with its output written into a reused buffer, one per position in the
        execute() call: the responses built from them are copied into Triton's shared memory when
        execute() returns, before the next call."""
        key = (position, shape)
        out = self._out.get(key)
        if out is None:
            if len(self._out) >= 32:
                self._out.clear()
            out = self._out[key] = np.empty(shape, dtype=np.uint8)
        # merge_requests "0": a request of n frames runs frame by frame too (batch 1 is the fast case)
        step = shape[0] if self.merge else 1
        for start in range(0, shape[0], step):
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value[start:start + step]))
            part = out[start:start + step]
            binding.bind_output(self.out_name, "cpu", 0, np.uint8, list(part.shape), part.ctypes.data)
            self.session.run_with_iobinding(binding)
        return out

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
        runs = list(groups.values()) if self.merge else [[m] for ms in groups.values() for m in ms]
        for position, members in enumerate(runs):  # unmerged: each request alone (its frames: _infer)
            try:
                frames = np.concatenate([m[1] for m in members]) if len(members) > 1 else members[0][1]
                feeds = {self.in_name: np.ascontiguousarray(frames, dtype=np.uint8)}
                if self.has_qp:
                    feeds[self.qp_name] = np.concatenate([m[2] for m in members])
                out = self._infer(feeds, frames.shape, position)
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
