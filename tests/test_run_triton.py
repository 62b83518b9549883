"""`preedit run` against the real Triton server on CPU (needs_triton).

The test exports an untrained (identity) pre-editor into a temporary repository, plus a
python-backend model that sleeps before echoing its input (`preedit_slow`) for the latency
budget and server-failure cases.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from preedit.cli import main as cli_main
from preedit.client.telemetry import METRIC_NAMES
from preedit.serve import ServerConfig, TritonServer, free_port
from synthetic import media  # noqa: F401 - fixture
from triton_models import PY_MODEL_HEADER

pytestmark = pytest.mark.needs_triton

FAST = ["--codec", "h264", "--preset", "ultrafast"]
SLOW_DELAY_S = 0.2

SLOW_MODEL_PY = PY_MODEL_HEADER + '''

class TritonPythonModel:
    """Echo NV12_IN as NV12_OUT after sleeping `delay_s` per request (a deliberately slow model)."""

    def initialize(self, args):
        import json
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params["delay_s"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "NV12_IN").as_numpy()
            time.sleep(self.delay_s)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("NV12_OUT", frames.copy())]))
        return responses
'''

GROUP_MODEL_PY = PY_MODEL_HEADER + '''

class TritonPythonModel:
    """Echo NV12_IN with its first byte set to the number of frames its request carried."""

    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "NV12_IN").as_numpy().copy()
            frames[:, 0, 0] = frames.shape[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("NV12_OUT", frames)]))
        return responses
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from preedit.export import build_model_config, export_model_repository, write_model_config
    from preedit.network import identity_model

    root = tmp_path_factory.mktemp("repo")
    export_model_repository(identity_model(), root, "preedit")
    slow = root / "preedit_slow"
    (slow / "1").mkdir(parents=True)
    (slow / "1" / "model.py").write_text(SLOW_MODEL_PY)
    write_model_config(build_model_config("preedit_slow", parameters={"delay_s": str(SLOW_DELAY_S)}),
                       slow / "config.pbtxt")
    groups = root / "preedit_groups"
    (groups / "1").mkdir(parents=True)
    (groups / "1" / "model.py").write_text(GROUP_MODEL_PY)
    write_model_config(build_model_config("preedit_groups", max_queue_delay_us=0), groups / "config.pbtxt")
    return root


@pytest.fixture(scope="module")
def server(repo):
    srv = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0))
    srv.start()
    try:
        srv.wait_model_ready("preedit")
        srv.wait_model_ready("preedit_slow")
        srv.wait_model_ready("preedit_groups")
        yield srv
    finally:
        pgid = srv.proc.pid
        srv.stop()
        assert not _group_alive(pgid), "a python-backend stub outlived the server"


def _group_alive(pgid: int, wait_s: float = 15.0) -> bool:
    """Whether any process of the server's process group is left (after `wait_s` for init to reap)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


