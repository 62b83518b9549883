"""Watchdog of one embedded Triton server: cleans up after a launcher that died without `stop()`.

```
 launcher (TritonServer) ──pipe: JSON lines {"regions": [...], "paths": [...]} ... {"done": true}──> watchdog
 pipe closes without "done" (the launcher was SIGKILLed) ──> SIGKILL the server's process group,
   wait until none of its processes maps the regions, unlink them, remove the recorded paths
```
PR_SET_PDEATHSIG already kills tritonserver with its launcher, but a killed server cannot unlink its
64 MiB python-backend shm region; this process, in its own session, does. It is run as a script
(`python -I -S _server_watchdog.py PGID`, standard library only, so it starts in milliseconds) and
ends with the pipe: at once after "done", after the clean-up otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time

REGION_MARK = "triton_python_backend_shm_region_"


def group_pids(pgid: int) -> list:
    """Live (non-zombie) processes of process group `pgid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def mapped_by(pids: list, regions: set) -> set:
    """Which of `regions` (paths) the processes `pids` still map."""
    held = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                held.update(line.split()[-1] for line in f if REGION_MARK in line)
        except OSError:
            continue
    return held & regions


def clean_up(pgid: int, regions: set, paths: set, wait_s: float = 10.0) -> list:
    """Kill group `pgid`, unlink `regions` once unmapped (or after `wait_s`), remove `paths`; returns what went."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.monotonic() + wait_s
    while regions and mapped_by(group_pids(pgid), regions) and time.monotonic() < deadline:
        time.sleep(0.05)
    removed = []
    for path in sorted(regions) + sorted(paths):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    return removed


def main(argv: list) -> int:
    pgid = int(argv[1])
    regions, paths = set(), set()
    for line in sys.stdin:  # blocks until the launcher writes, or its end of the pipe closes
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("done"):
            return 0
        regions.update(p for p in msg.get("regions", []) if REGION_MARK in os.path.basename(p))
        paths.update(msg.get("paths", []))
    clean_up(pgid, regions, paths)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the launcher, not for us
    raise SystemExit(main(sys.argv))
