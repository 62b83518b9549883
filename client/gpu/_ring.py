"""Slot bookkeeping for a ring of registered regions: which slots are free, which in flight.

Pure Python (no CUDA), shared by the CUDA shared-memory transport and its CPU tests.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, List, Optional, Set


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
