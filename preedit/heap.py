"""Keep large frame buffers in the heap instead of fresh pages every frame (glibc malloc).

A video pipeline allocates and frees buffers of a frame's size (1.4 MB at 720p, 3.1 MB at 1080p)
many times a frame: decoded pictures, NV12 arrays, copies out of shared memory, encoder input. With
glibc's defaults a block over the mmap threshold (128 KiB at start, raised to the largest block
freed) comes from `mmap` and goes back with `munmap`, and the heap's top is trimmed back to the OS
past 2× that threshold: either way the next frame faults its pages in again. Measured on a 720p
`preedit bench --only pipeline` (training paused, 2 runs each, interleaved): `preedit run`
28.0 / 28.3 → 25.7 / 25.8 ms CPU a frame, the python stubs 12.1 / 11.2 → 10.6 / 10.4, 41.3–42.2 →
45.1–45.4 fps. Output bytes are the same (allocation does not touch the computation).

```
 preedit.cli.main ──reuse_large_buffers()──> this process: mallopt(M_MMAP_THRESHOLD 64 MiB, M_TRIM_THRESHOLD 256 MiB)
 TritonServer.start ──SERVER_ENV──> tritonserver and its python stubs: the same as glibc tunables
```
The price: up to M_TRIM_THRESHOLD of freed heap stays mapped (resident) instead of going back to the
OS. Other C libraries (musl) and non-Linux systems: nothing happens. Values already set in the
environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Dict

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 64 << 20  # bytes: blocks below this come from the heap (a 4K frame is ~12 MB)
TRIM_THRESHOLD = 256 << 20  # bytes of free heap top kept before giving memory back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
SERVER_ENV: Dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def reuse_large_buffers() -> bool:
    """Set this process's glibc malloc thresholds (unless the environment sets them); True if set."""
    if any(k in os.environ for k in SERVER_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; glibc defaults stay")
    return ok


def server_env(env: Dict[str, str]) -> Dict[str, str]:
    """`env` with the same thresholds for a server we start (glibc reads them at its start)."""
    out = dict(env)
    for key, value in SERVER_ENV.items():
        out.setdefault(key, os.environ.get(key, value))
    return out
