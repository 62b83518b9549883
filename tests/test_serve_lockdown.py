"""Issue 12, server side: a server we start exposes no model control or shm administration to
other local processes (row 1), dies with its launcher (row 3), leaves no python-backend shm region
or temp log (row 6), refuses busy ports and answers "ready" only when it is ours (row 11), and stops
at once when frozen (row 10)."""

from __future__ import annotations

import base64
import glob
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from preedit.errors import ServerError
from preedit.serve import (API_KEY_HEADER, _is_stopped, regions_of, ServerConfig, TritonServer, build_server_cmd,
                           sweep_python_regions)
from synthetic import media  # noqa: F401,E402 - fixture

REPO_ROOT = Path(__file__).resolve().parents[1]

# The attacker: a second process with no key. Prints one JSON line of what each call answered.
ATTACK = r'''
import base64, json, sys, urllib.request, urllib.error
import numpy as np
import tritonclient.grpc as g
http, grpc, marker = sys.argv[1:4]
out = {}
def post(path, body):
    req = urllib.request.Request(f"http://{http}{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
code = f"open({marker!r}, 'w').write('ran')\n"
cfg = json.dumps({"name": "probe", "backend": "python", "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
                  "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]})
out["http_load"] = post("/v2/repository/models/probe/load",
                        {"parameters": {"config": cfg, "file:1/model.py": base64.b64encode(code.encode()).decode()}})
out["http_unload"] = post("/v2/repository/models/preedit/unload", {})
out["http_index"] = post("/v2/repository/index", {})
out["http_shm_register"] = post("/v2/systemsharedmemory/region/x/register", {"key": "/x", "offset": 0, "byte_size": 8})
out["http_shm_unregister"] = post("/v2/systemsharedmemory/unregister", {})
try:
    with urllib.request.urlopen(f"http://{http}/v2/systemsharedmemory/status", timeout=10) as r:
        out["http_shm_status"] = r.status
except urllib.error.HTTPError as e:
    out["http_shm_status"] = e.code
c = g.InferenceServerClient(grpc)
for name, call in [("grpc_load", lambda: c.load_model("probe")), ("grpc_unload", lambda: c.unload_model("preedit")),
                   ("grpc_shm_status", lambda: c.get_system_shared_memory_status()),
                   ("grpc_shm_register", lambda: c.register_system_shared_memory("x", "/x", 8)),
                   ("grpc_shm_unregister", lambda: c.unregister_system_shared_memory()),
                   ("grpc_index", lambda: c.get_model_repository_index())]:
    try:
        call()
        out[name] = "allowed"
    except Exception as e:
        out[name] = "refused: " + str(e)[:80]
out["model_ready"] = c.is_model_ready("preedit")
print(json.dumps(out))
'''


def test_server_cmd_locks_control_by_default(tmp_path):
    cmd = build_server_cmd(ServerConfig(model_repository=tmp_path, models=("preedit",), api_key="k1"),
                           Path("/bin/tritonserver"), Path("/b"), tmp_path / "view")
    assert "--model-control-mode=none" in cmd and not any(a.startswith("--load-model") for a in cmd)
    assert f"--model-repository={tmp_path / 'view'}" in cmd
    for flag in ("--http-restricted-api=", "--grpc-restricted-protocol="):
        spec = next(a for a in cmd if a.startswith(flag))[len(flag):]
        apis, key = spec.split(":")
        assert key == f"{API_KEY_HEADER}=k1"
        assert {"model-repository", "model-config", "shared-memory"} <= set(apis.split(","))
        assert not {"health", "metadata", "inference"} & set(apis.split(","))
    opt_in = build_server_cmd(ServerConfig(model_repository=tmp_path, models=("preedit",), api_key="k1",
                                           allow_model_control=True), Path("/t"), Path("/b"))
    assert "--model-control-mode=explicit" in opt_in and "--load-model=preedit" in opt_in
    assert any(a.startswith("--http-restricted-api=") for a in opt_in)  # still keyed


@pytest.mark.parametrize("which", ["http_port", "grpc_port", "metrics_port"])
def test_busy_port_refused_before_start(tmp_path, which):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"http_port": 0, "grpc_port": 0, "metrics_port": 0, which: port}
        server = TritonServer(ServerConfig(model_repository=tmp_path, **ports))
        with pytest.raises(ServerError, match=f"{port}.*already in use"):
            server.start()
        assert server.proc is None  # nothing started


