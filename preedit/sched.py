"""Keep encoders off real-time scheduling.

SVT-AV1, when its process may raise priorities (root, or CAP_SYS_NICE), switches the thread that
opens an encoder to SCHED_FIFO priority 99, and the ~40 worker threads it then creates inherit it
(seen here: one `libsvtav1` context in-process → 38 FIFO-99 threads; an `ffmpeg -c:v libsvtav1`
child → 49). A busy FIFO-99 thread is never preempted by normal processes: on a shared host it
starves Triton, the decoder, other streams and every other job (on this 2-core box one training run
took a whole core for hours). Containers often run as root, so this is the product's problem.

`forbid_realtime()` drops CAP_SYS_NICE from the calling thread (effective, permitted, inheritable
and, unless told not to, the bounding set): SVT-AV1's request then fails (it logs "Failed to set
thread priority" and carries on at normal priority), and threads and processes started from that
thread afterwards cannot go real-time either. `child_preexec()` does the same in a child between
fork and exec (for FFmpeg). Called at the CLI entry (before any thread exists), by the encoder's constructor
(for library use: the pipeline starts its encode thread afterwards, which inherits it), by the FFmpeg runner, and by the test suite. Nothing in preedit needs CAP_SYS_NICE:
lowering one's own priority (nice) never does.

```
 preedit.cli.main ──forbid_realtime()──> every thread / child of the run: no SCHED_FIFO/RR
 PyAvEncoder() ──forbid_realtime()──> the same for the threads started after it (the encode thread)
 run_command(ffmpeg ...) ──preexec_fn=child_preexec()──> the FFmpeg child cannot go real-time
```
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from typing import List, Optional

log = logging.getLogger(__name__)

CAP_SYS_NICE = 23
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_REALTIME = tuple(p for p in (getattr(os, "SCHED_FIFO", None), getattr(os, "SCHED_RR", None)) if p is not None)
_done = threading.local()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity mask, else the machine's CPU count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()  # opened once: a child between fork and exec must not load libraries


def forbid_realtime(children: bool = True) -> bool:
    """Drop CAP_SYS_NICE from the calling thread (and the threads it starts later); idempotent per
    thread. `children`: also from the bounding set, so processes it execs as root cannot regain it.

    Returns True when the thread can no longer take real-time priority (also when it never could:
    not root and no CAP_SYS_NICE), False where the drop was refused (then nothing changed)."""
    if getattr(_done, "value", None) is not None:
        return _done.value
    result = _drop_sys_nice(children)
    _done.value = result
    return result


def child_preexec():
    """A `preexec_fn` for subprocesses that may run SVT-AV1 (FFmpeg), or None where there is nothing
    to drop (not root, not Linux). It only calls prctl/capset on a libc handle opened beforehand."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or _LIBC is None:
        return None
    return _child_drop


def _child_drop() -> None:
    _drop_sys_nice(True)


def _drop_sys_nice(children: bool) -> bool:
    if not hasattr(os, "sched_getscheduler"):
        return True  # not Linux: no SCHED_FIFO to fear
    libc = _LIBC
    if libc is None or not hasattr(libc, "capget"):
        return False
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return False
    bit = 1 << CAP_SYS_NICE
    if (data[0].effective | data[0].permitted | data[0].inheritable) & bit:
        for field in ("effective", "permitted", "inheritable"):
            setattr(data[0], field, getattr(data[0], field) & ~bit & 0xFFFFFFFF)
        if libc.capset(ctypes.byref(header), data) != 0:
            log.debug("capset refused (errno %d): real-time priority stays possible", ctypes.get_errno())
            return False
    if children:
        # The bounding set: children exec'd as root would regain CAP_SYS_NICE from it. Dropping needs
        # CAP_SETPCAP; without it the children of a non-root process cannot gain it anyway.
        libc.prctl(_PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0)
    return True


def realtime_threads(pid: Optional[int] = None) -> List[int]:
    """Thread ids of `pid` (default: this process) running SCHED_FIFO or SCHED_RR."""
    pid = os.getpid() if pid is None else pid
    found = []
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return found
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) in _REALTIME:
                found.append(tid)
        except OSError:
            continue
    return found
