"""`preedit join SEG... -o OUT`: concatenate `preedit run --segment` outputs by stream copy.

```
 SEG_0 … SEG_{N-1} (video only, source timestamps) ──packets copied──┐
                                                                     ├─ interleaved by time ─> OUT
 title's audio (source recorded in SEG.segment.json, or --audio-from) ┘   (.mp4 .mkv .ts)
```
No re-encode: every video packet of every segment and every audio packet of the source is copied
unchanged. With manifests (written by `preedit run --segment`), the segments are put in index
order and checked to be the complete set 0..N-1 of one title, each with all its frames; without
them the files are joined in the order given. Timestamps must rise strictly across segments.
Exit codes: 2 usage, 3 bad input (missing/incomplete/mismatched segments).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional

import av

from preedit.client.encode import container_for
from preedit.client.segment import read_manifest
from preedit.errors import EncodeError, InputError, UsageError

log = logging.getLogger(__name__)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("segments", nargs="+", metavar="SEG", help="segment files from `preedit run --segment`")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="joined file (.mp4 .mkv .ts)")
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument("--audio-from", default=None, metavar="IN",
                       help="copy the audio streams of IN (default: the source named in the segment manifests)")
    audio.add_argument("--no-audio", action="store_true", help="video only")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = setup_args(argparse.ArgumentParser(prog="preedit join", description=__doc__.split("\n")[0],
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    result = join(args.segments, args.output, audio_from=args.audio_from, no_audio=args.no_audio)
    print(f"joined {result['segments']} segments: {result['frames']} frames, "
          f"{result['audio_packets']} audio packets from {result['audio_from'] or 'none'} -> {result['output']}",
          flush=True)
    return 0


def order_segments(paths: List[str]) -> tuple:
    """(paths in join order, title source or None); checks manifests describe one complete title."""
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"segment not found: {p}")
    manifests = [read_manifest(p) for p in paths]
    present = [m is not None for m in manifests]
    if not any(present):
        return list(paths), None
    if not all(present):
        missing = [p for p, m in zip(paths, manifests) if m is None]
        raise InputError(f"segment manifest missing for {', '.join(missing)} (a segment whose run did not "
                         f"finish has none); rerun those segments")
    sources = {m["source"] for m in manifests}
    counts = {m["count"] for m in manifests}
    gops = {m.get("gop") for m in manifests}
    if len(sources) != 1 or len(counts) != 1 or len(gops) != 1:
        raise InputError(f"segments come from different splits: sources {sorted(sources)}, counts {sorted(counts)}, "
                         f"closed-GOP grids {sorted(gops, key=str)}")
    count = counts.pop()
    by_index = {}
    for p, m in zip(paths, manifests):
        if m["index"] in by_index:
            raise InputError(f"segment {m['index']}/{count} given twice: {by_index[m['index']]} and {p}")
        if m["frames"] != m["frames_planned"]:
            raise InputError(f"{p}: segment {m['index']}/{count} holds {m['frames']} of its "
                             f"{m['frames_planned']} frames; rerun it")
        by_index[m["index"]] = p
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise InputError(f"segments {', '.join(f'{i}/{count}' for i in missing)} missing; "
                         f"a title split in {count} needs all of them")
    return [by_index[i] for i in range(count)], sources.pop()


def _seconds(packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else float("-inf")


def join(segments: List[str], output: str, audio_from: Optional[str] = None, no_audio: bool = False) -> dict:
    """Concatenate `segments` into `output` by stream copy (see module docstring)."""
    paths, source = order_segments(list(segments))
    fmt = container_for(output, "hevc")
    if fmt == "yuv4mpegpipe":
        raise UsageError("join copies encoded packets; write .mp4, .mkv or .ts")
    out_path = Path(output)
    if any(out_path.resolve() == Path(p).resolve() for p in paths):
        raise UsageError(f"output would overwrite a segment: {output}")
    if not out_path.parent.is_dir():
        raise UsageError(f"output folder does not exist: {out_path.parent}")
    audio_src = None if no_audio else (audio_from or source)
    if audio_src is not None and not Path(audio_src).is_file():
        raise InputError(f"audio source not found: {audio_src} (give --audio-from IN or --no-audio)")

    with contextlib.ExitStack() as stack:
        inputs = []
        for p in paths:
            try:
                c = stack.enter_context(av.open(p))
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"cannot open segment {p}: {exc}") from None
            if not c.streams.video:
                raise InputError(f"segment {p} has no video stream")
            inputs.append(c)
        first = inputs[0].streams.video[0]
        for p, c in zip(paths, inputs):
            v = c.streams.video[0]
            if (v.codec_context.name, v.codec_context.width, v.codec_context.height) != \
                    (first.codec_context.name, first.codec_context.width, first.codec_context.height):
                raise InputError(f"segment {p} is {v.codec_context.name} {v.codec_context.width}x"
                                 f"{v.codec_context.height}, the first is {first.codec_context.name} "
                                 f"{first.codec_context.width}x{first.codec_context.height}")
        audio_in = None
        if audio_src is not None:
            try:
                audio_in = stack.enter_context(av.open(str(audio_src)))
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"cannot open audio source {audio_src}: {exc}") from None
        try:
            out = stack.enter_context(av.open(str(output), "w", format=fmt))
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"cannot create {output}: {exc}") from None
        vout = out.add_stream_from_template(first)
        aout = {}
        for a in (audio_in.streams.audio if audio_in is not None else ()):
            try:
                aout[a.index] = out.add_stream_from_template(a)
            except Exception as exc:  # noqa: BLE001 - codec not allowed in this container
                log.warning("%s: audio stream %d (%s) cannot be copied into %s: %s",
                            audio_src, a.index, a.codec_context.name, output, exc)
        video = _video_packets(paths, inputs)
        audio = _audio_packets(audio_in, list(aout)) if aout else iter(())
        frames = audio_packets = 0
        a_next = next(audio, None)
        for packet in video:
            while a_next is not None and _seconds(a_next) <= _seconds(packet):
                audio_packets += _mux(out, a_next, aout[a_next.stream.index])
                a_next = next(audio, None)
            _mux(out, packet, vout)
            frames += 1
        while a_next is not None:
            audio_packets += _mux(out, a_next, aout[a_next.stream.index])
            a_next = next(audio, None)
    return {"segments": len(paths), "frames": frames, "audio_packets": audio_packets,
            "audio_from": str(audio_src) if aout else None, "output": str(output)}


def _mux(out, packet, stream) -> int:
    packet.stream = stream
    out.mux(packet)
    return 1


def _video_packets(paths: List[str], inputs: list) -> Iterator:
    """Video packets of all segments in order; raises if timestamps do not rise across a boundary."""
    last_pts: Optional[Fraction] = None
    last_dts: Optional[Fraction] = None
    for p, c in zip(paths, inputs):
        seg_max: Optional[Fraction] = None
        for n, packet in enumerate(c.demux(c.streams.video[0])):
            if packet.size == 0:
                continue
            if packet.pts is None:
                raise InputError(f"segment {p}: a video packet has no timestamp")
            pts = packet.pts * packet.time_base
            dts = packet.dts * packet.time_base if packet.dts is not None else None
            if n == 0 and last_pts is not None:
                if not packet.is_keyframe:
                    raise InputError(f"segment {p} does not start with a key frame")
                if pts <= last_pts:
                    raise InputError(f"segment {p} starts at {float(pts):.3f} s, not after the previous "
                                     f"segment's last frame ({float(last_pts):.3f} s): wrong order or overlap")
            if dts is not None and last_dts is not None and dts <= last_dts:
                raise InputError(f"segment {p}: decode timestamps step back at {float(dts):.3f} s "
                                 f"(previous {float(last_dts):.3f} s)")
            if dts is not None:
                last_dts = dts
            seg_max = pts if seg_max is None else max(seg_max, pts)
            yield packet
        if seg_max is not None:
            last_pts = seg_max


def _audio_packets(container, indices: List[int]) -> Iterator:
    streams = [s for s in container.streams.audio if s.index in indices]
    for packet in container.demux(*streams):
        if packet.size and packet.dts is not None:
            yield packet
