"""Minimal YUV4MPEG2 (4:2:0, 8- or 10-bit) reader and writer for the evaluation's intermediate files.

A frame is the tuple of planes `(y [H, W], u [H/2, W/2], v [H/2, W/2])`, each NumPy `uint8`
(code values 0..255) for 8-bit files, or `uint16` (0..1023, little-endian on disk) for 10-bit
files (header tag `C420p10`, FFmpeg's extension); limited range by the harness's convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np

from preedit.errors import InputError

Planes = Tuple[np.ndarray, np.ndarray, np.ndarray]
#: y4m `C` tags read and written here: 8-bit 4:2:0 (chroma sitings) and FFmpeg's 10-bit 4:2:0.
COLOURSPACES = ("C420", "C420jpeg", "C420paldv", "C420mpeg2", "C420p10")


@dataclass(frozen=True)
class Y4MHeader:
    """Stream parameters of a .y4m file.

    Attributes:
        width: luma width in pixels (even).
        height: luma height in pixels (even).
        fps_num: frame-rate numerator.
        fps_den: frame-rate denominator.
        params: the raw header tokens after the magic, kept so a rewrite preserves them.
    """

    width: int
    height: int
    fps_num: int
    fps_den: int
    params: Tuple[str, ...]

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self.fps_num / self.fps_den

    @property
    def bit_depth(self) -> int:
        """10 for a `C420p10` stream, else 8."""
        return 10 if any(t == "C420p10" for t in self.params) else 8

    @property
    def dtype(self) -> np.dtype:
        """Sample type of the planes: uint8, or little-endian uint16 at 10 bits."""
        return np.dtype("<u2") if self.bit_depth == 10 else np.dtype(np.uint8)

    def frame_bytes(self) -> int:
        """Bytes of one 4:2:0 frame payload (two bytes a sample at 10 bits)."""
        return self.width * self.height * 3 // 2 * self.dtype.itemsize


def parse_header(line: bytes) -> Y4MHeader:
    """Parse the first line of a y4m file (without the trailing newline)."""
    tokens = line.decode("ascii", errors="replace").split()
    if not tokens or tokens[0] != "YUV4MPEG2":
        raise InputError("not a YUV4MPEG2 stream")
    width = height = 0
    num, den = 25, 1
    for tok in tokens[1:]:
        if tok[0] == "W":
            width = int(tok[1:])
        elif tok[0] == "H":
            height = int(tok[1:])
        elif tok[0] == "F":
            n, d = tok[1:].split(":")
            num, den = int(n), int(d)
        elif tok[0] == "C" and tok not in COLOURSPACES:
            raise InputError(f"y4m colourspace {tok[1:]} is not 8- or 10-bit 4:2:0")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise InputError(f"y4m size {width}x{height} is not positive and even")
    return Y4MHeader(width, height, num, den, tuple(tokens[1:]))


def read_y4m(path: Union[str, Path]) -> Tuple[Y4MHeader, List[Planes]]:
    """Read every frame of a 4:2:0 y4m file into `(y, u, v)` planes (uint8, or uint16 at 10 bits)."""
    data = Path(path).read_bytes()
    nl = data.find(b"\n")
    if nl < 0:
        raise InputError(f"{path}: truncated y4m header")
    header = parse_header(data[:nl])
    w, h = header.width, header.height
    size = header.frame_bytes()
    frames: List[Planes] = []
    pos = nl + 1
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0 or not data[pos:end].startswith(b"FRAME"):
            raise InputError(f"{path}: bad FRAME marker at byte {pos}")
        start = end + 1
        if start + size > len(data):
            raise InputError(f"{path}: truncated frame {len(frames)}")
        buf = np.frombuffer(data, dtype=header.dtype, count=size // header.dtype.itemsize, offset=start)
        y = buf[: w * h].reshape(h, w)
        u = buf[w * h : w * h + w * h // 4].reshape(h // 2, w // 2)
        v = buf[w * h + w * h // 4 :].reshape(h // 2, w // 2)
        frames.append((y, u, v))
        pos = start + size
    return header, frames


def write_y4m(path: Union[str, Path], header: Y4MHeader, frames: Sequence[Planes]) -> Path:
    """Write `(y, u, v)` planes as a y4m file with `header`'s parameters (uint16 samples at 10 bits)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as fh:
        fh.write(("YUV4MPEG2 " + " ".join(header.params) + "\n").encode("ascii"))
        for y, u, v in frames:
            if y.shape != (header.height, header.width):
                raise InputError(f"frame size {y.shape} differs from header {header.height}x{header.width}")
            fh.write(b"FRAME\n")
            for plane in (y, u, v):
                fh.write(np.ascontiguousarray(plane, dtype=header.dtype).tobytes())
    tmp.replace(path)
    return path


def iter_batches(frames: Sequence[Planes], batch: int) -> Iterator[Sequence[Planes]]:
    """Consecutive slices of at most `batch` frames."""
    for i in range(0, len(frames), batch):
        yield frames[i : i + batch]
