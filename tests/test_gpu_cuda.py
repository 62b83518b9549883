"""Real-GPU tests (`needs_cuda`): skipped without a GPU unless FAIL_WITHOUT_CUDA=1; never faked.

A GPU CI job runs: `FAIL_WITHOUT_CUDA=1 pytest -m needs_cuda tests/` (see docs/gpu.md).
Stages that depend on hardware this GPU lacks (NVENC on H100/H200/A100) skip with that reason:
`capabilities()` must say so, which is itself asserted.

NVDEC output is compared with FFmpeg's software decode (H.264 decoding is bit-exact by spec):
through PyAV when installed, else against a reference file (`PREEDIT_NVDEC_REF` directory with
`<clip>.npz` from `preedit doctor --make-reference`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.needs_cuda

DEV = "cuda:0"


def _nvc():
    from preedit.client.hardware import import_nvc

    nvc = import_nvc()
    if nvc is None:
        pytest.fail("PyNvVideoCodec is not importable on this GPU host (pip install PyNvVideoCodec; driver with video libs)")
    return nvc


def _reference(clip_path: Path):
    """(digests, pts, first_frame) of FFmpeg's software decode, as NV12."""
    try:
        import av  # noqa: F401  (PyAV present: decode in software below)
    except ImportError:
        ref_dir = os.environ.get("PREEDIT_NVDEC_REF")
        path = Path(ref_dir or ".") / f"{clip_path.stem}.npz"
        if not path.is_file():
            pytest.fail(f"neither PyAV nor a reference file {path} (set PREEDIT_NVDEC_REF)")
        data = np.load(path)
        return list(data["digests"]), list(data["pts"]), data["first"], str(data["time_base"])
    from preedit.perf.speed.gpu_probe import software_nv12_digests

    return software_nv12_digests(clip_path)


def test_capabilities_on_this_gpu_match_the_architecture_table():
    from preedit.client.hardware import capabilities, documented_codecs

    caps = capabilities(0)
    assert caps["cuda"] and caps["device"]["name"] == torch.cuda.get_device_name(0)
    table = documented_codecs(tuple(caps["device"]["compute_capability"]), caps["device"]["name"])
    assert set(caps["nvenc"]) <= set(table["nvenc"])
    if caps["architecture"] in ("hopper", "ga100"):
        assert caps["nvenc"] == [], "H100/H200/A100 have no NVENC"


def test_plan_on_this_gpu_keeps_decode_and_preedit_on_gpu_for_h264():
    from preedit.client.backends import plan_backends
    from preedit.client.hardware import capabilities

    caps = capabilities(0)
    plan = plan_backends("auto", caps, input_codec="h264", output_codec="hevc")
    assert plan.preedit == "cuda"
    if caps.get("video_stages_usable"):
        assert plan.decode == "cuda"
    assert (plan.encode == "cuda") == ("hevc" in caps["nvenc"])


@pytest.mark.parametrize("name", ["flower.mp4", "edge-rotate-buck-bunny.mp4"])
def test_nvdec_decodes_bit_exact_frames_with_pts_when_input_is_h264(clip, name):
    from preedit.client.decode import NvdecDecoder

    path = clip(name)
    digests, ref_pts, first, time_base = _reference(path)
    dec = NvdecDecoder(path, nvc=_nvc(), ring_size=4)
    got, pts, kept = [], [], []
    for frame in dec:
        assert frame.nv12.is_cuda and frame.nv12.dtype == torch.uint8 and frame.nv12.is_contiguous()
        host = frame.nv12.cpu().numpy()
        if not kept:
            kept.append((frame.nv12, host.copy()))
        got.append(hashlib.sha256(host.tobytes()).hexdigest())
        pts.append(frame.pts)
    assert len(got) == len(digests), f"NVDEC gave {len(got)} frames, FFmpeg {len(digests)}"
    if got[0] != digests[0]:
        diff = np.abs(kept[0][1].astype(int) - first.astype(int))
        pytest.fail(f"frame 0 differs from FFmpeg: max |diff| {diff.max()}, {np.count_nonzero(diff)} pixels")
    assert got == digests
    assert sorted(pts) == sorted(ref_pts)
    assert str(dec.info.time_base) == time_base
    dec.close()


