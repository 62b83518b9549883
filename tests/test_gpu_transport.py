"""CUDA shared-memory transport orchestration on CPU, with fakes of `cudashm` and the server.

The fake region module hands out CPU tensors where tritonclient would `cudaMalloc`; the fake
server reads the request's input region, applies a known edit and writes the output region,
answering from another thread like gRPC's async callbacks. What is checked is the ring: slots
reused only after their response, ownership of the pixels on both sides, registration/cleanup.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("tritonclient.grpc")

from preedit.client.transport import SlotIndexRing  # noqa: E402
from preedit.client.transport import CudaShmTransport, qp_offset  # noqa: E402
from preedit.errors import ModelError, ServerError  # noqa: E402

H3, W = 24, 16  # NV12 of a 16x16 frame


class FakeRegion:
    def __init__(self, name, size):
        self.name, self.size = name, size
        self.mem = torch.zeros(size, dtype=torch.uint8)
        self.destroyed = False


class FakeCudaShm:
    def __init__(self):
        self.regions = {}

    def create_shared_memory_region(self, name, size, device_id):
        assert device_id == 0
        self.regions[name] = FakeRegion(name, size)
        return self.regions[name]

    def get_raw_handle(self, handle):
        return f"ipc:{handle.name}".encode()

    def as_shared_memory_tensor(self, handle, dtype, shape):
        assert dtype == "UINT8" and list(shape) == [handle.size]
        return handle.mem  # torch tensors speak DLPack

    def destroy_shared_memory_region(self, handle):
        handle.destroyed = True


class FakeServer:
    """Edits frames as `min(x + 1, 255)` and records what it saw."""

    def __init__(self, shm, delay_s=0.0, fail_on=()):
        self.shm, self.delay_s, self.fail_on = shm, delay_s, set(fail_on)
        self.registered, self.unregistered = {}, []
        self.inflight = self.max_inflight = self.requests = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(4)
        self.qps = []

    def get_model_metadata(self, model, as_json=False):
        if model != "preedit_gpu":
            raise RuntimeError("unknown model")
        return {"inputs": [{"name": "NV12_IN"}, {"name": "QP"}], "outputs": [{"name": "NV12_OUT"}]}

    def register_cuda_shared_memory(self, name, raw, device_id, size):
        assert raw == f"ipc:{name}".encode() and self.shm.regions[name].size == size
        self.registered[name] = size

    def unregister_cuda_shared_memory(self, name="", **_kw):
        self.unregistered.append(name)

    def async_infer(self, model, inputs, callback, outputs=None, client_timeout=None):
        params = {i.name(): i._get_tensor().parameters for i in inputs}
        out_params = outputs[0]._get_tensor().parameters
        with self.lock:
            self.requests += 1
            n = self.requests
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        self.pool.submit(self._run, n, params, out_params, callback)

    def _run(self, n, params, out_params, callback):
        time.sleep(self.delay_s)
        src = self.shm.regions[params["NV12_IN"]["shared_memory_region"].string_param]
        dst = self.shm.regions[out_params["shared_memory_region"].string_param]
        size = out_params["shared_memory_byte_size"].int64_param
        qoff = params["QP"]["shared_memory_offset"].int64_param
        self.qps.append(float(src.mem[qoff: qoff + 4].view(torch.float32)[0]))
        with self.lock:
            self.inflight -= 1
        if n in self.fail_on:
            callback(None, RuntimeError("boom"))
            return
        dst.mem[:size] = torch.clamp(src.mem[:size].to(torch.int16) + 1, 0, 255).to(torch.uint8)
        callback(object(), None)


def _transport(n_slots=2, **kw):
    shm = FakeCudaShm()
    server = FakeServer(shm, **{k: kw.pop(k) for k in ("delay_s", "fail_on") if k in kw})
    t = CudaShmTransport("fake:8001", "preedit_gpu", (H3, W), n_slots, client=server, cudashm=shm, **kw)
    return t, server, shm


def _frame(i):
    return (torch.arange(H3 * W, dtype=torch.int32).reshape(H3, W) * 3 + i).remainder(250).to(torch.uint8)


def test_slot_index_ring_reuses_oldest_free_and_rejects_double_release():
    ring = SlotIndexRing(2)
    a, b = ring.acquire(), ring.acquire()
    assert (a, b) == (0, 1) and ring.acquire(timeout_s=0.01) is None
    ring.release(a)
    assert ring.acquire() == 0
    with pytest.raises(RuntimeError):
        ring.release(5)


def test_transport_registers_one_input_and_output_region_per_slot():
    t, server, shm = _transport(n_slots=3)
    assert len(server.registered) == 6
    assert all(size >= H3 * W for size in server.registered.values())
    in_sizes = [s for n, s in server.registered.items() if "_in" in n]
    assert in_sizes == [qp_offset(H3 * W) + 4] * 3
    t.close()
    assert sorted(server.unregistered) == sorted(server.registered)
    assert all(r.destroyed for r in shm.regions.values())


def test_transport_reuses_slots_only_after_response_when_more_frames_than_slots():
    t, server, _ = _transport(n_slots=2, delay_s=0.01)
    futures = [t.submit(_frame(i)) for i in range(7)]
    results = [f.result(timeout=5) for f in futures]
    t.close()
    assert server.max_inflight <= 2 and server.requests == 7
    assert sorted(set(t.ring.history)) == [0, 1] and min(t.ring.history.count(i) for i in (0, 1)) >= 3
    for i, out in enumerate(results):
        assert torch.equal(out, torch.clamp(_frame(i).to(torch.int16) + 1, 0, 255).to(torch.uint8))


def test_transport_owns_input_pixels_when_caller_reuses_its_buffer():
    t, _, _ = _transport(n_slots=2, delay_s=0.05)
    buf = _frame(0)
    expected = torch.clamp(buf.to(torch.int16) + 1, 0, 255).to(torch.uint8)
    fut = t.submit(buf)
    buf.fill_(7)  # the decoder's pool overwrites its frame right away
    assert torch.equal(fut.result(timeout=5), expected)
    t.close()


def test_transport_results_survive_slot_reuse_when_kept_by_consumer():
    t, _, _ = _transport(n_slots=1)
    first = t.submit(_frame(1)).result(timeout=5)
    snapshot = first.clone()
    for i in range(3):
        t.submit(_frame(10 + i)).result(timeout=5)
    assert torch.equal(first, snapshot)  # not a view of the (reused) output region
    t.close()


def test_transport_sends_qp_from_input_region_when_qp_given():
    t, server, _ = _transport(n_slots=2, qp=27.0)
    t.submit(_frame(0)).result(timeout=5)
    t.close()
    assert server.qps == [27.0]


def test_transport_releases_slot_and_raises_server_error_when_request_fails():
    t, _, _ = _transport(n_slots=1, fail_on={1})
    with pytest.raises(ServerError, match="boom"):
        t.submit(_frame(0)).result(timeout=5)
    assert t.submit(_frame(1)).result(timeout=5) is not None  # slot came back
    t.close()


def test_transport_returns_numpy_when_output_device_is_cpu():
    t, _, _ = _transport(n_slots=1, output_device="cpu")
    out = t.submit(_frame(2).numpy()).result(timeout=5)
    t.close()
    assert out.shape == (H3, W) and out.dtype.name == "uint8"


def test_transport_raises_model_error_when_model_unknown():
    shm = FakeCudaShm()
    with pytest.raises(ModelError):
        CudaShmTransport("fake:8001", "nope", (H3, W), 1, client=FakeServer(shm), cudashm=shm)


def test_transport_rejects_frames_of_another_size():
    t, _, _ = _transport(n_slots=1)
    with pytest.raises(ServerError, match="shape"):
        t.submit(torch.zeros(12, 8, dtype=torch.uint8))
    t.close()
