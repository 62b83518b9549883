import time
import urllib.request

import numpy as np
import pytest

from preedit.errors import ServerError
from preedit.export import export_model_repository
from preedit.network import identity_model
from preedit.serve import ServerConfig, TritonServer, build_server_cmd


def test_build_server_cmd_binds_loopback_and_keeps_metrics_on(tmp_path):
    cmd = build_server_cmd(ServerConfig(model_repository=tmp_path), tmp_path / "bin", tmp_path / "be")
    assert "--http-address=127.0.0.1" in cmd and "--grpc-address=127.0.0.1" in cmd
    assert "--allow-metrics=true" in cmd and "--metrics-address=127.0.0.1" in cmd
    assert all(isinstance(a, str) for a in cmd)


def test_server_reports_missing_repository_clearly(tmp_path):
    with pytest.raises(ServerError, match="model repository not found"):
        TritonServer(ServerConfig(model_repository=tmp_path / "nope", http_port=0, grpc_port=0, metrics_port=0)).start()


@pytest.mark.needs_triton
def test_embedded_server_serves_identity_model_and_metrics(tmp_path):
    import tritonclient.grpc as grpcclient

    export_model_repository(identity_model(), tmp_path, "preedit")
    cfg = ServerConfig(model_repository=tmp_path, http_port=0, grpc_port=0, metrics_port=0)
    with TritonServer(cfg) as server:
        server.wait_model_ready("preedit")
        client = grpcclient.InferenceServerClient(server.grpc_url)
        frames = np.random.default_rng(0).integers(0, 256, (2, 540, 640), dtype=np.uint8)
        inp = grpcclient.InferInput("NV12_IN", list(frames.shape), "UINT8")
        inp.set_data_from_numpy(frames)
        out = client.infer("preedit", [inp]).as_numpy("NV12_OUT")
        assert np.array_equal(out, frames)
        # The python backend reports a request's statistics just after sending its response: wait for
        # them (a scrape right after the answer can precede them), then check the count is exact.
        want = 'nv_inference_count{model="preedit",version="1"} '
        deadline = time.monotonic() + 30
        while True:
            metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
            counted = [line for line in metrics.splitlines() if line.startswith(want)]
            if (counted and counted[0] != want + "0") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert counted == [want + "2"], counted
    assert server.proc.poll() is not None  # stopped cleanly


@pytest.mark.needs_triton
def test_served_model_answers_the_in_process_bytes_when_calls_reuse_its_output_buffer():
    # The python backend binds ORT's output to a buffer it reuses across calls (issue 14): each
    # answer must still be its own frames, byte for byte what ONNX Runtime gives in-process.
    import tritonclient.grpc as grpcclient

    from preedit.engines import OrtEngine
    from preedit.paths import model_repository

    rng = np.random.default_rng(1)
    smooth = lambda h, w: np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8)  # noqa: E731
    batches = [np.stack([smooth(270, 320), smooth(270, 320)]), smooth(270, 320)[None], smooth(180, 160)[None],
               smooth(270, 320)[None]]
    engine = OrtEngine(model_repository() / "preedit" / "1" / "model.onnx", threads=1)
    cfg = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, models=("preedit",))
    with TritonServer(cfg) as server:
        server.wait_model_ready("preedit")
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for frames in batches:
            inp = grpcclient.InferInput("NV12_IN", list(frames.shape), "UINT8")
            inp.set_data_from_numpy(frames)
            qp = grpcclient.InferInput("QP", [frames.shape[0], 1], "FP32")
            qp.set_data_from_numpy(np.full((frames.shape[0], 1), 30.0, np.float32))
            out = client.infer("preedit", [inp, qp]).as_numpy("NV12_OUT")
            assert np.array_equal(out, engine.run(frames, 30.0)), frames.shape
            assert not np.array_equal(out, frames)  # the shipped model edits: not an identity pass
