"""Issue 12 row 10: after the last frame a run's teardown is bounded (5 s by default) even when the
server is frozen (SIGSTOP), and the frozen run's registrations are cleaned by the next client.

The bound is checked two ways: on a fake clock (every close and the server stop get only what is
left of one deadline: a condition, no timer), and against a real SIGSTOPped Triton, where the run's
own "teardown took" figure must stay within the bound plus the slack of one late RPC."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import tritonclient.grpc as grpcclient

from preedit.client import run as run_mod
from preedit.client.transport import TritonTransport
from preedit.client.transport._ring import unregister_reserve
from preedit.serve import ServerConfig, TritonServer, free_port, grpc_headers
from synthetic import media  # noqa: F401 - fixture
from test_run_triton import repo  # noqa: F401 - fixture

FAST = ["--codec", "h264", "--preset", "ultrafast"]


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class _FrozenTransport:
    """Waits (on the fake clock) the whole time it is given, like a close against a frozen server."""

    def __init__(self, clock, given):
        self.clock, self.given = clock, given

    def close(self, timeout_s):
        self.given.append(timeout_s)
        self.clock.now += timeout_s


class _Server:
    def __init__(self, clock, given):
        self.clock, self.given = clock, given

    def stop(self, timeout_s):
        self.given.append(("server", timeout_s))
        self.clock.now += timeout_s


def test_teardown_shares_one_deadline_between_streams_and_server_when_everything_hangs(monkeypatch):
    clock, given = _Clock(), []
    monkeypatch.setattr(run_mod, "time", clock)
    streams = []
    for k in range(4):
        s = run_mod._Stream(f"in{k}", f"out{k}")
        s.transport = _FrozenTransport(clock, given)
        streams.append(s)
    took = run_mod.teardown(streams, _Server(clock, given), 5.0)
    assert given[:4] == [5.0, 0.0, 0.0, 0.0]  # the first close uses the budget, the others get nothing left
    assert given[4] == ("server", 0.5)  # the server still gets its kill grace, never another full wait
    assert took == pytest.approx(5.5)  # 5 s + the 0.5 s floor of the stop (SIGKILL after it)


def test_unregister_reserve_is_a_fifth_of_the_close_at_most_one_second():
    assert unregister_reserve(5.0) == 1.0 and unregister_reserve(2.0) == pytest.approx(0.4)
    assert unregister_reserve(-1.0) == 0.0


def test_run_refuses_a_non_finite_teardown_timeout(media, tmp_path, capsys):
    from preedit.cli import main as cli_main

    assert cli_main(["run", str(media("flower.mp4")), "-o", str(tmp_path / "o.mp4"), "--bypass",
                     "--teardown-timeout-s", "nan"]) == 2
    assert "--teardown-timeout-s" in capsys.readouterr().err


def _registered(srv):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    try:
        return client.get_system_shared_memory_status(as_json=True, headers=grpc_headers(srv.api_key)).get("regions", {})
    finally:
        client.close()


def _encoded(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    m = re.search(r'preedit_client_frames_total\{stage="encoded"\}\s+([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


@pytest.mark.needs_triton
def test_run_tears_down_within_its_bound_when_the_server_is_frozen_mid_stream(repo, media, tmp_path):  # noqa: F811
    srv = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    models=("preedit",)))
    srv.start()
    frozen = False
    try:
        srv.wait_model_ready("preedit")
        out, summary, port = tmp_path / "o.mp4", tmp_path / "s.json", free_port()
        env = dict(os.environ, PREEDIT_TRITON_KEY=srv.api_key, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "preedit", "run", str(media("flower.mp4")), "-o", str(out),
                                 "--url", srv.grpc_url, "--realtime", "--latency-budget-ms", "50",
                                 "--max-frames", "75", "--metrics-port", str(port), "--summary-json", str(summary),
                                 "--teardown-timeout-s", "5", *FAST],
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and _encoded(port) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)  # frames are flowing through the model
            assert proc.poll() is None, "run ended before the freeze"
            os.kill(srv.proc.pid, signal.SIGSTOP)
            frozen = True
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-2000:]
        stats = json.loads(summary.read_text())
        assert stats["frames"] == 75 and stats["bypassed_by_reason"].get("budget", 0) > 0  # frozen: bypassed
        took = [float(x) for x in re.findall(r"teardown took ([0-9.]+) s", err)]
        assert len(took) == 1, err[-2000:]
        print(f"frozen-server teardown: {took[0]:.2f} s")  # the figure in BENCHMARKS §8
        # The bound by construction is 5 s; the slack covers one unregister RPC's deadline overshoot.
        assert took[0] <= 5.0 + 1.0, took  # was 18-21 s (issue 12 row 10)
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"preedit_{proc.pid}_")]

        # Thawed, the server still lists the dead run's regions; the next client unregisters them.
        os.kill(srv.proc.pid, signal.SIGCONT)
        frozen = False
        assert [n for n in _registered(srv) if n.startswith(f"preedit_{proc.pid}_")]  # frozen: could not unregister
        nxt = TritonTransport(srv.grpc_url, "preedit", (24, 16), n_slots=1, headers=grpc_headers(srv.api_key))
        try:
            status = nxt.client.get_system_shared_memory_status(as_json=True, headers=nxt.headers)
            assert [n for n in status.get("regions", {}) if n.startswith(f"preedit_{proc.pid}_")] == []
        finally:
            nxt.close()
    finally:
        if frozen:
            os.kill(srv.proc.pid, signal.SIGCONT)
        srv.stop()
