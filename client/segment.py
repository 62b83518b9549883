"""`preedit run IN -o SEG --segment I/N`: pre-edit and encode segment I of N of a title.

```
 source packets (demux only, no decode) ──> presentation timestamps + key frames
   │ plan_segments(): N-1 boundaries on the key frames nearest equal durations
   │                  (intra-only sources: exact equal frame ranges;
   │                   --keyint K --closed-gop: the output's GOP grid, frames 0, K, 2K, ...)
   v
 segment I = frames with pts in [start_pts, end_pts)         (first segment: from the start,
   seek to the key frame at/before start_pts, decode,          last segment: to the end)
   drop frames before start_pts, stop at end_pts
   v
 pipeline (pre-edit, encode at source pts) ──> SEG (starts with an IDR/key frame) + SEG.segment.json
```
With `--keyint K --closed-gop` every segment starts on a multiple of K frames of the title, so
the IDR each segment opens with is one a single closed-GOP run of the whole title also makes: the
joined file has the single run's key frames (and, as measured in BENCHMARKS §6, its rate and
quality). Without it the cuts are the source's key frames and each cut adds an IDR the encoder's
own GOP would not have there.
Every frame belongs to exactly one segment (membership is by presentation timestamp), so the
segments of a title hold exactly its frames; `preedit join` concatenates them by stream copy.
Segments are video only: the title's audio is copied whole from the source by `preedit join`
(the source path is recorded in each segment's manifest), so no audio packet is split or doubled
at a boundary.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import av

from preedit.client.decode import PyAvDecoder
from preedit.errors import InputError, StreamError, UsageError

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".segment.json"
MANIFEST_VERSION = 1


def setup_args(parser: argparse.ArgumentParser) -> None:
    """The `preedit run` options for scale-out (one block)."""
    grp = parser.add_argument_group("scale out")
    grp.add_argument("--segment", type=parse_segment_spec, default=None, metavar="I/N",
                     help="encode only segment I (0-based) of N of a file input, GOP-aligned; "
                          "join the N outputs with `preedit join`")
    grp.add_argument("--workers", type=int, default=None, metavar="K",
                     help="split a file input into K segments, run K `preedit run --segment` processes "
                          "against one server, then join them into OUT")
    grp.add_argument("--transport", default="shm", choices=["shm", "grpc"],
                     help="shm: frames through system shared memory (same host, default); grpc: frames "
                          "inside the gRPC requests (a remote Triton, e.g. a Kubernetes Service)")


def parse_segment_spec(text: str) -> Tuple[int, int]:
    """`"2/5"` → (2, 5); I is 0-based (a Kubernetes Indexed Job's JOB_COMPLETION_INDEX)."""
    try:
        i_text, n_text = str(text).split("/")
        index, count = int(i_text), int(n_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--segment wants I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--segment I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return index, count


@dataclass(frozen=True)
class SourceIndex:
    """What demuxing (no decoding) tells about the video stream of a file."""

    pts: Tuple[int, ...]  # every frame's pts, presentation order
    key_pts: Tuple[int, ...]  # pts of key-frame packets, ascending
    time_base: Fraction
    frame_step: int  # duration of one frame in time_base units (last frame's end)

    @property
    def intra_only(self) -> bool:
        return len(self.key_pts) == len(self.pts)


@dataclass(frozen=True)
class Segment:
    """Segment `index` of `count`: frames with `start_pts <= pts < end_pts` (None: open end)."""

    index: int
    count: int
    start_pts: Optional[int]
    end_pts: Optional[int]
    seek_pts: Optional[int]  # key frame decoding starts from (None: the start of the file)
    frames: int  # frames the segment holds
    time_base: Fraction

    def contains(self, pts: int) -> bool:
        return (self.start_pts is None or pts >= self.start_pts) and (self.end_pts is None or pts < self.end_pts)


def index_source(source: str) -> SourceIndex:
    """Demux the video packets of `source` (no decoding) into a `SourceIndex`."""
    if not Path(source).is_file():
        raise InputError(f"--segment needs a file input; not found: {source}")
    try:
        container = av.open(str(source))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot open {source} as video: {exc}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{source} has no video stream")
        stream = container.streams.video[0]
        pts: List[int] = []
        keys: List[int] = []
        durations: List[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    raise InputError(f"{source}: video packets without timestamps cannot be segmented")
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append(int(packet.pts))
                if packet.duration:
                    durations.append(int(packet.duration))
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot read {source}: {exc}") from None
        time_base = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
    if not pts:
        raise InputError(f"{source}: no video frames")
    pts.sort()
    if durations:
        step = max(set(durations), key=durations.count)
    elif rate:
        step = max(1, int(round(1 / (Fraction(rate) * time_base))))
    else:
        step = pts[-1] - pts[-2] if len(pts) > 1 else 1
    return SourceIndex(tuple(pts), tuple(sorted(set(keys))), time_base, step)


def gop_grid(encoder) -> Optional[int]:
    """The output GOP length segments are cut on: `--keyint` when `--closed-gop`, else None."""
    return int(encoder.keyint) if getattr(encoder, "closed_gop", False) and encoder.keyint else None


def plan_segments(idx: SourceIndex, count: int, source: str = "input", gop: Optional[int] = None) -> List[Segment]:
    """N segments of equal duration as near as the key frames allow (pure).

    Boundaries are key frames nearest `start + j * duration / N`; an intra-only source is cut at
    exact equal frame ranges. With `gop` (the output's fixed closed GOP, in frames) the candidate
    boundaries are frames 0, gop, 2*gop, ... of the title instead of the source's key frames (a
    segment then decodes from the source key frame before its start). Raises `UsageError` when
    the source has fewer than N GOPs.
    """
    if count < 1:
        raise UsageError(f"segment count must be >= 1, got {count}")
    if gop is not None and gop < 1:
        raise UsageError(f"GOP length must be >= 1 frame, got {gop}")
    pts = idx.pts
    if gop is not None:
        candidates = list(range(gop, len(pts), gop))  # frame numbers of the output's IDRs after the first
        if len(candidates) < count - 1:
            raise UsageError(f"{source} has {len(pts)} frames = {len(candidates) + 1} GOPs of --keyint {gop}; "
                             f"it splits into at most {len(candidates) + 1} segments, not {count}")
        bounds, lo = [], 0
        for j in range(1, count):
            target = len(pts) * j / count
            hi = len(candidates) - (count - 1 - j)
            best = min(range(lo, hi), key=lambda c: (abs(candidates[c] - target), c))
            bounds.append(pts[candidates[best]])
            lo = best + 1
    elif idx.intra_only:
        bounds = [pts[(j * len(pts)) // count] for j in range(1, count)]
        if len(set(bounds)) != count - 1 or (bounds and bounds[0] == pts[0]):
            raise UsageError(f"{source} has {len(pts)} frames; it cannot be split into {count} segments")
    else:
        candidates = [k for k in idx.key_pts if k > pts[0]]
        if len(candidates) < count - 1:
            raise UsageError(f"{source} has {len(candidates) + 1} GOPs (key frames at the start of each); "
                             f"it splits into at most {len(candidates) + 1} segments, not {count}")
        first, end = pts[0], pts[-1] + idx.frame_step
        bounds, lo = [], 0
        for j in range(1, count):
            target = first + (end - first) * j / count
            hi = len(candidates) - (count - 1 - j)  # leave one candidate for each later boundary
            best = min(range(lo, hi), key=lambda c: (abs(candidates[c] - target), c))
            bounds.append(candidates[best])
            lo = best + 1
    edges: List[Optional[int]] = [None, *bounds, None]
    segments = []
    for i in range(count):
        start, end_pts = edges[i], edges[i + 1]
        lo_i = 0 if start is None else bisect.bisect_left(pts, start)
        hi_i = len(pts) if end_pts is None else bisect.bisect_left(pts, end_pts)
        if start is None:
            seek = None
        else:
            k = bisect.bisect_right(idx.key_pts, start) - 1
            seek = idx.key_pts[k] if k >= 0 else None
        segments.append(Segment(i, count, start, end_pts, seek, hi_i - lo_i, idx.time_base))
    return segments


def plan(source: str, index: int, count: int, gop: Optional[int] = None) -> Segment:
    """Segment `index` of `count` of the file `source` (`gop`: see `plan_segments`)."""
    return plan_segments(index_source(source), count, source, gop)[index]


# -- the decoder ----------------------------------------------------------------------------------


def make_decoder(source: str, spec: Tuple[int, int], gop: Optional[int] = None, **kw):
    """A `SegmentDecoder` for segment `spec` = (I, N) of `source` (CPU/PyAV decode); `gop`: cut on
    the output's closed-GOP grid (`plan_segments`)."""
    segment = plan(source, *spec, gop=gop)
    log.info("%s: segment %d/%d, pts [%s, %s) x %s s, %d frames, decoding from key frame %s%s",
             source, segment.index, segment.count, segment.start_pts, segment.end_pts, segment.time_base,
             segment.frames, segment.seek_pts, f", cut on the closed-GOP grid of {gop} frames" if gop else
             " (cut on source key frames: each cut adds an IDR; --keyint K --closed-gop cuts on the output's GOPs)")
    return SegmentDecoder(source, segment, gop=gop, **kw)


class SegmentDecoder(PyAvDecoder):
    """`PyAvDecoder` over one segment: seek to its key frame, keep frames inside it only.

    Audio is not carried (the join copies the title's audio whole).
    """

    def __init__(self, source: str, segment: Segment, max_frames: Optional[int] = None,
                 gop: Optional[int] = None, **kw) -> None:
        self.segment = segment
        self.gop = gop
        self._segment_max = max_frames
        super().__init__(source, **kw)
        self.audio_streams = []
        self.info = dataclasses.replace(self.info, frame_count_hint=segment.frames)

    def _setup(self, raw) -> None:
        seg = self.segment
        if seg.seek_pts is not None and seg.seek_pts > 0:
            stream = self.container.streams.video[0]
            try:
                self.container.seek(seg.seek_pts, stream=stream, backward=True, any_frame=False)
            except self._av.error.FFmpegError as exc:  # e.g. raw input: decode from the start
                log.info("%s: cannot seek (%s); decoding from the start", self.source, exc)
        super()._setup(raw)
        if seg.start_pts is not None and self._first.pts is not None and self._first.pts > seg.start_pts:
            raise StreamError(f"{self.source}: seeking for segment {seg.index}/{seg.count} landed after its "
                              f"start (pts {self._first.pts} > {seg.start_pts}); the file's index is broken")

    def _check_complete(self, count: int, last_pts: Optional[int]) -> None:
        """Completeness is checked against the segment's planned frames in `__iter__`."""

    def __iter__(self) -> Iterator:
        seg = self.segment
        kept = 0
        for frame in super().__iter__():
            if frame.pts is not None and seg.end_pts is not None and frame.pts >= seg.end_pts:
                break
            if frame.pts is not None and seg.start_pts is not None and frame.pts < seg.start_pts:
                continue  # decoded from the key frame before the segment: not ours
            frame.index = kept
            kept += 1
            yield frame
            if self._segment_max is not None and kept >= self._segment_max:
                return
        if kept != seg.frames:
            raise StreamError(f"segment {seg.index}/{seg.count} of {self.source}: decoded {kept} of "
                              f"{seg.frames} frames (truncated or corrupt input)")



# -- the manifest ---------------------------------------------------------------------------------


def manifest_path(segment_file: str) -> Path:
    return Path(str(segment_file) + MANIFEST_SUFFIX)


def write_manifest(source: str, output: str, segment: Segment, frames: int, summary: dict,
                   gop: Optional[int] = None) -> Path:
    """`SEG.segment.json`: which part of which title SEG holds (read by `preedit join`)."""
    path = manifest_path(output)
    data = {
        "version": MANIFEST_VERSION, "source": str(Path(source).resolve()), "index": segment.index,
        "count": segment.count, "start_pts": segment.start_pts, "end_pts": segment.end_pts,
        "gop": gop,  # closed-GOP grid the cuts are on (None: the source's key frames)
        "time_base": str(segment.time_base), "frames_planned": segment.frames, "frames": frames,
        "wall_s": summary.get("wall_s"), "codec": summary.get("codec"), "model": summary.get("model"),
    }
    path.write_text(json.dumps(data, indent=2))
    return path


def read_manifest(segment_file: str) -> Optional[dict]:
    path = manifest_path(segment_file)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable segment manifest {path}: {exc}") from None
    if data.get("version") != MANIFEST_VERSION:
        raise InputError(f"{path}: unknown manifest version {data.get('version')!r}")
    return data


# -- hooks used by `preedit run` ------------------------------------------------------------------


def check_run_args(args, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Refuse --segment where it makes no sense (one line, exit 2)."""
    if args.segment is None:
        return
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError("--segment takes one input file and one output")
    if args.realtime or args.latency_budget_ms is not None:
        raise UsageError("--segment is for file (catalogue) work; drop --realtime / --latency-budget-ms")
    if "://" in outputs[0] or outputs[0].lower().endswith(".m3u8"):
        raise UsageError("--segment writes a file for `preedit join`, not a live output")
    # Pods of one Job write into one folder; the first creates it (races are harmless).
    Path(outputs[0]).resolve().parent.mkdir(parents=True, exist_ok=True)
    if args.device != "cpu":
        log.info("--segment decodes with PyAV on the CPU (seeking); other stages follow --device")


def make_transport(args, backends, *a, **kw):
    """The pre-edit transport `--transport` names (grpc: `preedit.client.transport.GrpcTransport`)."""
    if getattr(args, "transport", "shm") == "grpc":
        from preedit.client.transport import GrpcTransport  # lazy: pulls tritonclient

        return GrpcTransport(*a, **kw)
    return backends.make_transport(*a, **kw)


def prepare_encoder(encoder) -> None:
    """Segments start mid-title: an MP4 records that start in an edit list in the movie timescale
    (1/1000 s by default), which would round the source timestamps; use the stream's timescale."""
    container = getattr(encoder, "container", None)
    tb = getattr(getattr(encoder, "info", None), "time_base", None)
    if container is not None and tb and getattr(container.format, "name", "").startswith("mp4"):
        container.options.setdefault("movie_timescale", str(Fraction(tb).denominator))


def finish_run(args, stream) -> None:
    """After a successful segment run: write its manifest."""
    segment = getattr(stream.decoder, "segment", None)
    if args.segment is None or segment is None:
        return
    frames = stream.pipeline.stats.frames_encoded
    path = write_manifest(stream.src, stream.dst, segment, frames, stream.summary, getattr(stream.decoder, "gop", None))
    log.info("segment manifest %s", path)
