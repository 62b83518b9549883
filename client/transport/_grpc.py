"""Pre-edit transport for a remote Triton (`--transport grpc`): frames travel in the gRPC messages.

```
 Frame (uint8 NV12 [H*3/2, W]) ─ submit(): wait for one of n in-flight places ─> async_infer
      (tensor bytes in the request)                                              │
   Future <── edited NV12 (tensor bytes in the response) <── callback ───────────┘
```
System shared memory (the default transport) only works when client and server share a host
(and /dev/shm); a client pod talking to the Triton Service of a Kubernetes cluster sends the
frames in-band instead. Same `PreEditor` contract, retries and set-up checks as
`TritonTransport`; no shared-memory API is used, so it works with Triton's shared-memory
protocol restricted.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from functools import partial
from typing import Optional, Tuple

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from preedit.client import telemetry as metrics
from preedit.client.interfaces import as_numpy
from preedit.client.transport._shm import TritonTransport
from preedit.errors import ServerError
from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

log = logging.getLogger(__name__)


class GrpcTransport(TritonTransport):
    """`PreEditor` on Triton's gRPC API with the frame data inside each request (see module docstring)."""

    def __init__(self, url: str, model: str, frame_shape: Tuple[int, int], n_slots: int = 4,
                 qp: Optional[float] = None, request_timeout_s: float = 30.0, retries: int = 2,
                 retry_backoff_s: float = 0.25, connect_timeout_s: float = 10.0,
                 headers: Optional[dict] = None) -> None:
        self._grpc = grpcclient
        self._exc_type = InferenceServerException
        self.url, self.model = url, model
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        self.request_timeout_s, self.retries, self.retry_backoff_s = request_timeout_s, retries, retry_backoff_s
        self._lock = threading.Condition()
        self._inflight = 0
        self._closed = False
        self._registered: list = []
        self.headers = dict(headers) if headers else None
        self.ring = None
        self._places = threading.BoundedSemaphore(n_slots)
        self.client = grpcclient.InferenceServerClient(url)
        try:
            self._connect(connect_timeout_s)
            self.send_qp = self._check_model(qp)
        except BaseException:
            self.close()
            raise
        self.qp = qp
        self._qp_array = (np.full((1, 1), qp, dtype=triton_to_np_dtype(QP_IN.client_dtype))
                          if self.send_qp else None)

    def set_qp(self, qp: float) -> None:
        """The QP hint for the frames submitted from now on (`preedit run --bitrate` follows the encoder)."""
        self.qp = float(qp)
        if self.send_qp:
            self._qp_array = np.full((1, 1), self.qp, dtype=triton_to_np_dtype(QP_IN.client_dtype))

    def submit(self, nv12, timeout_s: Optional[float] = None) -> Optional[Future]:
        nv12 = as_numpy(nv12)
        if nv12.shape != self.frame_shape:
            raise ServerError(f"frame shape changed mid-stream: {nv12.shape} vs {self.frame_shape}")
        got = self._places.acquire() if timeout_s is None else self._places.acquire(timeout=timeout_s)
        if not got:
            return None
        fut: Future = Future()
        with self._lock:
            self._inflight += 1
        metrics.INFLIGHT.inc()
        self._send(np.ascontiguousarray(nv12, dtype=np.uint8)[None].copy(), fut, 0)
        return fut

    def _send(self, data: np.ndarray, fut: Future, attempt: int) -> None:
        grpc = self._grpc
        frames = grpc.InferInput(FRAMES_IN.name, list(data.shape), FRAMES_IN.client_dtype)
        frames.set_data_from_numpy(data)
        inputs = [frames]
        if self._qp_array is not None:
            qp = grpc.InferInput(QP_IN.name, [1, 1], QP_IN.client_dtype)
            qp.set_data_from_numpy(self._qp_array)
            inputs.append(qp)
        try:
            self.client.async_infer(self.model, inputs, partial(self._done, data, fut, attempt),
                                    outputs=[grpc.InferRequestedOutput(FRAMES_OUT.name)],
                                    client_timeout=self.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - gRPC can fail synchronously too
            self._done(data, fut, attempt, None, exc)

    def _done(self, data: np.ndarray, fut: Future, attempt: int, result, error) -> None:
        if error is not None:  # retry or fail exactly as the shm transport (the "slot" is the frame here)
            super()._done(data, fut, attempt, result, error)
            return
        out = result.as_numpy(FRAMES_OUT.name)
        self._finish(None)
        fut.set_result(None if self._closed or out is None else np.array(out.reshape(self.frame_shape)))

    def _finish(self, slot) -> None:
        self._places.release()
        metrics.INFLIGHT.dec()
        with self._lock:
            self._inflight -= 1
            self._lock.notify_all()
