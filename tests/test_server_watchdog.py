"""The server watchdog (`preedit/_server_watchdog.py`) cleans up after a launcher that died without
`stop()` (issue 12 rows 3 and 6), and does nothing after a clean stop. A fake "server" (a child
in its own process group mapping a region file) stands in for tritonserver here; the real case
is `test_serve_killed_with_sigkill_takes_its_tritonserver_along`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from preedit.serve import WATCHDOG

FAKE_SERVER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
print("mapped", flush=True)
time.sleep(120)
"""


def _fake_server(tmp_path):
    region = f"/dev/shm/triton_python_backend_shm_region_test-{uuid.uuid4()}"
    with open(region, "wb") as f:
        f.write(b"\0" * 4096)
    server = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, region], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert server.stdout.readline().strip() == "mapped"
    extra = tmp_path / "view"
    extra.mkdir()
    (extra / "model").symlink_to(tmp_path)
    return server, region, extra


def _watch(server, region, extra, last):
    wd = subprocess.Popen([sys.executable, "-I", "-S", str(WATCHDOG), str(server.pid)], stdin=subprocess.PIPE,
                          start_new_session=True)
    lines = [{"regions": [region]}, {"paths": [str(extra)]}, *last]
    wd.stdin.write("".join(json.dumps(m) + "\n" for m in lines).encode())
    wd.stdin.close()  # the launcher's end of the pipe closes: after "done", or as if it were SIGKILLed
    assert wd.wait(timeout=30) == 0


def test_watchdog_kills_the_group_and_unlinks_its_region_when_the_launcher_dies(tmp_path):
    server, region, extra = _fake_server(tmp_path)
    try:
        _watch(server, region, extra, last=[])
        assert server.wait(timeout=10) == -9  # SIGKILLed with its group
        assert not os.path.exists(region) and not extra.exists()
        assert tmp_path.exists()  # a symlink inside a removed folder is not followed
    finally:
        if server.poll() is None:
            server.kill()
        if os.path.exists(region):
            os.unlink(region)


def test_watchdog_leaves_everything_when_the_launcher_stopped_cleanly(tmp_path):
    server, region, extra = _fake_server(tmp_path)
    try:
        _watch(server, region, extra, last=[{"done": True}])
        assert server.poll() is None and os.path.exists(region) and extra.exists()
    finally:
        server.kill()
        server.wait()
        os.unlink(region)