def _decode(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        return frames, v.average_rate


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _value(text: str, pattern: str) -> float:
    match = re.search(pattern + r"\s+([0-9.e+]+)", text)
    return float(match.group(1)) if match else 0.0


def _run_in_thread(argv):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", cli_main(["run", *map(str, argv)])))
    thread.start()
    return thread, result


def test_run_matches_bypass_bit_for_bit_and_serves_metrics_when_model_is_identity(server, media, tmp_path):
    src = media("flower.mp4")
    out, ref, summary = tmp_path / "edited.mp4", tmp_path / "bypass.mp4", tmp_path / "s.json"
    port = free_port()
    thread, result = _run_in_thread([src, "-o", out, "--url", server.grpc_url, "--max-frames", 45, "--realtime",
                                     "--metrics-port", port, "--summary-json", summary, *FAST])
    client_text = ""
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            text = _scrape(f"http://127.0.0.1:{port}/metrics")
            if _value(text, r'preedit_client_frames_total\{stage="encoded"\}') > 0:
                client_text = text
        except OSError:
            pass
        time.sleep(0.2)
    thread.join(timeout=60)
    assert result.get("code") == 0
    assert cli_main(["run", str(src), "-o", str(ref), "--bypass", "--max-frames", "45", *FAST]) == 0

    frames, rate = _decode(out)
    src_frames, src_rate = _decode(src)
    assert len(frames) == 45
    assert (frames[0].width, frames[0].height) == (src_frames[0].width, src_frames[0].height)
    assert rate == src_rate
    times = [float(f.pts * f.time_base) for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times == [float(f.pts * f.time_base) for f in src_frames[:45]]
    assert out.read_bytes() == ref.read_bytes()  # identity model through Triton == bypass, bit for bit

    stats = json.loads(summary.read_text())
    assert stats["frames"] == 45 and stats["bypassed_frames"] == 0 and stats["latency_ms"]["preedit"]["count"] == 45

    assert client_text, "client metrics endpoint never showed encoded frames"
    for name in METRIC_NAMES:
        assert name in client_text
    assert _value(client_text, r'preedit_client_stage_latency_seconds_count\{stage="preedit"\}') > 0
    triton_text = _scrape(server.metrics_url)
    assert _value(triton_text, r'nv_inference_request_success\{model="preedit",version="1"\}') >= 45
    assert "nv_inference_queue_duration_us" in triton_text


def test_run_bypasses_late_frames_and_keeps_real_time_when_model_is_slow(server, media, tmp_path):
    out, summary = tmp_path / "live.mp4", tmp_path / "s.json"
    n = 30  # 1 s of 29.97 fps input, paced like a live feed
    code = cli_main(["run", str(media("flower.mp4")), "-o", str(out), "--url", server.grpc_url, "--model",
                     "preedit_slow", "--max-frames", str(n), "--realtime", "--latency-budget-ms", "50",
                     "--summary-json", str(summary), *FAST])
    assert code == 0
    stats = json.loads(summary.read_text())
    # The model answers no request in under SLOW_DELAY_S (0.2 s) > the 50 ms budget, on any machine: a
    # pipeline that keeps real time waits for none of them, so every frame is encoded unedited at its
    # deadline (a pipeline that waited would pre-edit them and fall behind the feed).
    assert SLOW_DELAY_S * 1e3 > 50
    assert stats["frames"] == n and stats["bypassed_by_reason"]["budget"] == n
    assert stats["latency_ms"].get("preedit", {}).get("count", 0) == 0
    assert stats["bypassed_frames"] == sum(stats["bypassed_by_reason"].values())
    frames, _ = _decode(out)
    assert len(frames) == n


def test_run_starts_embedded_server_and_sends_qp_when_no_url_given(repo, media, tmp_path):
    out, summary = tmp_path / "e.mkv", tmp_path / "s.json"
    code = cli_main(["run", str(media("fullrange.mkv")), "-o", str(out), "--model-repository", str(repo),
                     "--max-frames", "10", "--qp", "30", "--summary-json", str(summary), *FAST])
    assert code == 0
    frames, _ = _decode(out)
    assert len(frames) == 10 and int(frames[0].color_range) == 2
    assert json.loads(summary.read_text())["latency_ms"]["preedit"]["count"] == 10


@pytest.mark.parametrize("frames_per_request", [1, 4])
def test_run_exits_5_with_playable_output_when_server_dies_mid_stream(repo, media, tmp_path, capsys,
                                                                      frames_per_request):
    srv = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    models=("preedit_slow",)))
    srv.start()
    try:
        srv.wait_model_ready("preedit_slow")
        out = tmp_path / "partial.mp4"
        thread, result = _run_in_thread([media("flower.mp4"), "-o", out, "--url", srv.grpc_url, "--model",
                                         "preedit_slow", "--frames-per-request", frames_per_request, *FAST])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 2000):
            time.sleep(0.1)
        time.sleep(1.0)
        srv.proc.kill()
        thread.join(timeout=60)
    finally:
        srv.stop()
    assert not _group_alive(srv.proc.pid), "python-backend stubs of the killed server were left running"
    assert not thread.is_alive()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("preedit run: error:")]
    assert result.get("code") == 5 and len(lines) == 1
    assert "Triton at" in lines[0] and "partial output finalised" in lines[0]
    frames, _ = _decode(out)
    assert 0 < len(frames) < 150
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"preedit_{os.getpid()}_")]