def test_network_on_gpu_matches_cpu_within_one_code_value():
    from preedit.export.onnx_export import synthetic_frames
    from preedit.network import NV12PreEditor, NetConfig, PreEditorNet

    gen = torch.Generator().manual_seed(0)
    net = PreEditorNet(NetConfig())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    cpu = NV12PreEditor(net.eval())
    x = torch.from_numpy(synthetic_frames(2, 360, 640))
    q = torch.full((2, 1), 30.0)
    with torch.no_grad():
        want = cpu(x, q)
        got = NV12PreEditor(net.to(DEV).eval())(x.to(DEV), q.to(DEV)).cpu()
    diff = (got.int() - want.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3


def test_gpu_module_exports_on_cuda_with_dynamic_shapes():
    from preedit.export.gpu_config import GpuProfile
    from preedit.export.gpu_module import GpuPreEditor, export_dynamic
    from preedit.network import identity_model

    ep = export_dynamic(GpuPreEditor(identity_model().to(DEV)), GpuProfile(min_hw=(64, 64), opt_hw=(64, 64)), device=DEV)
    x = torch.randint(0, 256, (2, 540, 640), dtype=torch.uint8, device=DEV)
    with torch.no_grad():
        out = ep.module()(x, torch.full((2, 1), 32.0, device=DEV))
    assert torch.equal(out, x)  # identity model


def test_cuda_shm_region_round_trips_a_frame_on_the_device():
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory",
                                  reason="tritonclient[cuda] with cuda-python is required for CUDA shm")
    frame = torch.randint(0, 256, (1620, 1920), dtype=torch.uint8, device=DEV)
    handle = cudashm.create_shared_memory_region("preedit_test_rt", frame.numel(), 0)
    try:
        assert len(cudashm.get_raw_handle(handle)) > 0
        view = torch.from_dlpack(cudashm.as_shared_memory_tensor(handle, "UINT8", [frame.numel()]))
        assert view.is_cuda
        view.copy_(frame.view(-1))
        torch.cuda.synchronize()
        back = cudashm.get_contents_as_numpy(handle, np.uint8, [1620, 1920])
        assert np.array_equal(back, frame.cpu().numpy())
    finally:
        cudashm.destroy_shared_memory_region(handle)


def test_cuda_shm_transport_ring_moves_frames_through_real_regions():
    """Real CUDA IPC regions + views; the server side is emulated by reading the regions back."""
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory",
                                  reason="tritonclient[cuda] with cuda-python is required for CUDA shm")
    pytest.importorskip("tritonclient.grpc")
    from preedit.client.transport import CudaShmTransport

    regions = {}

    class _Shm:
        def __getattr__(self, name):
            return getattr(cudashm, name)

        def create_shared_memory_region(self, name, size, device_id):
            regions[name] = cudashm.create_shared_memory_region(name, size, device_id)
            return regions[name]

    class _Server:
        def get_model_metadata(self, model, as_json=False):
            return {"inputs": [{"name": "NV12_IN"}, {"name": "QP"}], "outputs": [{"name": "NV12_OUT"}]}

        def register_cuda_shared_memory(self, *a):
            pass

        def unregister_cuda_shared_memory(self, name="", **_kw):
            pass

        def async_infer(self, model, inputs, callback, outputs=None, client_timeout=None):
            src = inputs[0]._get_tensor().parameters["shared_memory_region"].string_param
            dst = outputs[0]._get_tensor().parameters["shared_memory_region"].string_param
            h3, w = 540, 640
            data = cudashm.get_contents_as_numpy(regions[src], np.uint8, [h3, w])  # what a server would read
            cudashm.set_shared_memory_region(regions[dst], [np.ascontiguousarray(255 - data)])
            callback(object(), None)

    t = CudaShmTransport("local", "m", (540, 640), 2, client=_Server(), cudashm=_Shm())
    try:
        for i in range(5):
            frame = torch.randint(0, 256, (540, 640), dtype=torch.uint8, device=DEV)
            out = t.submit(frame).result(timeout=30)
            assert out.is_cuda and torch.equal(out, 255 - frame)
    finally:
        t.close()


