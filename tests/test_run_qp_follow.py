"""`preedit run --bitrate`: the model's QP hint follows the QP the encoder reports (issue 19).

A served "QP echo" model answers every frame with a flat picture whose value is the QP it was sent,
so the decoded output shows which hint each frame carried: the bits-per-pixel estimate first, then,
GOP by GOP, what `QpFollower` made of the encoder's reported QPs (listed in the run summary).
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from preedit.cli import main as cli_main
from preedit.serve import ServerConfig, TritonServer
from synthetic import make_clip
from triton_models import PY_MODEL_HEADER

pytestmark = pytest.mark.needs_triton

QP_ECHO_PY = PY_MODEL_HEADER + '''

class TritonPythonModel:
    """NV12_OUT = a flat picture of value round(QP) (QP clamped to 16..235)."""

    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "NV12_IN").as_numpy()
            qp = pb_utils.get_input_tensor_by_name(request, "QP").as_numpy().reshape(-1)
            out = np.empty_like(frames)
            for i, q in enumerate(qp):
                out[i] = int(round(min(max(float(q), 16.0), 235.0)))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("NV12_OUT", out)]))
        return responses
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from preedit.export import build_model_config, write_model_config

    root = tmp_path_factory.mktemp("qp_echo_repo")
    model = root / "qp_echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(QP_ECHO_PY)
    write_model_config(build_model_config("qp_echo", max_queue_delay_us=0), model / "config.pbtxt")
    srv = TritonServer(ServerConfig(model_repository=root, http_port=0, grpc_port=0, metrics_port=0)).start()
    try:
        srv.wait_model_ready("qp_echo")
        yield srv
    finally:
        srv.stop()


def _lumas(path):
    with av.open(str(path)) as c:
        return [int(round(float(np.mean(f.to_ndarray()[: f.height])))) for f in c.decode(video=0)]  # Y plane, coded values


@pytest.mark.parametrize("transport", ["shm", "grpc"])
def test_bitrate_run_sends_the_hint_that_follows_the_encoders_qp(server, tmp_path, transport):
    src = make_clip(tmp_path / "src.mp4", width=192, height=128, frames=75, fps=25)
    out, summary = tmp_path / "out.mkv", tmp_path / "s.json"
    code = cli_main(["run", str(src), "-o", str(out), "--url", server.grpc_url, "--model", "qp_echo",
                     "--bitrate", "60", "--keyint", "25", "--codec", "h264", "--preset", "veryfast",
                     "--transport", transport, "--summary-json", str(summary)])
    assert code == 0
    hints = json.loads(summary.read_text())["model_qp_hints"]
    assert [f for f, _ in hints] == [0, 25, 50, 75]  # the estimate, then one hint per GOP of 25 frames
    lumas = _lumas(out)
    assert len(lumas) == 75
    sent = {int(round(min(max(q, 16.0), 235.0))) for _, q in hints}
    assert lumas[0] == int(round(min(max(hints[0][1], 16.0), 235.0)))  # the bits-per-pixel estimate
    assert set(lumas) <= {v + d for v in sent for d in (-1, 0, 1)}  # every frame carried one of the hints
    assert len(set(lumas)) >= 2 and lumas[-1] != lumas[0]  # ... and the hint moved once the encoder reported


def test_crf_run_keeps_its_exact_hint(server, tmp_path):
    src = make_clip(tmp_path / "src.mp4", width=192, height=128, frames=30, fps=25)
    out, summary = tmp_path / "out.mkv", tmp_path / "s.json"
    assert cli_main(["run", str(src), "-o", str(out), "--url", server.grpc_url, "--model", "qp_echo", "--crf", "30",
                     "--codec", "h264", "--preset", "veryfast", "--summary-json", str(summary)]) == 0
    assert "model_qp_hints" not in json.loads(summary.read_text())
    assert set(_lumas(out)) <= {29, 30, 31}
