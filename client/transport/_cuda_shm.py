"""Pre-edit transport over Triton CUDA shared memory: frames never leave the GPU.

```
 slot i: input region  (cudaMalloc + IPC handle)  [NV12 frame | pad | QP fp32]
         output region                             [NV12 frame]
 submit(nv12 CUDA tensor):
   wait for a free slot ─> D2D copy into the slot's input view (transport stream, after the
   producer's stream) ─> stream.synchronize() ─> async_infer (names + offsets only)
 callback: D2D copy of the output view into a fresh tensor ─> sync ─> release slot ─> Future
```
Regions are created once per stream with tritonclient's `cuda_shared_memory` helpers and
registered with the server (brief §3). tritonclient cannot register memory it did not allocate,
so the one device-to-device copy per direction is the floor. The client synchronises before
`infer()` because the server reads the region from another process on its own stream; the output
region is complete when the response arrives. Both modules (`client`, `cudashm`) can be injected,
which is how the slot logic is tested on CPU.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future
from functools import partial
from typing import Any, List, Optional, Tuple

import tritonclient.grpc as grpcclient

from preedit.client.transport._ring import CLOSE_TIMEOUT_S, SlotIndexRing, qp_offset, unregister_reserve
from preedit.errors import ModelError, ServerError
from preedit.spec import DEFAULT_QP, FRAMES_IN, FRAMES_OUT, QP_IN

log = logging.getLogger(__name__)


class _CudaSlot:
    def __init__(self, index: int, name_in: str, name_out: str, h_in, h_out, v_in, v_out) -> None:
        self.index = index
        self.name_in, self.name_out = name_in, name_out
        self.h_in, self.h_out = h_in, h_out  # keep the handles alive while views exist (brief §3.2)
        self.v_in, self.v_out = v_in, v_out


class CudaShmTransport:
    """`PreEditor` over Triton gRPC with a ring of CUDA shared-memory slots.

    Args:
        url: Triton gRPC address `host:port` (same host and GPU as this process).
        model: served model name (e.g. `preedit_onnx_trt`).
        frame_shape: NV12 shape `(H*3/2, W)` of every frame of the stream.
        n_slots: requests in flight at most.
        qp: value sent in the `QP` input (GPU models require it); default `DEFAULT_QP`.
        device_id: CUDA ordinal, as the *server* sees it (keep CUDA_VISIBLE_DEVICES identical).
        output_device: `cuda` (Future gives a CUDA tensor) or `cpu` (a NumPy array, for CPU encoders).
        client, cudashm: injected tritonclient gRPC client / `cuda_shared_memory` module (tests).
        check_model: ask the server for the model's metadata first.
    """

    def __init__(self, url: str, model: str, frame_shape: Tuple[int, int], n_slots: int = 4, *,
                 qp: Optional[float] = None, device_id: int = 0, output_device: str = "cuda",
                 request_timeout_s: float = 30.0, client: Any = None, cudashm: Any = None,
                 check_model: bool = True, headers: Optional[dict] = None) -> None:
        import torch  # lazy: torch

        if output_device not in ("cuda", "cpu"):
            raise ValueError(f"output_device must be cuda or cpu, got {output_device!r}")
        self._torch = torch
        self.url, self.model = url, model
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        self.qp = float(DEFAULT_QP if qp is None else qp)
        self.device_id, self.output_device = device_id, output_device
        self.request_timeout_s = request_timeout_s
        if cudashm is None:
            import tritonclient.utils.cuda_shared_memory as cudashm  # lazy: needs cuda-python
        if client is None:
            client = grpcclient.InferenceServerClient(url)
        self._shm, self.client = cudashm, client
        self.headers = dict(headers) if headers else None  # key of a locked server
        self._hdr = {"headers": self.headers} if self.headers else {}
        self._grpc = grpcclient
        self.on_cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", device_id) if self.on_cuda else torch.device("cpu")
        self.stream = torch.cuda.Stream(device=self.device) if self.on_cuda else None
        self.run_id = f"preedit_{uuid.uuid4().hex[:8]}"
        self.ring = SlotIndexRing(n_slots)
        self.slots: List[_CudaSlot] = []
        self._registered: List[str] = []
        self._closed = False
        self._lock = threading.Lock()
        try:
            if check_model:
                self._check_model()
            self._make_slots(n_slots)
        except BaseException:
            self.close()
            raise

    # -- set-up ------------------------------------------------------------------------------
    def _check_model(self) -> None:
        try:
            meta = self.client.get_model_metadata(self.model, as_json=True)
        except Exception as exc:  # noqa: BLE001 - InferenceServerException or gRPC error
            raise ModelError(f"model {self.model!r} not available on Triton at {self.url}: {exc}") from None
        names = {t["name"] for t in meta.get("inputs", [])}
        outs = {t["name"] for t in meta.get("outputs", [])}
        if FRAMES_IN.name not in names or FRAMES_OUT.name not in outs:
            raise ModelError(f"model {self.model!r} does not follow the preedit contract "
                             f"(inputs {sorted(names)}, outputs {sorted(outs)})")
        self.send_qp = QP_IN.name in names

    def _make_slots(self, n: int) -> None:
        torch, shm = self._torch, self._shm
        if not hasattr(self, "send_qp"):
            self.send_qp = True
        in_bytes = qp_offset(self.frame_bytes) + 4
        for i in range(n):
            name_in, name_out = f"{self.run_id}_in{i}", f"{self.run_id}_out{i}"
            h_in = shm.create_shared_memory_region(name_in, in_bytes, self.device_id)
            h_out = shm.create_shared_memory_region(name_out, self.frame_bytes, self.device_id)
            try:
                for name, handle, size in ((name_in, h_in, in_bytes), (name_out, h_out, self.frame_bytes)):
                    self.client.register_cuda_shared_memory(name, shm.get_raw_handle(handle), self.device_id, size, **self._hdr)
                    self._registered.append(name)
            except Exception as exc:  # noqa: BLE001
                raise ServerError(f"Triton at {self.url} refused CUDA shared memory ({exc}); the server must "
                                  "run on this host with --pid=host and, from 2.69 on, --allow-client-shm=true") from None
            raw_in = torch.from_dlpack(shm.as_shared_memory_tensor(h_in, "UINT8", [in_bytes]))
            raw_out = torch.from_dlpack(shm.as_shared_memory_tensor(h_out, "UINT8", [self.frame_bytes]))
            v_in = raw_in[: self.frame_bytes].view(self.frame_shape)
            off = qp_offset(self.frame_bytes)
            raw_in[off: off + 4].view(torch.float32).fill_(self.qp)
            v_out = raw_out.view(self.frame_shape)
            self.slots.append(_CudaSlot(i, name_in, name_out, h_in, h_out, v_in, v_out))
        if self.stream is not None:
            torch.cuda.synchronize(self.device)

    # -- requests ----------------------------------------------------------------------------
    def submit(self, nv12, timeout_s: Optional[float] = None) -> Optional[Future]:
        """Queue one frame; None if no slot frees up within `timeout_s`.

        Args:
            nv12: uint8 `[H*3/2, W]` limited-range NV12, a CUDA tensor (or a NumPy array/CPU
                tensor, uploaded into the region). The caller may reuse it once this returns.

        Returns:
            Future resolving to the edited NV12 (new CUDA tensor, or NumPy with output_device=cpu).
        """
        torch = self._torch
        if self._closed:
            raise ServerError("transport is closed")
        src = nv12 if isinstance(nv12, torch.Tensor) else torch.from_numpy(nv12)
        if tuple(src.shape) != self.frame_shape:
            raise ServerError(f"frame shape changed mid-stream: {tuple(src.shape)} vs {self.frame_shape}")
        idx = self.ring.acquire(timeout_s)
        if idx is None:
            return None
        slot = self.slots[idx]
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                slot.v_in.copy_(src, non_blocking=True)
            self.stream.synchronize()  # the server reads the region from another process
        else:
            slot.v_in.copy_(src)
        fut: Future = Future()
        self._send(slot, fut)
        return fut

    def _send(self, slot: _CudaSlot, fut: Future) -> None:
        grpc = self._grpc
        h3, w = self.frame_shape
        frames = grpc.InferInput(FRAMES_IN.name, [1, h3, w], FRAMES_IN.client_dtype)
        frames.set_shared_memory(slot.name_in, self.frame_bytes)
        inputs = [frames]
        if self.send_qp:
            qp = grpc.InferInput(QP_IN.name, [1, 1], QP_IN.client_dtype)
            qp.set_shared_memory(slot.name_in, 4, offset=qp_offset(self.frame_bytes))
            inputs.append(qp)
        out = grpc.InferRequestedOutput(FRAMES_OUT.name)
        out.set_shared_memory(slot.name_out, self.frame_bytes)
        try:
            self.client.async_infer(self.model, inputs, partial(self._done, slot, fut), outputs=[out],
                                    client_timeout=self.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - gRPC may fail synchronously
            self._done(slot, fut, None, exc)

    def _done(self, slot: _CudaSlot, fut: Future, result, error) -> None:
        torch = self._torch
        if error is not None:
            self.ring.release(slot.index)
            fut.set_exception(ServerError(f"Triton at {self.url} failed on model {self.model!r}: {error}"))
            return
        try:
            if self.stream is not None:
                torch.cuda.set_device(self.device)  # gRPC callback thread (brief §1.2)
                with torch.cuda.stream(self.stream):
                    if self.output_device == "cpu":
                        edited = slot.v_out.to("cpu", non_blocking=False).numpy()
                    else:
                        edited = slot.v_out.clone()
                self.stream.synchronize()  # own the pixels before the slot is reused
            else:
                edited = slot.v_out.clone()
                edited = edited.numpy() if self.output_device == "cpu" else edited
        except Exception as exc:  # noqa: BLE001
            self.ring.release(slot.index)
            fut.set_exception(ServerError(f"copying the edited frame out of CUDA shared memory failed: {exc}"))
            return
        self.ring.release(slot.index)
        fut.set_result(edited)

    @property
    def inflight(self) -> int:
        return self.ring.in_flight

    # -- teardown ----------------------------------------------------------------------------
    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait for in-flight requests, unregister on the server first, then free the regions; the
        drain and the unregister calls together take at most `timeout_s` (as `TritonTransport.close`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + max(0.0, timeout_s)
        self.ring.wait_idle(max(0.0, deadline - time.monotonic() - unregister_reserve(timeout_s)))
        for name in self._registered:
            left = deadline - time.monotonic()
            if left < 0.05:
                break
            try:
                self.client.unregister_cuda_shared_memory(name, client_timeout=left, **self._hdr)
            except Exception:  # noqa: BLE001 - server may be gone; the memory is ours to free
                break
        self._registered = []
        for slot in self.slots:
            slot.v_in = slot.v_out = None
            for handle in (slot.h_in, slot.h_out):
                try:
                    self._shm.destroy_shared_memory_region(handle)
                except Exception:  # noqa: BLE001
                    pass
        self.slots = []
