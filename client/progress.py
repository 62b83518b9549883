"""Progress bars for `preedit run` and `preedit ladder`: frames, fps and ETA (tqdm) on stderr when it is a
terminal, nothing otherwise (logs, CI, pipes stay clean).

    bar = progress_bar(total=250, desc="in.mp4")   # a tqdm bar on a TTY, else a no-op
    bar.update(1); bar.close()
"""

from __future__ import annotations

import sys
from typing import IO, Optional


class _Quiet:
    """The bar when stderr is not a terminal: every call does nothing."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: Optional[int], desc: str, *, is_tty: Optional[bool] = None,
                 file: Optional[IO[str]] = None, position: Optional[int] = None):
    """A tqdm bar counting frames (`total` None: no ETA, e.g. live input) when `is_tty`
    (default: whether `file`, default stderr, is a terminal); else a quiet stand-in."""
    file = sys.stderr if file is None else file
    if is_tty is None:
        is_tty = bool(getattr(file, "isatty", lambda: False)())
    if not is_tty:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=file, position=position, dynamic_ncols=True,
                mininterval=0.5, leave=True)