def test_nvenc_encodes_hevc_when_gpu_has_nvenc(tmp_path):
    from fractions import Fraction

    from preedit.client.encode import NvencConfig, NvencEncoder
    from preedit.client.hardware import capabilities
    from preedit.client.interfaces import Frame

    caps = capabilities(0)
    if "hevc" not in caps["nvenc"]:
        pytest.skip(f"{caps['device']['name']} has no HEVC NVENC ({caps['architecture']}); encode falls back to CPU")
    pytest.importorskip("av", reason="muxing needs PyAV")
    enc = NvencEncoder(tmp_path / "out.mp4", 640, 360, NvencConfig(bframes=2, gop=30), nvc=_nvc(),
                       time_base=Fraction(1, 30))
    for i in range(40):
        nv12 = torch.full((540, 640), 16 + i, dtype=torch.uint8, device=DEV)
        enc.encode(Frame(index=i, pts=i, time_base=Fraction(1, 30), nv12=nv12))
    stats = enc.finish()
    assert stats["frames"] == 40


class _GpuModelServer:
    """Stands in for Triton on this host: maps the client's CUDA regions zero-copy and runs the
    real network on the GPU, answering from another thread like gRPC callbacks."""

    def __init__(self, cudashm, net):
        import threading

        from preedit.network import NV12PreEditor

        self.cudashm, self.model = cudashm, NV12PreEditor(net.to(DEV).eval())
        self.regions, self.threads, self.lock = {}, [], threading.Lock()
        self.requests = 0

    def get_model_metadata(self, model, as_json=False):
        return {"inputs": [{"name": "NV12_IN"}, {"name": "QP"}], "outputs": [{"name": "NV12_OUT"}]}

    def register_cuda_shared_memory(self, name, raw, device_id, size):
        self.regions[name] = size

    def unregister_cuda_shared_memory(self, name="", **_kw):
        self.regions.pop(name, None)

    def async_infer(self, model, inputs, callback, outputs=None, client_timeout=None):
        import threading

        t = threading.Thread(target=self._run, args=(inputs, outputs, callback))
        t.start()
        self.threads.append(t)

    def _run(self, inputs, outputs, callback):
        torch.cuda.set_device(0)
        p_in = inputs[0]._get_tensor()
        h3, w = list(p_in.shape)[1:]
        src = self._view(p_in.parameters["shared_memory_region"].string_param, h3 * w).view(1, h3, w)
        qoff = inputs[1]._get_tensor().parameters["shared_memory_offset"].int64_param
        qp = self._view(inputs[1]._get_tensor().parameters["shared_memory_region"].string_param, qoff + 4)[qoff:]
        dst = self._view(outputs[0]._get_tensor().parameters["shared_memory_region"].string_param, h3 * w).view(1, h3, w)
        with torch.no_grad():
            dst.copy_(self.model(src, qp.view(torch.float32).view(1, 1)))
        torch.cuda.synchronize()
        with self.lock:
            self.requests += 1
        callback(object(), None)

    def _view(self, name, size):
        handle = next(h for h in self.cudashm.allocated_shared_memory_regions() if _region_name(h) == name)
        return torch.from_dlpack(self.cudashm.as_shared_memory_tensor(handle, "UINT8", [size]))


def _region_name(handle):
    for attr in ("_triton_shm_name", "triton_shm_name", "_name"):
        if hasattr(handle, attr):
            return getattr(handle, attr)
    return None


