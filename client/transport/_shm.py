"""CPU pre-edit transport: Triton over gRPC, frames through a ring of system shared memory.

```
 Frame (uint8 NV12 [H*3/2, W], limited range)
   └─ submit(): wait for a free slot ─> copy into slot's input region ─> async_infer
        (request carries only region names / offsets; several requests in flight)
   └─ callback: copy NV12_OUT from the slot's output region ─> Future ─> release slot
```
Each request holds one frame `[1, H*3/2, W]`, or up to `frames_per_request` consecutive frames
`[n, H*3/2, W]` (each with its own Future; a group that does not fill within `linger_s` of its first
frame, or at `close()`, goes as it is): fewer requests, so less gRPC and stub hand-off a frame, at
up to `frames_per_request - 1` frames of extra latency. Triton's dynamic batcher groups requests
from all clients. Failed requests are retried a bounded number of times, then the Future raises
`ServerError`. `close(timeout_s)` waits for in-flight requests, unregisters and unlinks every region,
all within `timeout_s` (default 5 s, even when the server is frozen).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from functools import partial
from typing import Optional, Tuple

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from preedit.client import telemetry
from preedit.client.interfaces import as_numpy
from preedit.client.transport._ring import CLOSE_TIMEOUT_S, Slot, SlotRing, unregister_reserve
from preedit.errors import ModelError, ServerError
from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL")


def _status(exc) -> str:
    status = getattr(exc, "status", None)
    value = status() if callable(status) else status
    return str(value or "")


def _message(exc) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else (msg or str(exc))
    return " ".join(str(text).split())[:300]


class _Group:
    """The frames of one request: its slot and one Future a frame, in submit order."""

    __slots__ = ("slot", "futures")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.futures: list = []


class TritonTransport:
    """`PreEditor` on Triton's gRPC API with a system-shared-memory slot ring.

    Args:
        url: Triton gRPC address `host:port`.
        model: served model name (e.g. `preedit`, `preedit_int8`).
        frame_shape: NV12 shape `(H*3/2, W)` of every frame of the stream.
        n_slots: requests in flight at most (ring size).
        qp: value for the optional `QP` input; None leaves it out (model default).
        request_timeout_s: per-request client deadline.
        retries: re-sends of a failed request before giving up.
        retry_backoff_s: wait before the first re-send (doubles each time).
        headers: gRPC headers carrying the server's API key (shm register/unregister are keyed).
        frames_per_request: consecutive frames one request carries at most (1: one frame a request).
        linger_s: how long a group that is not full waits for more frames before it is sent.
    """

    def __init__(self, url: str, model: str, frame_shape: Tuple[int, int], n_slots: int = 4,
                 qp: Optional[float] = None, request_timeout_s: float = 30.0, retries: int = 2,
                 retry_backoff_s: float = 0.25, connect_timeout_s: float = 10.0,
                 headers: Optional[dict] = None, frames_per_request: int = 1, linger_s: float = 0.005) -> None:
        if frames_per_request < 1 or linger_s < 0:
            raise ValueError(f"frames_per_request must be >= 1 and linger_s >= 0, got {frames_per_request}, {linger_s}")
        self._grpc = grpcclient
        self.headers = dict(headers) if headers else None  # key of a locked server (preedit.serve.auth_headers)
        self._exc_type = InferenceServerException
        self.url = url
        self.model = model
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._lock = threading.Condition()
        self.frames_per_request = int(frames_per_request)
        self.linger_s = float(linger_s)
        self._group: Optional[_Group] = None  # the slot being filled (frames_per_request > 1)
        self._group_lock = threading.Lock()
        self._inflight = 0
        self._closed = False
        self._registered: list = []
        self.ring: Optional[SlotRing] = None
        self.client = grpcclient.InferenceServerClient(url)
        try:
            self._connect(connect_timeout_s)
            self.send_qp = self._check_model(qp)
            self.qp = qp
            self.ring = SlotRing(n_slots, self.frame_bytes, frames_per_slot=self.frames_per_request)
            for slot in self.ring.slots:  # (each slot's QP is written with its frame, in submit)
                for region in (slot.inp, slot.out):
                    self.client.register_system_shared_memory(region.name, region.key, region.byte_size,
                                                               headers=self.headers)
                    self._registered.append(region.name)
            self._sweep_dead_clients()
        except self._exc_type as exc:
            self.close()
            raise ServerError(f"Triton at {url} refused shared memory: {_message(exc)}") from None
        except BaseException:
            self.close()
            raise

    def _sweep_dead_clients(self) -> None:
        """Unregister (and unlink, when ours) regions of preedit clients that died without closing:
        names are `preedit_<pid>_...`; a pid that no longer exists is dead. Best effort."""
        try:
            status = self.client.get_system_shared_memory_status(as_json=True, headers=self.headers,
                                                                 client_timeout=5.0)
        except Exception:  # noqa: BLE001 - status is keyed on a locked server; no key: skip
            return
        regions = status.get("regions", status)
        for name, region in (regions.items() if isinstance(regions, dict) else []):
            parts = name.split("_")
            if len(parts) < 3 or parts[0] != "preedit" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                self.client.unregister_system_shared_memory(name, headers=self.headers, client_timeout=2.0)
            except Exception:  # noqa: BLE001
                continue
            key = str(region.get("key", "") if isinstance(region, dict) else "")
            path = "/dev/shm/" + key.lstrip("/")
            try:
                if key and os.stat(path).st_uid == os.getuid():
                    os.unlink(path)
            except OSError:
                pass
            log.info("unregistered shm region %s of dead client %d", name, pid)

    # -- set-up checks -----------------------------------------------------------------------
    def _connect(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                if self.client.is_server_live(client_timeout=2.0):
                    return
                last = "server not live"
            except self._exc_type as exc:
                last = _message(exc)
            if time.monotonic() > deadline:
                raise ServerError(f"cannot reach Triton at {self.url} (gRPC): {last}")
            time.sleep(0.25)

    def _check_model(self, qp: Optional[float]) -> bool:
        try:
            ready = self.client.is_model_ready(self.model, client_timeout=5.0)
        except self._exc_type:
            ready = False
        if not ready:
            try:
                index = self.client.get_model_repository_index(as_json=True, headers=self.headers).get("models", [])
                names = sorted({m["name"] for m in index})
            except self._exc_type:
                names = []
            raise ModelError(f"model {self.model!r} is not ready on Triton at {self.url}; "
                             f"models there: {', '.join(names) or 'none'}")
        meta = self.client.get_model_metadata(self.model, as_json=True)
        inputs = {t["name"] for t in meta.get("inputs", [])}
        outputs = {t["name"] for t in meta.get("outputs", [])}
        if FRAMES_IN.name not in inputs or FRAMES_OUT.name not in outputs:
            raise ModelError(f"model {self.model!r} does not follow the preedit contract: inputs "
                             f"{sorted(inputs)}, outputs {sorted(outputs)}; expected {FRAMES_IN.name} -> "
                             f"{FRAMES_OUT.name}")
        if qp is None:
            return False
        if QP_IN.name not in inputs:
            log.warning("model %r has no %s input; --qp/--crf is not sent to the model", self.model, QP_IN.name)
            return False
        return True

    def served_shape(self) -> str:
        """How the server runs the model: CPU/GPU instances and ORT intra-op threads each, from its
        model config (keyed on a locked server: our key is in the headers); best effort."""
        try:
            config = self.client.get_model_config(self.model, as_json=True, headers=self.headers, client_timeout=5.0)
        except Exception:  # noqa: BLE001 - a report line must not fail the run
            return "unknown (model config not readable)"
        config = config.get("config", config)
        groups = config.get("instance_group", [])
        count = sum(int(g.get("count", 1)) for g in groups) or 1
        kind = (groups[0].get("kind", "") if groups else "").replace("KIND_", "") or "?"
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "")
        each = {"": "", "0": ", ORT threads auto (the server's cores / instances)"}.get(threads, f", ORT threads {threads}")
        return f"{count} {kind} instance(s){each}"

    def set_qp(self, qp: float) -> None:
        """The QP hint for the frames submitted from now on (`preedit run --bitrate` follows the encoder)."""
        self.qp = float(qp)

    # -- requests ----------------------------------------------------------------------------
    def submit(self, nv12: np.ndarray, timeout_s: Optional[float] = None) -> Optional[Future]:
        """Queue one frame; None if no slot frees up within `timeout_s` (None: wait forever).

        Args:
            nv12: uint8 `[H*3/2, W]` limited-range NV12.

        Returns:
            A Future resolving to the edited uint8 NV12 `[H*3/2, W]` (a new array).
        """
        nv12 = as_numpy(nv12)
        if nv12.shape != self.frame_shape:
            raise ServerError(f"frame shape changed mid-stream: {nv12.shape} vs {self.frame_shape}")
        with self._group_lock:
            group = self._group
        fresh = group is None
        if fresh:
            slot = self.ring.acquire(timeout_s)
            if slot is None:
                return None
            group = _Group(slot)
        fut: Future = Future()
        with self._group_lock:
            if fresh:
                if self._group is not None:  # another thread opened a group meanwhile: join it
                    self.ring.release(group.slot)
                    group, fresh = self._group, False
                else:
                    self._group = group
            row = len(group.futures)
            np.copyto(group.slot.frame_in(self.frame_shape, row), nv12)
            if self.send_qp:
                group.slot.qp_in(row)[...] = np.float32(self.qp)  # this frame's hint (`set_qp` may move it)
            group.futures.append(fut)
            full = len(group.futures) >= self.frames_per_request
            if full:
                self._group = None
        with self._lock:
            self._inflight += 1
        telemetry.INFLIGHT.inc()
        if full:
            self._send(group, 0)
        elif fresh:
            timer = threading.Timer(self.linger_s, self._flush, (group,))
            timer.daemon = True
            timer.start()
        return fut

    def _flush(self, group: Optional["_Group"] = None) -> None:
        """Send the group being filled (only if it is still `group`, when given)."""
        with self._group_lock:
            pending = self._group
            if pending is None or (group is not None and pending is not group):
                return
            self._group = None
        self._send(pending, 0)

    def _send(self, group: "_Group", attempt: int) -> None:
        grpc = self._grpc
        h3, w = self.frame_shape
        slot, n = group.slot, len(group.futures)
        frames = grpc.InferInput(FRAMES_IN.name, [n, h3, w], FRAMES_IN.client_dtype)
        frames.set_shared_memory(slot.inp.name, n * self.frame_bytes)
        inputs = [frames]
        if self.send_qp:
            qp = grpc.InferInput(QP_IN.name, [n, 1], QP_IN.client_dtype)
            qp.set_shared_memory(slot.inp.name, 4 * n, offset=slot.qp_offset)
            inputs.append(qp)
        out = grpc.InferRequestedOutput(FRAMES_OUT.name)
        out.set_shared_memory(slot.out.name, n * self.frame_bytes)
        try:
            self.client.async_infer(self.model, inputs, partial(self._done, group, attempt),
                                    outputs=[out], client_timeout=self.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - gRPC can fail synchronously too
            self._done(group, attempt, None, exc)

    def _done(self, group: "_Group", attempt: int, result, error) -> None:
        if error is None:
            with self._lock:
                edited = ([None] * len(group.futures) if self._closed else
                          [group.slot.frame_out(self.frame_shape, row).copy() for row in range(len(group.futures))])
            self._finish(group)
            for fut, frame in zip(group.futures, edited):
                fut.set_result(frame)
            return
        status = _status(error)
        if attempt < self.retries and not self._closed and (not status or any(s in status for s in _RETRYABLE)):
            delay = self.retry_backoff_s * (2 ** attempt)
            log.warning("pre-edit request failed (%s); retry %d/%d in %.2f s", _message(error), attempt + 1,
                        self.retries, delay)
            timer = threading.Timer(delay, self._send, (group, attempt + 1))
            timer.daemon = True
            timer.start()
            return
        self._finish(group)
        failure = ServerError(f"Triton at {self.url} failed on model {self.model!r} after "
                              f"{attempt + 1} attempt(s): {_message(error)}")
        for fut in group.futures:
            fut.set_exception(failure)

    def _finish(self, group: "_Group") -> None:
        ring = self.ring
        if ring is not None:
            ring.release(group.slot)
        n = len(group.futures)
        telemetry.INFLIGHT.dec(n)
        with self._lock:
            self._inflight -= n
            self._lock.notify_all()

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- teardown ----------------------------------------------------------------------------
    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait for in-flight requests, unregister and unlink every region; idempotent.

        Bounded by `timeout_s` in all (issue 12 row 10): the drain leaves `unregister_reserve(timeout_s)`
        for the unregister calls, which share the remaining time and stop at the first failure (a frozen
        or dead server). Regions left registered on a live server are unregistered by the next client
        (`_sweep_dead_clients`); our /dev/shm files are unlinked here whatever the server does."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        reserve = unregister_reserve(timeout_s)
        if not self._closed:
            self._flush()  # a group still filling goes now: its frames are waited for below
        with self._lock:
            self._lock.wait_for(lambda: self._inflight == 0, timeout=max(0.0, deadline - time.monotonic() - reserve))
            self._closed = True
        for name in self._registered:
            left = deadline - time.monotonic()
            if left < 0.05:
                log.warning("close: no time left to unregister %d region(s) on %s", len(self._registered), self.url)
                break
            try:
                self.client.unregister_system_shared_memory(name, headers=self.headers, client_timeout=left)
            except Exception:  # noqa: BLE001 - the server may be gone or frozen; the region is ours to unlink
                break  # one timeout is enough: do not wait for every other region
        self._registered = []
        if self.ring is not None:
            self.ring.destroy()
            self.ring = None
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
