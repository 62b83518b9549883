"""The one model-runner seam: every stage runs the pre-editor through an `Engine`.

```
 uint8 NV12 [N, H*3/2, W] ─┐
 QP: float or fp32 [N, 1] ─┴─> Engine.run(nv12, qp) ─> uint8 NV12 [N, H*3/2, W]
    OrtEngine       ONNX Runtime (ONNX bytes or file; CPU, or the TensorRT/CUDA EPs)
    TorchEngine     a PreEditorNet in-process (its deploy form NV12PreEditor), any torch device
    TritonEngine    the served model over gRPC or HTTP (batches of at most `max_batch`; `run_many`
                    sends several inputs' requests at once)
    TensorRTEngine  a serialized TensorRT engine on this GPU (torch CUDA tensors)
```
Tensor names come from `preedit.spec`. An engine is also callable (`engine(nv12, qp)`), so a
plain function with the same signature (a reference implementation, a filter) is an engine too.
Evaluation caches key on `model_hash` (None: unknown content, pre-edited points not cached).
"""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from preedit.errors import ModelError, ServerError
from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

QP = Union[float, np.ndarray]


class Engine(Protocol):
    """Runs the pre-editor: uint8 NV12 `[N, H*3/2, W]` + QP (scalar or fp32 `[N, 1]`) → uint8 NV12."""

    model_hash: Optional[str]
    description: str

    def run(self, nv12: np.ndarray, qp: QP) -> np.ndarray: ...


def run_many(engine: Engine, jobs: Sequence[Tuple[np.ndarray, QP]]) -> List[np.ndarray]:
    """`engine.run` of each (nv12, qp) job: all at once where the engine can (`TritonEngine.run_many`:
    every request in flight together), one after the other otherwise."""
    many = getattr(engine, "run_many", None)
    if many is not None:
        return many(jobs)
    return [engine.run(nv12, qp) for nv12, qp in jobs]


