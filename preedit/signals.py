"""SIGTERM and SIGHUP end a run like Ctrl-C (issue 12, row 2).

`terminate_like_sigint()` (a context manager, used by `preedit.cli.call_main`) makes SIGTERM and SIGHUP
raise `Terminated` in the main thread. `Terminated` is a `KeyboardInterrupt`, so every path that already
drains and finalises on Ctrl-C (pipeline.run_threads, run's `finally`: encoders finished, shm unregistered
and unlinked, the embedded server stopped) runs unchanged; the CLI then exits 128 + the signal number
(143 for SIGTERM, 129 for SIGHUP). Further signals during that teardown are logged, not raised, so the
cleanup itself is not cut short. Outside the main thread (e.g. a CLI called from a worker thread) nothing
is installed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM / SIGHUP; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


@contextlib.contextmanager
def terminate_like_sigint() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, _frame):
        if fired:
            log.warning("%s again: already finishing (outputs are being finalised)", signal.Signals(signum).name)
            return
        fired.append(signum)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
