"""Slot rings for the transports: POSIX shared-memory slots (CPU) and slot-index bookkeeping (CUDA).

```
 slot i:  input region  /preedit_<run>_in<i>   [NV12 frame bytes | QP fp32]
          output region /preedit_<run>_out<i>  [NV12 frame bytes]
 free slots ──acquire──> client writes frame ──infer──> Triton reads/writes in place
            <──release── client copies the edited frame out
```
No pixels go through the gRPC socket: a request names regions, byte sizes and offsets.

WAR: `tritonclient.utils.shared_memory` (2.51) imports `pkg_resources`, which setuptools >= 81
no longer ships, so it cannot be imported in our pinned environment. Python's own
`multiprocessing.shared_memory` creates the same POSIX objects (`shm_open("/<name>")`), which
Triton maps by key, and gives NumPy views directly (no extra copy through ctypes).
"""

from __future__ import annotations

import _posixshmem
import logging
import os
import queue
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Deque, List, Optional, Set

import numpy as np

log = logging.getLogger(__name__)


#: Default bound of a transport's `close()` (drain + unregister), seconds: a run's teardown is <= 5 s
#: after its last frame even with a frozen server (issue 12 row 10).
CLOSE_TIMEOUT_S = 5.0


def unregister_reserve(timeout_s: float) -> float:
    """Part of a close's time kept for the unregister calls (pure): a fifth, at most 1 s."""
    return min(1.0, max(0.0, timeout_s) / 5.0)