def qp_column(qp: QP, n: int) -> np.ndarray:
    """The QP input as fp32 `[n, 1]` from a scalar or an array of n values."""
    if np.ndim(qp) == 0:
        return np.full((n, 1), float(qp), dtype=np.float32)
    return np.asarray(qp, dtype=np.float32).reshape(n, 1)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_hash(net) -> str:
    """Hex SHA-256 of a module's parameters and buffers (names and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Callable:
    """`engine(nv12, qp)` is `engine.run(nv12, qp)`."""

    def __call__(self, nv12: np.ndarray, qp: QP) -> np.ndarray:
        return self.run(nv12, qp)  # type: ignore[attr-defined]


class OrtEngine(_Callable):
    """ONNX Runtime on ONNX bytes or a `.onnx` file.

    Args:
        model: the ONNX graph (bytes) or its path.
        threads: intra-op threads (0 = ORT default, all cores).
        optimize: graph optimisations on (False = ORT_DISABLE_ALL, for the determinism checks).
        providers: execution providers (default CPU; e.g. the TensorRT EP with options on GPU hosts).
        inter_op_threads: inter-op threads; None leaves ORT's default.
        model_hash: content hash; default the SHA-256 of the graph bytes.
        description: label for reports.
        spinning: whether idle intra-op threads spin (ORT's session.intra_op.allow_spinning); None
            leaves ORT's default (spin). The served CPU model does not spin (export/templates).
    """

    def __init__(self, model: Union[bytes, str, Path], threads: int = 1, optimize: bool = True,
                 providers: Sequence = ("CPUExecutionProvider",), inter_op_threads: Optional[int] = 1,
                 model_hash: Optional[str] = None, description: str = "onnx",
                 spinning: Optional[bool] = None) -> None:
        import onnxruntime as ort  # lazy: the client and the training stack do not need it

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        if spinning is not None:  # None: ORT's default (idle intra-op threads spin)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if inter_op_threads is not None:
            opts.inter_op_num_threads = inter_op_threads
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, opts, providers=list(providers))
        self.has_qp = any(i.name == QP_IN.name for i in self.session.get_inputs())
        if model_hash is None:
            model_hash = hashlib.sha256(model).hexdigest() if isinstance(model, bytes) else sha256_file(Path(model))
        self.model_hash = model_hash
        self.description = description
        self.source = description if isinstance(model, bytes) else str(model)

    def run(self, nv12: np.ndarray, qp: QP) -> np.ndarray:
        feeds = {FRAMES_IN.name: np.ascontiguousarray(nv12, dtype=np.uint8)}
        if self.has_qp:
            feeds[QP_IN.name] = qp_column(qp, nv12.shape[0])
        return self.session.run([FRAMES_OUT.name], feeds)[0]


class TorchEngine(_Callable):
    """A `PreEditorNet` in-process through its deploy form `NV12PreEditor` (uint8 in, uint8 out).

    Args:
        net: the network (switched to eval mode unless `eval_mode` is False).
        device: torch device the frames run on.
        chunk: frames per forward (None: the whole batch at once).
        model_hash: content hash; default the hash of the state dict.
        description: label for reports.
        eval_mode: call `net.eval()` (False: leave the trainer's mode alone).
    """

    def __init__(self, net, device="cpu", chunk: Optional[int] = None, model_hash: Optional[str] = None,
                 description: str = "torch", eval_mode: bool = True) -> None:
        import torch  # lazy: torch

        from preedit.network import NV12PreEditor  # lazy: pulls torch

        self._torch = torch
        self.module = NV12PreEditor(net.eval() if eval_mode else net)
        self.device = device
        self.chunk = chunk
        self.model_hash = model_hash if model_hash is not None else state_dict_hash(net)
        self.description = description
        self.source = description

    @classmethod
    def from_checkpoint(cls, path: Path, device="cpu") -> "TorchEngine":
        """Load with `preedit.network.load_checkpoint`; the hash is the file's SHA-256."""
        from preedit.network import load_checkpoint  # lazy: pulls torch

        net, _ = load_checkpoint(path)
        return cls(net.to(device), device, model_hash=sha256_file(Path(path)), description=f"checkpoint {Path(path).name}")

    def run(self, nv12: np.ndarray, qp: QP) -> np.ndarray:
        torch = self._torch
        q_all = qp_column(qp, nv12.shape[0])
        step = self.chunk or max(len(nv12), 1)
        out: List[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(nv12), step):
                x = torch.from_numpy(np.ascontiguousarray(nv12[i : i + step])).to(self.device)
                q = torch.from_numpy(q_all[i : i + step]).to(self.device)
                out.append(self.module(x, q).cpu().numpy())
        return np.concatenate(out) if out else np.empty_like(nv12)


class TritonEngine(_Callable):
    """The served model over gRPC (`protocol="grpc"`, host:8001) or HTTP (`"http"`, host:8000).

    Args:
        url: `host:port`.
        model_name: served model.
        protocol: `grpc` or `http`.
        max_batch: frames per request (None: the whole batch in one request).
        model_hash: content hash of what the server serves, when known.
        timeout_s: network timeout of each request (HTTP), deadline of each request (gRPC).
        check_ready: ask the server first and fail with one line when the model is not ready.
    """

    def __init__(self, url: str, model_name: str = "preedit", protocol: str = "grpc",
                 max_batch: Optional[int] = 8, model_hash: Optional[str] = None, timeout_s: float = 60.0,
                 check_ready: bool = True) -> None:
        if protocol == "grpc":
            import tritonclient.grpc as client_mod  # lazy: tritonclient

            make = lambda: client_mod.InferenceServerClient(url=url)  # noqa: E731
        elif protocol == "http":
            import tritonclient.http as client_mod  # lazy: tritonclient

            make = lambda: client_mod.InferenceServerClient(url=url, network_timeout=timeout_s,  # noqa: E731
                                                             concurrency=4)
        else:
            raise ValueError(f"unknown Triton protocol {protocol!r}; valid: grpc, http")
        self._mod = client_mod
        self._grpc = protocol == "grpc"
        self.timeout_s = timeout_s
        try:
            self._client = make()
            ready = self._client.is_model_ready(model_name) if check_ready else True
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, ...
            raise ServerError(f"Triton at {url} unreachable: {exc}") from None
        if not ready:
            raise ServerError(f"model {model_name!r} is not ready on Triton at {url}")
        self.model_name = model_name
        self.max_batch = max_batch
        self.model_hash = model_hash
        self.description = f"triton {url}/{model_name}"
        self.source = self.description

    def run(self, nv12: np.ndarray, qp: QP) -> np.ndarray:
        return self.run_many([(nv12, qp)])[0]

    def run_many(self, jobs: Sequence[Tuple[np.ndarray, QP]]) -> List[np.ndarray]:
        """Run several inputs (of different frame sizes, say) with all their requests in flight at
        once, so the server's instances work on them side by side; outputs in the order given."""
        g = self._mod
        pending: List[Tuple[int, object]] = []  # (job index, request handle)
        done: Dict[int, object] = {}
        lock, all_back = threading.Lock(), threading.Event()
        total = sum(-(-len(nv12) // (self.max_batch or max(len(nv12), 1))) for nv12, _ in jobs)

        def back(key, result, error) -> None:
            with lock:
                done[key] = error if error is not None else result
                if len(done) == total:
                    all_back.set()

        n = 0
        for j, (nv12, qp) in enumerate(jobs):
            q_all = qp_column(qp, nv12.shape[0])
            step = self.max_batch or max(len(nv12), 1)
            for i in range(0, nv12.shape[0], step):
                chunk = np.ascontiguousarray(nv12[i : i + step], dtype=np.uint8)
                a = g.InferInput(FRAMES_IN.name, list(chunk.shape), FRAMES_IN.client_dtype)
                a.set_data_from_numpy(chunk)
                b = g.InferInput(QP_IN.name, [chunk.shape[0], 1], QP_IN.client_dtype)
                b.set_data_from_numpy(q_all[i : i + step])
                out = [g.InferRequestedOutput(FRAMES_OUT.name)]
                try:
                    if self._grpc:
                        self._client.async_infer(self.model_name, [a, b], partial(back, n), outputs=out,
                                                 client_timeout=self.timeout_s)
                        pending.append((j, n))
                    else:
                        pending.append((j, self._client.async_infer(self.model_name, [a, b], outputs=out)))
                except Exception as exc:  # noqa: BLE001 - any client error is a server fault here
                    raise ServerError(f"Triton inference failed: {exc}") from None
                n += 1
        if self._grpc and total and not all_back.wait(self.timeout_s + 5.0):  # each request has its deadline
            raise ServerError(f"Triton inference: no answer within {self.timeout_s:g} s")
        outs: List[List[np.ndarray]] = [[] for _ in jobs]
        for j, handle in pending:
            try:
                res = done[handle] if self._grpc else handle.get_result()
                if isinstance(res, Exception):
                    raise res
            except Exception as exc:  # noqa: BLE001 - any client error is a server fault here
                raise ServerError(f"Triton inference failed: {exc}") from None
            outs[j].append(res.as_numpy(FRAMES_OUT.name))
        return [np.concatenate(o, axis=0) if o else np.empty_like(nv12) for o, (nv12, _) in zip(outs, jobs)]

    def close(self) -> None:
        self._client.close()


class TensorRTEngine(_Callable):
    """A serialized TensorRT engine on the current CUDA device (needs `tensorrt` and a GPU).

    `run` takes and returns NumPy like every engine; `run_torch` works on CUDA tensors directly.
    """

    def __init__(self, engine_bytes: bytes, model_hash: Optional[str] = None, description: str = "tensorrt") -> None:
        import tensorrt as trt  # lazy: GPU hosts only
        import torch  # lazy: torch

        self._torch = torch
        self.version = trt.__version__
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ModelError("TensorRT could not deserialize the engine (built for another GPU or TensorRT?)")
        self.context = self.engine.create_execution_context()
        self.model_hash = model_hash if model_hash is not None else hashlib.sha256(engine_bytes).hexdigest()
        self.description = description
        self.source = description

    def run_torch(self, nv12, qp):
        """uint8 CUDA tensor `[N, H*3/2, W]` + fp32 CUDA `[N, 1]` → uint8 CUDA tensor."""
        torch = self._torch
        out = torch.empty_like(nv12)
        for name, t in ((FRAMES_IN.name, nv12.contiguous()), (QP_IN.name, qp.contiguous())):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        self.context.set_tensor_address(FRAMES_OUT.name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ModelError("TensorRT engine execution failed")
        stream.synchronize()
        return out

    def run(self, nv12: np.ndarray, qp: QP) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(nv12)).cuda()
        q = torch.from_numpy(qp_column(qp, nv12.shape[0])).cuda()
        return self.run_torch(x, q).cpu().numpy()
