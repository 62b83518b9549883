"""Issue 12 row 2: SIGTERM / SIGHUP end `preedit run` like Ctrl-C (`preedit/signals.py`).

A real `preedit run --realtime` subprocess with its embedded Triton server gets the signal once its
output holds encoded frames (a condition, not a timer): it exits 143 / 129 with a playable file of the
frames so far, its `preedit_<pid>_*` shm segments unlinked and no tritonserver of its own left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from synthetic import media  # noqa: F401 - fixture
from test_run_triton import repo  # noqa: F401 - fixture

pytestmark = pytest.mark.needs_triton

FAST = ["--codec", "h264", "--preset", "ultrafast"]


def _children(pid: int):
    out = subprocess.run(["ps", "-o", "pid=,ppid=,pgid=,comm=", "-e"], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [r for r in rows if len(r) == 4 and r[1] == str(pid)]


def _tritons_started_by(pids):
    out = subprocess.run(["ps", "-o", "pid=,comm=", "-e"], capture_output=True, text=True).stdout
    alive = {line.split()[0] for line in out.splitlines() if "tritonserver" in line}
    return [p for p in pids if p in alive]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_run_finalises_output_and_cleans_up_when_terminated(repo, media, tmp_path, sig, code):  # noqa: F811
    out = tmp_path / "o.mp4"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "preedit", "run", str(media("flower.mp4")), "-o", str(out),
                             "--model-repository", str(repo), "--realtime", *FAST],
                            stderr=subprocess.PIPE, text=True, env=env)
    servers = set()
    try:
        deadline = time.monotonic() + 120
        # Encoded frames in the file (mdat grows past the header) => server up, frames through.
        while time.monotonic() < deadline and proc.poll() is None and not (out.exists() and out.stat().st_size > 4000):
            servers |= {r[0] for r in _children(proc.pid) if "triton" in r[3]}
            time.sleep(0.05)
        servers |= {r[0] for r in _children(proc.pid) if "triton" in r[3]}
        assert proc.poll() is None, "run ended before the signal"
        assert servers, "no embedded tritonserver seen"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "terminated" in err and "Traceback" not in err, err
    import av

    with av.open(str(out)) as c:
        frames = list(c.decode(c.streams.video[0]))
    assert 0 < len(frames) < 150
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"preedit_{proc.pid}_")]
    deadline = time.monotonic() + 5
    while _tritons_started_by(servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _tritons_started_by(servers), "the embedded tritonserver outlived the run"