def test_identity_model_on_a_10bit_clip_equals_bypass_bit_for_bit_at_10_bits(server, media, tmp_path):
    import numpy as np

    from preedit.client import bitdepth

    src = media("sparks_96x64_yuv420p10le.yuv")
    for ext, codec in ((".y4m", []), (".mp4", ["--codec", "hevc", "--preset", "ultrafast"])):
        out, ref = tmp_path / f"edited{ext}", tmp_path / f"bypass{ext}"
        summary = tmp_path / f"s{ext}.json"
        assert cli_main(["run", str(src), "-o", str(out), "--url", server.grpc_url, "--summary-json", str(summary),
                         *codec]) == 0
        assert json.loads(summary.read_text())["bypassed_frames"] == 0  # every frame went through the model
        assert cli_main(["run", str(src), "-o", str(ref), "--bypass", *codec]) == 0
        frames, _ = _decode(out)
        assert len(frames) == 5 and frames[0].format.name == "yuv420p10le"
        assert out.read_bytes() == ref.read_bytes()  # identity through Triton == bypass, at 10 bits
    # and the y4m holds the source's 10-bit code values exactly (no 8-bit round trip)
    raw = np.fromfile(src, "<u2").reshape(5, -1)
    for i, f in enumerate(_decode(tmp_path / "edited.y4m")[0]):
        planes = bitdepth.planes10_of(f, 96, 64)
        assert np.array_equal(np.concatenate([p.ravel() for p in planes]), raw[i])


def test_transport_sends_full_groups_and_the_rest_at_close_when_frames_per_request_set(server):
    from preedit.client.transport import TritonTransport

    frames = [np.full((24, 16), 16 + i, np.uint8) for i in range(10)]
    t = TritonTransport(server.grpc_url, "preedit_groups", (24, 16), n_slots=2, frames_per_request=4,
                        linger_s=600.0, headers=server.grpc_headers)  # no linger flush: only full groups or close
    try:
        futures = [t.submit(f) for f in frames]
        done = [fut.result(timeout=60) for fut in futures[:8]]
        assert not futures[8].done()  # 2 frames wait for their group to fill
    finally:
        t.close()
    done += [fut.result(timeout=1) for fut in futures[8:]]
    assert [int(d[0, 0]) for d in done] == [4] * 8 + [2, 2]  # frames each request carried
    for src, got in zip(frames, done):  # every frame came back to its own Future, in order
        assert (got.ravel()[1:] == src.ravel()[1:]).all()


def test_transport_sends_a_group_that_does_not_fill_after_linger(server):
    from preedit.client.transport import TritonTransport

    t = TritonTransport(server.grpc_url, "preedit_groups", (24, 16), n_slots=1, frames_per_request=4,
                        linger_s=0.05, headers=server.grpc_headers)
    try:
        futures = [t.submit(np.full((24, 16), 40 + i, np.uint8)) for i in range(3)]
        assert [int(f.result(timeout=60)[0, 0]) for f in futures] == [3, 3, 3]  # sent without close()
    finally:
        t.close()


def test_run_with_frames_per_request_matches_bypass_bit_for_bit_when_model_is_identity(server, media, tmp_path):
    src = media("flower.mp4")
    out, ref, summary = tmp_path / "edited.mp4", tmp_path / "bypass.mp4", tmp_path / "s.json"
    assert cli_main(["run", str(src), "-o", str(out), "--url", server.grpc_url, "--max-frames", "45",
                     "--frames-per-request", "4", "--summary-json", str(summary), *FAST]) == 0
    assert cli_main(["run", str(src), "-o", str(ref), "--bypass", "--max-frames", "45", *FAST]) == 0
    assert out.read_bytes() == ref.read_bytes()  # 11 groups of 4 and one of 1, each frame in its place
    stats = json.loads(summary.read_text())
    assert stats["frames"] == 45 and stats["bypassed_frames"] == 0