class ShmRegion:
    """One POSIX shared-memory object, owned (created and unlinked) by this process."""

    def __init__(self, name: str, byte_size: int) -> None:
        if byte_size <= 0:
            raise ValueError(f"shared-memory region needs a positive size, got {byte_size}")
        self.name = name
        self.byte_size = byte_size
        # track=False: we unlink explicitly; the resource tracker would warn about "leaks" otherwise.
        try:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=byte_size, track=False)
        except TypeError:  # Python < 3.13 has no `track`
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=byte_size)
            try:
                from multiprocessing import resource_tracker  # lazy: optional dependency

                resource_tracker.unregister(self._shm._name, "shared_memory")  # type: ignore[attr-defined]
            except Exception:  # pragma: no cover - best effort
                pass
        self._closed = False

    @property
    def key(self) -> str:
        """The shm_open key Triton needs (leading slash)."""
        return "/" + self.name

    def view(self, dtype, shape, offset: int = 0) -> np.ndarray:
        """A NumPy view of the region (no copy); valid until `destroy()`."""
        count = int(np.prod(shape))
        return np.ndarray(shape, dtype=dtype, buffer=self._shm.buf, offset=offset) if count else np.empty(shape, dtype)

    def destroy(self) -> None:
        """Unmap and unlink; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._shm.close()
        except BufferError:  # a view is still alive: unlink anyway, the mapping goes with the process
            pass
        try:
            # SharedMemory.unlink() would also unregister from the resource tracker, which
            # has already forgotten this region (see __init__): unlink the POSIX object directly.
            _posixshmem.shm_unlink(self._shm._name)  # type: ignore[attr-defined]
        except FileNotFoundError:
            pass


@dataclass
class Slot:
    """One in-flight request's memory: up to k frames (+ a QP each) in, as many out (k: the ring's
    `frames_per_slot`). Input region: `[k x NV12 frame | pad to 64 B | k x fp32 QP]`; output:
    `[k x frame]`; `row` picks a frame.
    """

    index: int
    inp: ShmRegion
    out: ShmRegion
    frame_bytes: int
    qp_offset: int

    def frame_in(self, shape, row: int = 0) -> np.ndarray:
        return self.inp.view(np.uint8, shape, offset=row * self.frame_bytes)

    def qp_in(self, row: int = 0) -> np.ndarray:
        return self.inp.view(np.float32, (1, 1), offset=self.qp_offset + 4 * row)

    def frame_out(self, shape, row: int = 0) -> np.ndarray:
        return self.out.view(np.uint8, shape, offset=row * self.frame_bytes)


def sweep_stale_regions(prefix: str = "preedit", shm_dir: str = "/dev/shm") -> List[str]:
    """Unlink `<prefix>_<pid>_*` regions left by client processes that no longer exist.

    A client killed with SIGKILL cannot unlink its ring; the next client cleans up after it.
    Returns the names removed (Linux only: elsewhere, or without `shm_dir`, nothing happens).
    """
    removed: List[str] = []
    if not os.path.isdir(shm_dir):
        return removed
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)_[0-9a-f]{{8}}_(?:in|out)\d+$")
    for name in os.listdir(shm_dir):
        match = pattern.match(name)
        if not match or os.path.exists(f"/proc/{match.group(1)}"):
            continue
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def qp_offset(frame_bytes: int) -> int:
    """Byte offset of the fp32 QP after a frame in an input region (64-byte aligned)."""
    return (frame_bytes + 63) // 64 * 64


class SlotRing:
    """`n_slots` slots for frames of `frame_bytes`; `acquire` blocks until a slot is free.

    Args:
        n_slots: how many requests may be in flight at once.
        frame_bytes: bytes of one NV12 frame (`H*3/2*W`).
        prefix: region name prefix; a per-process unique suffix is added.
        frames_per_slot: frames one request carries at most.
    """

    def __init__(self, n_slots: int, frame_bytes: int, prefix: str = "preedit", frames_per_slot: int = 1) -> None:
        if n_slots < 1 or frames_per_slot < 1:
            raise ValueError(f"a ring needs at least one slot of one frame, got {n_slots} x {frames_per_slot}")
        swept = sweep_stale_regions(prefix)
        if swept:
            log.info("removed %d shared-memory regions left by dead clients", len(swept))
        self.run_id = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.frame_bytes = frame_bytes
        self.slots: List[Slot] = []
        self._free: "queue.Queue[int]" = queue.Queue()
        try:
            k = frames_per_slot
            for i in range(n_slots):
                qp_off = qp_offset(frame_bytes * k)
                inp = ShmRegion(f"{self.run_id}_in{i}", qp_off + 4 * k)
                out = ShmRegion(f"{self.run_id}_out{i}", frame_bytes * k)
                self.slots.append(Slot(i, inp, out, frame_bytes, qp_off))
                self._free.put(i)
        except Exception:
            self.destroy()
            raise

    def __len__(self) -> int:
        return len(self.slots)

    def acquire(self, timeout_s: Optional[float] = None) -> Optional[Slot]:
        """A free slot, or None if none frees up within `timeout_s` (None waits forever)."""
        try:
            idx = self._free.get(timeout=timeout_s) if timeout_s is None or timeout_s > 0 else self._free.get_nowait()
        except queue.Empty:
            return None
        return self.slots[idx]

    def release(self, slot: Slot) -> None:
        self._free.put(slot.index)

    def free_count(self) -> int:
        return self._free.qsize()

    def destroy(self) -> None:
        for slot in self.slots:
            slot.inp.destroy()
            slot.out.destroy()


class SlotIndexRing:
    """`n` slot indices handed out oldest-free-first; a slot is reused only after `release`.

    Args:
        n: number of slots (= requests in flight at most).
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"a ring needs at least one slot, got {n}")
        self.n = n
        self._free: Deque[int] = deque(range(n))
        self._busy: Set[int] = set()
        self._cv = threading.Condition()
        self.history: List[int] = []  # acquisition order (tests and debugging; bounded below)

    def acquire(self, timeout_s: Optional[float] = None) -> Optional[int]:
        """A free slot index, or None when none frees up within `timeout_s` (None waits forever)."""
        with self._cv:
            if not self._cv.wait_for(lambda: bool(self._free), timeout=timeout_s):
                return None
            idx = self._free.popleft()
            self._busy.add(idx)
            self.history.append(idx)
            if len(self.history) > 4096:
                del self.history[:2048]
            return idx

    def release(self, idx: int) -> None:
        """Return a slot; releasing a slot that is not in flight is a bug and raises."""
        with self._cv:
            if idx not in self._busy:
                raise RuntimeError(f"slot {idx} released but not in flight")
            self._busy.remove(idx)
            self._free.append(idx)
            self._cv.notify_all()

    @property
    def in_flight(self) -> int:
        with self._cv:
            return len(self._busy)

    def wait_idle(self, timeout_s: Optional[float] = None) -> bool:
        """Block until no slot is in flight; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._busy, timeout=timeout_s)

    def notify_all(self) -> None:
        with self._cv:
            self._cv.notify_all()
