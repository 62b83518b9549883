"""Stage interfaces shared by the CPU and GPU back ends of the client.

```
 Decoder ──Frame──> PreEditor ──Frame──> Encoder
```
A back end is chosen by `--device cpu|cuda|auto`; every stage has a CPU implementation.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Optional, Protocol

import numpy as np


@dataclass(frozen=True)
class StreamInfo:
    """What the decoder learned about the input video stream."""

    width: int
    height: int
    time_base: Fraction
    average_rate: Optional[Fraction]
    color_range: str = "limited"  # "limited" | "full"
    color_matrix: str = "bt709"  # "bt601" | "bt709" | ...
    pix_fmt: str = "yuv420p"
    bit_depth: int = 8
    frame_count_hint: Optional[int] = None
    codec_name: str = ""
    rotation: int = 0  # display rotation in degrees, counter-clockwise (as VideoFrame.rotation)
    signal: Any = None  # preedit.client.bitdepth.ColorSignal of the input (colour tags, HDR10 metadata)


@dataclass
class Frame:
    """One video frame in the pipeline.

    `nv12` is uint8 `[H*3/2, W]`, limited range: a NumPy array on CPU back ends, a CUDA tensor
    on GPU back ends. `index` counts frames in presentation order from 0; `pts` is in
    `time_base` units (None when the container had none).
    """

    index: int
    pts: Optional[int]
    time_base: Fraction
    nv12: Any
    duration: Optional[int] = None
    bypassed: bool = False
    t_decoded_ns: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def pts_seconds(self) -> Optional[float]:
        return None if self.pts is None else float(self.pts * self.time_base)

    def __repr__(self) -> str:
        shape = tuple(getattr(self.nv12, "shape", ()))
        return f"Frame(index={self.index}, pts={self.pts}, time_base={self.time_base}, nv12={shape})"


def as_numpy(nv12: Any) -> np.ndarray:
    """A frame buffer as a NumPy array (copies CUDA tensors to host)."""
    if isinstance(nv12, np.ndarray):
        return nv12
    if hasattr(nv12, "cpu"):
        return nv12.cpu().numpy()
    return np.asarray(nv12)


class Decoder(Protocol):
    """Yields `Frame`s in presentation order; audio demuxed on the way rides in `frame.meta["audio"]`.

    CPU: `preedit.client.decode.PyAvDecoder`; GPU: `preedit.client.decode.ClientNvdecDecoder`.
    """

    info: StreamInfo
    audio_streams: list
    sample_aspect_ratio: Optional[Fraction]

    def __iter__(self) -> Iterator[Frame]: ...

    def take_audio(self) -> list:
        """Audio packets demuxed after the last video frame."""
        ...

    def close(self) -> None: ...


class PreEditor(Protocol):
    """Sends frames to the model (the QP input, if any, is fixed when the transport is made).

    `submit(nv12, timeout_s)` copies the uint8 NV12 `[H*3/2, W]` buffer into a free slot and
    returns a `concurrent.futures.Future` resolving to the edited NV12 buffer (same shape), or
    None when no slot frees up within `timeout_s` (None waits). Both the CPU transport
    (`preedit.client.transport.TritonTransport`) and the GPU one (`CudaShmTransport`) implement
    this; the pipeline collects futures in frame order.
    """

    def submit(self, nv12: Any, timeout_s: Optional[float] = None) -> Optional[Future]: ...

    def close(self) -> None: ...


class Encoder(Protocol):
    """Encodes frames at their source timestamps; `finish()` always writes the trailer.

    CPU: `preedit.client.encode.PyAvEncoder`; GPU: `preedit.client.encode.ClientNvencEncoder`.
    `first_pts` / `last_end_pts` (source time base of `info`) give the encoded media duration.
    """

    info: StreamInfo
    first_pts: Optional[int]
    last_end_pts: Optional[int]

    def encode(self, frame: Frame) -> None: ...

    def mux_audio(self, packets: list) -> None:
        """Copy demuxed audio packets unchanged (called in demux order between frames)."""
        ...

    def finish(self) -> dict:
        """Flush and write the trailer (idempotent); returns at least `output_bits` and `frames`."""
        ...
