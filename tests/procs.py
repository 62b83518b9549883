"""Test helper: run `python -m preedit ...` and send it SIGTERM once a condition on its output holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable, Sequence, Tuple


def sigterm_when(args: Sequence[str], ready: Callable[[], bool], timeout_s: float = 120) -> Tuple[int, str]:
    """(exit code, stderr) of `preedit ARGS` terminated once `ready()` is true (a condition, not a timer)."""
    proc = subprocess.Popen([sys.executable, "-m", "preedit", *args], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err