def test_sweep_removes_only_unmapped_regions():
    stale = f"/dev/shm/triton_python_backend_shm_region_test-{uuid.uuid4()}"
    live = f"/dev/shm/triton_python_backend_shm_region_test-{uuid.uuid4()}"
    for p in (stale, live):
        with open(p, "wb") as f:
            f.write(b"\0" * 4096)
    fd = os.open(live, os.O_RDWR)
    m = mmap.mmap(fd, 4096)
    os.close(fd)
    try:
        removed = sweep_python_regions([stale, live])
        assert removed == [stale] and not os.path.exists(stale) and os.path.exists(live)
        assert sweep_python_regions([live], min_age_s=0) == []  # mapped by us: kept
    finally:
        m.close()
        os.unlink(live)


@pytest.mark.needs_triton
def test_locked_server_refuses_a_keyless_process_and_serves_its_own_client(tmp_path, media):  # noqa: F811
    # A long exit timeout: waiting on a frozen server would take 60 s; killing it at once does not.
    server = TritonServer(ServerConfig(http_port=0, grpc_port=0, metrics_port=0, models=("preedit",),
                                       exit_timeout_s=60))
    server.start()
    try:
        server.wait_model_ready("preedit")
        log_path = server.log_path
        marker = tmp_path / "uploaded-code-ran"
        res = subprocess.run([sys.executable, "-c", ATTACK, server.http_url, server.grpc_url, str(marker)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        out = json.loads(res.stdout.strip().splitlines()[-1])
        for name in ("http_load", "http_unload", "http_index", "http_shm_register", "http_shm_unregister",
                     "http_shm_status"):
            assert out[name] in (403, 503), (name, out)
        for name in ("grpc_load", "grpc_unload", "grpc_shm_status", "grpc_shm_register", "grpc_shm_unregister",
                     "grpc_index"):
            assert out[name].startswith("refused"), (name, out)
        assert out["model_ready"] is True  # unload refused: still serving
        assert not marker.exists()  # no uploaded code ran

        # the client path: `preedit run --url` with the key (env) works end to end, without it is refused
        env = dict(os.environ, PREEDIT_TRITON_KEY=server.api_key)
        src = media("flower.mp4")
        ok = subprocess.run([sys.executable, "-m", "preedit", "run", str(src), "-o", str(tmp_path / "o.mp4"),
                             "--url", server.grpc_url, "--max-frames", "5", "--preset", "ultrafast"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert (tmp_path / "o.mp4").stat().st_size > 1000
        env.pop("PREEDIT_TRITON_KEY")
        denied = subprocess.run([sys.executable, "-m", "preedit", "run", str(src), "-o", str(tmp_path / "n.mp4"),
                                 "--url", server.grpc_url, "--max-frames", "5", "--preset", "ultrafast"],
                                capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
        assert denied.returncode != 0 and "restricted" in denied.stderr, denied.stderr[-1000:]

        # row 10: regions of a client that died without closing are unregistered (and unlinked) by the next
        dead = subprocess.run([sys.executable, "-c", (
            "import os, sys\nfrom preedit.client.transport import TritonTransport\n"
            "t = TritonTransport(sys.argv[1], 'preedit', (24, 16), n_slots=2, headers={sys.argv[2]: sys.argv[3]})\n"
            "print(os.getpid(), flush=True)\nos._exit(0)\n"),
            server.grpc_url, *next(iter(server.grpc_headers.items()))],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert dead.returncode == 0, dead.stderr[-1000:]
        dead_pid = dead.stdout.split()[-1]
        from preedit.client.transport import TritonTransport

        def dead_regions():
            status = live.client.get_system_shared_memory_status(as_json=True, headers=server.grpc_headers)
            return [n for n in status.get("regions", {}) if n.startswith(f"preedit_{dead_pid}_")]

        assert glob.glob(f"/dev/shm/preedit_{dead_pid}_*")  # left behind by the dead client
        live = TritonTransport(server.grpc_url, "preedit", (24, 16), n_slots=2, headers=server.grpc_headers)
        try:
            assert dead_regions() == [] and glob.glob(f"/dev/shm/preedit_{dead_pid}_*") == []
        finally:
            live.close()

        # row 11: another object on the same ports is not "ready": the answering server is not its own
        impostor = TritonServer(ServerConfig(http_port=int(server.http_url.rsplit(":", 1)[1]),
                                             grpc_port=1, metrics_port=1))
        impostor.api_key = "not-the-key"
        impostor.proc = subprocess.Popen(["sleep", "30"])
        try:
            assert server.is_ready() and not impostor.is_ready()
        finally:
            impostor.proc.kill()
            impostor.proc.wait()

        ours = regions_of(server.proc.pid)
        assert ours  # the python backend maps its region(s)
        # row 10: a frozen server is killed at once, not after the exit timeout
        os.kill(server.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not _is_stopped(server.proc.pid) and time.monotonic() < deadline:  # the kernel stops it soon
            time.sleep(0.01)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 30.0, "a frozen server must be killed, not waited on for its 60 s exit timeout"
    finally:
        server.stop()
    # row 6: no python-backend region of this server, no temp log, no process
    assert [r for r in ours if os.path.exists(r)] == []
    assert not log_path.exists()
    assert server.proc.poll() is not None


def _serve(tmp_path):
    key_path = tmp_path / "serve.key"
    proc = subprocess.Popen([sys.executable, "-m", "preedit", "serve", "--http-port", "0", "--grpc-port", "0",
                             "--metrics-port", "0", "--model", "preedit", "--key-file", str(key_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = proc.stdout.readline()
    assert line.startswith("serving"), proc.stderr.read()[-2000:] if proc.poll() is not None else line
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    triton = [int(c) for c in children if "tritonserver" in Path(f"/proc/{c}/cmdline").read_bytes().decode()]
    assert len(triton) == 1
    return proc, triton[0], key_path


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.needs_triton
def test_serve_killed_with_sigkill_takes_its_tritonserver_along(tmp_path):
    proc, triton, key_path = _serve(tmp_path)
    try:
        assert key_path.stat().st_mode & 0o777 == 0o600 and len(key_path.read_text().strip()) >= 20
        ours = regions_of(triton)
        assert ours  # the python backend's 64 MiB region
        proc.kill()
        proc.wait()
        assert _gone(triton, 5.0), "tritonserver outlived its killed launcher"
        # the watchdog unlinks what the killed launcher cannot (not the next start's 60 s sweep)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ([r for r in ours if os.path.exists(r)] or key_path.exists()):
            time.sleep(0.1)
        assert [r for r in ours if os.path.exists(r)] == [] and not key_path.exists()
    finally:
        if not _gone(triton, 0):
            os.kill(triton, signal.SIGKILL)


@pytest.mark.needs_triton
def test_serve_sigterm_stops_triton_gracefully_and_cleans_up(tmp_path):
    proc, triton, key_path = _serve(tmp_path)
    assert key_path.exists()
    ours = regions_of(triton)
    assert ours
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert _gone(triton, 1.0)
    assert not key_path.exists()
    assert [r for r in ours if os.path.exists(r)] == []


@pytest.mark.needs_triton
def test_metrics_port_taken_during_start_is_refused_or_retried(monkeypatch):
    """Row 11/14: a metrics port taken between the free-port check and Triton's bind (Triton then runs
    on, and the port answers with another process's metrics: the `avg_batch_size` 0.0 flake's route to
    another server's counters) fails a given port, and a picked one is picked again."""
    import preedit.serve as serve_mod

    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    taken = other.getsockname()[1]
    regions_before = set(glob.glob(serve_mod.PYTHON_SHM_GLOB))
    try:
        monkeypatch.setattr(serve_mod, "port_is_free", lambda host, port: True)  # the check ran before the take
        server = TritonServer(ServerConfig(http_port=0, grpc_port=0, metrics_port=taken, models=("preedit",)))
        with pytest.raises(ServerError, match=f"metrics-port {taken} .* taken by another process"):
            server.start()
        assert server.proc.poll() is not None  # stopped, not left running without metrics

        # picked ports: the 1st start's metrics port and the 2nd start's HTTP port (Triton exits) are taken
        picks = iter([None, None, taken, taken])
        real_free_port = serve_mod.free_port
        monkeypatch.setattr(serve_mod, "free_port", lambda host="127.0.0.1": next(picks, None) or real_free_port(host))
        server = TritonServer(ServerConfig(http_port=0, grpc_port=0, metrics_port=0, models=("preedit",)))
        server.start()
        try:
            assert next(picks, "spent") == "spent"  # both takes were hit: the start was retried twice
            assert taken not in (server.config.http_port, server.config.grpc_port, server.config.metrics_port)
            assert serve_mod.owns_listening_port(server.proc.pid, server.config.metrics_port)
            with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
                assert "nv_" in resp.read().decode()
        finally:
            server.stop()
        # The failed starts' servers exited on their own with their stubs still up: their 64 MiB
        # regions (one per model instance) must go too (they were left in /dev/shm).
        assert set(glob.glob(serve_mod.PYTHON_SHM_GLOB)) - regions_before == set()
    finally:
        other.close()
