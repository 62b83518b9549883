"""Mux a raw video elementary stream (NVENC output) into mp4/mkv/ts with the source timestamps.

```
 NVENC packets (decode order, Annex-B HEVC/H.264 or low-overhead OBU AV1, each tagged with the
 index of the frame it presents) ──spool file──> pts from the source frame map,
 dts = decode_timestamps(pts) ──PyAV mux (+ audio packets copied from the source)──> out.mp4|mkv|ts
```
NVENC returns an elementary stream without timestamps (brief §1.8): the encoder is fed an input
timestamp per frame (its index) and reports it per output packet; here the index is mapped back
to the source PTS, so variable frame rate survives. `decode_timestamps` is pure and derives
monotonic DTS from the reorder depth seen in the packet order (B-frames).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import av

from preedit.codecs import FAMILIES
from preedit.errors import EncodeError

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts", ".m2ts": "mpegts"}
ES_CODECS = FAMILIES  # NVENC output families this muxer takes


@dataclass(frozen=True)
class EsPacket:
    """One encoded access unit as NVENC returns it.

    `frame_index` is the input timestamp given to `Encode()` for the frame this packet presents
    (None when the encoder did not report it); `offset`/`size` locate the bytes in the spool.
    """

    offset: int
    size: int
    frame_index: Optional[int]
    keyframe: bool = False


def decode_timestamps(pts: Sequence[int], step: Optional[int] = None) -> List[int]:
    """Monotonic DTS for packets in decode order whose presentation times are `pts`.

    With B-frames the pts arrive out of order; the reorder depth D (frames) is the largest
    `k - rank(pts_k)`. Then `dts_k = sorted(pts)[k - D]`, extrapolated backwards by `step` for
    the first D packets, which gives `dts_k <= pts_k` and strictly increasing DTS whenever the
    pts are distinct (what FFmpeg's x265/NVENC wrappers produce for CFR streams).

    Args:
        pts: presentation timestamps, in the order packets leave the encoder.
        step: tick spacing for the first D packets; default: the smallest pts spacing (or 1).

    Returns:
        One DTS per packet, same order.
    """
    n = len(pts)
    if n == 0:
        return []
    if len(set(pts)) != n:
        raise EncodeError("encoder returned two packets for the same presentation time")
    ordered = sorted(pts)
    rank = {p: i for i, p in enumerate(ordered)}
    depth = max(0, max(k - rank[p] for k, p in enumerate(pts)))
    if step is None:
        gaps = [b - a for a, b in zip(ordered, ordered[1:]) if b > a]
        step = min(gaps) if gaps else 1
    return [ordered[k - depth] if k >= depth else ordered[0] - (depth - k) * step for k in range(n)]


class EsSpool:
    """Append-only spool of encoded packets in a temporary file (bounded memory for long runs)."""

    def __init__(self, directory: Optional[Path] = None) -> None:
        fd, name = tempfile.mkstemp(prefix="preedit_es_", suffix=".bin", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b")
        self.packets: List[EsPacket] = []
        self.bytes = 0

    def add(self, data: bytes, frame_index: Optional[int], keyframe: bool = False) -> None:
        if not data:
            return
        self._file.write(data)
        self.packets.append(EsPacket(self.bytes, len(data), frame_index, keyframe))
        self.bytes += len(data)

    def read(self, packet: EsPacket) -> bytes:
        self._file.flush()
        self._file.seek(packet.offset)
        data = self._file.read(packet.size)
        self._file.seek(0, os.SEEK_END)
        return data

    def write_raw(self, path: Path) -> Path:
        """The whole elementary stream as one file (`.hevc` / `.obu`), e.g. for ffmpeg -c copy."""
        self._file.flush()
        Path(path).write_bytes(self.path.read_bytes())
        return Path(path)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


def container_for(path: Path) -> str:
    """FFmpeg muxer name for an output path, by suffix (mp4/mov/mkv/ts)."""
    fmt = CONTAINERS.get(Path(path).suffix.lower())
    if fmt is None:
        raise EncodeError(f"cannot mux into {Path(path).suffix or 'a file without suffix'}; "
                          f"valid: {', '.join(sorted(CONTAINERS))}")
    return fmt


def packet_pts(spool: EsSpool, frame_pts: Sequence[Optional[int]]) -> List[int]:
    """Source PTS of every spooled packet, from the frame index NVENC reported.

    Packets without an index are assumed to be in presentation order (no B-frames).
    """
    out: List[int] = []
    for k, pkt in enumerate(spool.packets):
        idx = pkt.frame_index if pkt.frame_index is not None else k
        if not 0 <= idx < len(frame_pts):
            raise EncodeError(f"encoder packet refers to frame {idx}, but {len(frame_pts)} frames were sent")
        pts = frame_pts[idx]
        out.append(idx if pts is None else int(pts))
    return out


def mux_elementary(spool: EsSpool, codec: str, out_path: Path, *, width: int, height: int,
                   time_base: Fraction, frame_pts: Sequence[Optional[int]],
                   frame_rate: Optional[Fraction] = None, audio_from: Optional[Path] = None) -> dict:
    """Write the spooled packets into a container with source timestamps (+ copied audio).

    Args:
        spool: packets in decode order.
        codec: `hevc`, `h264` or `av1` (what NVENC produced).
        out_path: `.mp4`, `.mov`, `.mkv` or `.ts`.
        time_base: time base of `frame_pts` (the source stream's).
        frame_pts: source PTS per input frame index (None entries: the index is used).
        audio_from: source file whose audio streams are copied packet for packet.

    Returns:
        Stats: frames, bytes, container, audio_streams, the first/last pts.
    """
    if codec not in ES_CODECS:
        raise EncodeError(f"cannot mux codec {codec!r}; valid: {', '.join(ES_CODECS)}")
    fmt = container_for(out_path)
    if codec == "av1" and fmt == "mpegts":
        raise EncodeError("AV1 in MPEG-TS is not supported by this muxer (the stream would be dropped); use .mkv or .mp4")
    pts = packet_pts(spool, frame_pts)
    dts = decode_timestamps(pts)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    src = av.open(str(audio_from)) if audio_from else None
    try:
        with av.open(str(out_path), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=frame_rate or 30)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = time_base
            audio_map = {}
            if src is not None:
                for a in src.streams.audio:
                    try:
                        audio_map[a.index] = out.add_stream_from_template(a)
                    except Exception as exc:  # noqa: BLE001 - e.g. an audio codec the container refuses
                        log.warning("audio stream %d not copied into %s: %s", a.index, fmt, exc)
            for pkt, p, d in zip(spool.packets, pts, dts):
                packet = av.Packet(spool.read(pkt))
                packet.stream = stream
                packet.time_base = time_base
                packet.pts, packet.dts = p, d
                packet.is_keyframe = pkt.keyframe or pkt is spool.packets[0]
                out.mux(packet)
            if audio_map:
                for packet in src.demux(*[src.streams[i] for i in audio_map]):
                    if packet.dts is None:
                        continue
                    packet.stream = audio_map[packet.stream.index]
                    out.mux(packet)
    except av.FFmpegError as exc:
        raise EncodeError(f"muxing {codec} into {out_path.name} failed: {exc}") from None
    finally:
        if src is not None:
            src.close()
    return {"frames": len(spool.packets), "bytes": spool.bytes, "container": fmt,
            "audio_streams": len(audio_map), "first_pts": min(pts, default=None), "last_pts": max(pts, default=None)}


class LiveEsMuxer:
    """Mux NVENC packets into the container *as they arrive* (no spool, no mux at the end).

    ```
     add(data, frame_index, key) ─ pts = frame_pts[frame_index]
                                 ─ dts = frame_pts[k - D] (k-th packet, D = reorder depth bound)
                                 ─ out.mux(packet)  → .ts/.mkv grow live; a killed run keeps them
     close() ─ copy the source's audio ─ trailer
    ```
    DTS online: a packet never presents a frame more than `reorder_depth` (the B-frame count)
    positions before its decode position, so `frame_pts[k - D]` is ≤ its pts and strictly rises;
    the first D packets are extrapolated backwards by one frame step (same rule as
    `decode_timestamps`, which needs the whole packet list).

    Args:
        codec: `hevc`, `h264` or `av1`; out_path: `.mp4`, `.mov`, `.mkv` or `.ts`.
        time_base: of the source PTS; frame_rate: nominal rate (stream header, DTS step).
        reorder_depth: upper bound on B-frame reordering (NVENC: the number of B-frames).
        audio_from: source file whose audio streams are copied at `close()`.
    """

    def __init__(self, codec: str, out_path: Path, *, width: int, height: int, time_base: Fraction,
                 frame_rate: Optional[Fraction] = None, reorder_depth: int = 0,
                 audio_from: Optional[Path] = None) -> None:
        if codec not in ES_CODECS:
            raise EncodeError(f"cannot mux codec {codec!r}; valid: {', '.join(ES_CODECS)}")
        fmt = container_for(out_path)
        if codec == "av1" and fmt == "mpegts":
            raise EncodeError("AV1 in MPEG-TS is not supported by this muxer (the stream would be dropped); use .mkv or .mp4")
        self.codec, self.fmt, self.out_path = codec, fmt, Path(out_path)
        self.time_base, self.depth = Fraction(time_base), max(0, int(reorder_depth))
        rate = Fraction(frame_rate or 30)
        self.step = max(1, round(1 / (rate * self.time_base)))
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._src = av.open(str(audio_from)) if audio_from else None
        # flush_packets: every muxed packet reaches the file (live output, nothing held in AVIO)
        self._out = av.open(str(self.out_path), "w", format=fmt, container_options={"flush_packets": "1"})
        self._stream = self._out.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = self.time_base
        self._audio_map = {}
        if self._src is not None:
            for a in self._src.streams.audio:
                try:
                    self._audio_map[a.index] = self._out.add_stream_from_template(a)
                except Exception as exc:  # noqa: BLE001 - e.g. an audio codec the container refuses
                    log.warning("audio stream %d not copied into %s: %s", a.index, fmt, exc)
        self._audio_iter = (iter(self._src.demux(*[self._src.streams[i] for i in self._audio_map]))
                            if self._audio_map else None)
        self._audio_next = None
        self.frames = 0
        self.bytes = 0
        self.pts: List[int] = []
        self._last_dts: Optional[int] = None
        self._closed = False

    def add(self, data: bytes, frame_index: int, keyframe: bool, frame_pts: Sequence[Optional[int]]) -> None:
        """Mux one packet now. `frame_pts`: source PTS per frame index sent so far."""
        if not data:
            return
        if not 0 <= frame_index < len(frame_pts):
            raise EncodeError(f"encoder packet refers to frame {frame_index}, but {len(frame_pts)} frames were sent")

        def at(i: int) -> int:
            p = frame_pts[i]
            return i if p is None else int(p)

        k = self.frames
        pts = at(frame_index)
        dts = at(k - self.depth) if k >= self.depth else at(0) - (self.depth - k) * self.step
        dts = min(dts, pts)
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
        if dts > pts:
            raise EncodeError(f"encoder reordered frames deeper than {self.depth} B-frames (packet {k} presents frame {frame_index})")
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = self.time_base
        packet.pts, packet.dts = pts, dts
        packet.is_keyframe = bool(keyframe) or k == 0
        try:
            self._out.mux(packet)
        except av.FFmpegError as exc:
            raise EncodeError(f"muxing {self.codec} into {self.out_path.name} failed: {exc}") from None
        self._last_dts = dts
        self.frames += 1
        self.bytes += len(data)
        self.pts.append(pts)
        self._mux_audio(until=float(dts * self.time_base))

    def _mux_audio(self, until: Optional[float]) -> None:
        """Copy source audio up to `until` seconds (all when None), so the muxer's interleaving
        never holds video back waiting for audio."""
        if self._audio_iter is None:
            return
        while True:
            packet = self._audio_next
            if packet is None:
                packet = next(self._audio_iter, None)
                if packet is None:
                    self._audio_iter = None
                    return
            if packet.dts is None:
                self._audio_next = None
                continue
            if until is not None and float(packet.dts * packet.time_base) > until:
                self._audio_next = packet
                return
            self._audio_next = None
            packet.stream = self._audio_map[packet.stream.index]
            self._out.mux(packet)

    def close(self) -> dict:
        """Copy the audio, write the trailer and return stats (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self._mux_audio(until=None)
            finally:
                try:
                    self._out.close()
                finally:
                    if self._src is not None:
                        self._src.close()
        return {"frames": self.frames, "bytes": self.bytes, "container": self.fmt,
                "audio_streams": len(self._audio_map), "first_pts": min(self.pts, default=None),
                "last_pts": max(self.pts, default=None)}