def test_pipeline_runs_gpu_decode_gpu_preedit_and_falls_back_per_stage_for_encode(clip, tmp_path):
    """NVDEC → CUDA shm ring → the network on the GPU → NVENC, or the CPU encoder where this GPU
    has no NVENC (H100): through the client's own factory and pipeline."""
    av = pytest.importorskip("av", reason="the CPU encoder and the output check need PyAV")
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory",
                                  reason="tritonclient[cuda] with cuda-python is required for CUDA shm")
    from preedit.client.backends import select_backends
    from preedit.client.encode import EncoderSettings
    from preedit.client.hardware import capabilities
    from preedit.client.pipeline import Pipeline, PipelineConfig
    from preedit.client.transport import CudaShmTransport
    from preedit.network import identity_model

    src = clip("flower.mp4")
    backends = select_backends("cuda", output_codec="hevc")
    dec = backends.make_decoder(str(src), max_frames=24)
    assert backends.stage_devices["decode"] == "cuda"
    info = dec.info
    server = _GpuModelServer(cudashm, identity_model())
    transport = CudaShmTransport("local", "preedit", (info.height * 3 // 2, info.width), 4, client=server,
                                 cudashm=cudashm, qp=30.0)
    out = tmp_path / "out.mp4"
    enc = backends.make_encoder(str(out), info, EncoderSettings(codec="hevc", crf=30), audio_streams=dec.audio_streams)
    has_nvenc = "hevc" in capabilities(0)["nvenc"]
    assert backends.stage_devices["encode"] == ("cuda" if has_nvenc else "cpu")
    try:
        stats = Pipeline(dec, transport, enc, PipelineConfig(queue_size=4)).run()
    finally:
        transport.close()
        dec.close()
    assert stats.frames_encoded == 24 and server.requests == 24
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
    assert len(frames) == 24 and (s.width, s.height) == (info.width, info.height)
    pts = [round(float(f.pts * f.time_base) * 30000) for f in frames]
    assert pts == [1001 * i for i in range(24)]


_IPC_CHILD = r"""
import base64, ctypes, sys
import numpy as np
import cuda.bindings.runtime as rt

raw, n = base64.b64decode(sys.argv[1]), int(sys.argv[2])
handle = rt.cudaIpcMemHandle_t()
ctypes.memmove(handle.getPtr(), raw, len(raw))
err, ptr = rt.cudaIpcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess)
assert err == rt.cudaError_t.cudaSuccess, err
host = np.empty(n, np.uint8)
assert rt.cudaMemcpy(host.ctypes.data, ptr, n, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)[0] == rt.cudaError_t.cudaSuccess
print(int(host.astype(np.int64).sum()))
host = (255 - host).astype(np.uint8)
assert rt.cudaMemcpy(ptr, host.ctypes.data, n, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)[0] == rt.cudaError_t.cudaSuccess
rt.cudaDeviceSynchronize()
rt.cudaIpcCloseMemHandle(ptr)
"""


def test_cuda_shm_region_is_read_and_written_by_another_process_through_its_ipc_handle():
    """What Triton does with a registered region: open the raw handle in its own process."""
    import subprocess
    import sys

    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory",
                                  reason="tritonclient[cuda] with cuda-python is required for CUDA shm")
    pytest.importorskip("cuda.bindings.runtime")
    n = 810 * 960
    frame = torch.randint(0, 256, (n,), dtype=torch.uint8, device=DEV)
    handle = cudashm.create_shared_memory_region("preedit_test_ipc", n, 0)
    try:
        view = torch.from_dlpack(cudashm.as_shared_memory_tensor(handle, "UINT8", [n]))
        view.copy_(frame)
        torch.cuda.synchronize()
        raw = cudashm.get_raw_handle(handle).decode()
        child = subprocess.run([sys.executable, "-c", _IPC_CHILD, raw, str(n)], capture_output=True, text=True,
                               timeout=120)
        assert child.returncode == 0, child.stderr[-2000:]
        assert int(child.stdout.strip().splitlines()[-1]) == int(frame.to(torch.int64).sum())
        torch.cuda.synchronize()
        assert torch.equal(view, 255 - frame)  # the other process wrote into our region
    finally:
        cudashm.destroy_shared_memory_region(handle)
