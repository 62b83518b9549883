"""`preedit ladder`: an HLS or DASH bitrate ladder from one decode (issue 19).

```
 IN ──decode once──┬─ scale (FFmpeg swscale, lanczos) ─ pre-edit (one Triton) ─ encode ─ hls muxer ─ OUTDIR/<H>p/
                   ├─ ...one branch per rendition (closed GOP of segment-s × fps frames, scene-cut off,
                   │   target bitrate with VBV: maxrate = rate, bufsize = 1 s of rate)
                   └─ audio ─ AAC ─ hls muxer ─ OUTDIR/audio/
 --format hls   OUTDIR/master.m3u8: one EXT-X-STREAM-INF per rendition (BANDWIDTH = measured peak segment
                rate, AVERAGE-BANDWIDTH, RESOLUTION, CODECS, FRAME-RATE), audio as an EXT-X-MEDIA rendition.
 --format dash  (or both) OUTDIR/manifest.mpd (static, isoff-live profile) over the same fMP4 init + segments: one
                video AdaptationSet with a Representation per rendition (bandwidth = measured peak,
                SegmentTemplate + SegmentTimeline from each segment's tfdt), audio its own AdaptationSet.
```
One segmenting path: FFmpeg's hls muxer (fMP4) cuts every rendition; the manifest is written from
what it cut.

Pre-editing goes in batches of `--batch` source frames (`_BatchEditor`): each size is scaled once;
rungs of one size share a request (a row per rung and frame, each with its rung's QP hint), and the
requests of all sizes are in flight together (`engines.run_many`). Each rung's hint is a
`QpFollower`: the bits-per-pixel estimate of its target at first, then, at every GOP (= segment)
start, the CRF-equivalent of the mean QP its encoder reported for the packets since the last one.

    preedit ladder in.mp4 -o out/ --rendition 720:3000 --rendition 360:800 --codec h264 --bypass
    preedit ladder in.mp4 -o out/ --format both          # master.m3u8 + manifest.mpd, one set of segments
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

from preedit import codecs
from preedit.client import bitdepth
from preedit.client.encode import EncoderSettings
from preedit.client.encode._pyav import QpFollower, encoder_options, nv12_to_frame
from preedit.client.interfaces import StreamInfo
from preedit.client.progress import progress_bar
from preedit.client.run import HelpFormatter
from preedit.engines import TritonEngine, run_many
from preedit.errors import InputError, UsageError
from preedit.paths import model_repository
from preedit.serve import ServerConfig, TritonServer

log = logging.getLogger(__name__)

# VBV of every rendition, × its target: x265's ABR overshot a 10 s clip by 14-17 % with maxrate 1.1× /
# bufsize 2× (sintel-snowfight, all rungs); a 1 s buffer capped at the target keeps it within +3..7 %.
VBV_MAXRATE, VBV_BUFSIZE = 1.0, 1.0

DEFAULT_LADDER: Tuple[Tuple[int, int], ...] = ((1080, 4500), (720, 2500), (480, 1200), (360, 700))


def parse_rendition(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", text)
    if not m or int(m.group(1)) < 16 or int(m.group(1)) % 2 or int(m.group(2)) <= 0:
        raise UsageError(f"--rendition wants HEIGHT:KBPS with an even height >= 16, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def default_ladder(source_height: int) -> List[Tuple[int, int]]:
    """The 1080/720/480/360 ladder capped at the source height (at least the lowest rung)."""
    rungs = [r for r in DEFAULT_LADDER if r[0] <= source_height]
    return rungs or [(source_height - source_height % 2, DEFAULT_LADDER[-1][1])]


def codecs_string(family: str, extradata: Optional[bytes], signal: Optional[bitdepth.ColorSignal] = None) -> str:
    """RFC 6381 CODECS value from the encoder's global header (avcC / hvcC / av1C).

    AV1 (av1-isobmff §5): `av01.P.LLT.DD`, plus the colour fields `.M.CCC.cp.tc.mc.F` when `signal`
    is not BT.709 SDR (the default those fields stand for), e.g. HDR10 `av01.0.04M.10.0.110.09.16.09.0`.
    """
    x = extradata or b""
    if family == "h264" and len(x) >= 4 and x[0] == 1:
        return f"avc1.{x[1]:02X}{x[2]:02X}{x[3]:02X}"
    if family == "hevc" and len(x) >= 13 and x[0] == 1:
        space, tier, profile = x[1] >> 6, (x[1] >> 5) & 1, x[1] & 31
        compat = int.from_bytes(x[2:6], "big")
        compat = int(f"{compat:032b}"[::-1], 2)
        constraints = x[6:12].rstrip(b"\0")  # ISO/IEC 14496-15 E.3: hex bytes, trailing zero bytes left out
        return (f"hvc1.{'ABC'[space - 1] if space else ''}{profile}.{compat:X}.{'LH'[tier]}{x[12]}"
                + "".join(f".{b:X}" for b in constraints))
    if family == "av1" and len(x) >= 4 and x[0] == 0x81:
        profile, level, tier = x[1] >> 5, x[1] & 31, x[2] >> 7
        depth = 12 if x[2] & 0x20 else 10 if x[2] & 0x40 else 8
        out = f"av01.{profile}.{level:02d}{'MH'[tier]}.{depth:02d}"
        if signal is not None and (signal.primaries, signal.transfer, signal.matrix, signal.color_range) != (1, 1, 1, 1):
            mono, sx, sy, pos = (x[2] >> 4) & 1, (x[2] >> 3) & 1, (x[2] >> 2) & 1, x[2] & 3
            out += (f".{mono}.{sx}{sy}{pos if sx and sy else 0}.{signal.primaries:02d}.{signal.transfer:02d}"
                    f".{signal.matrix:02d}.{1 if signal.color_range == 2 else 0}")
        return out
    raise InputError(f"cannot read the {family} codec configuration for CODECS")


@dataclass
class Rendition:
    height: int
    kbps: int
    width: int = 0
    out: Optional[object] = None
    stream: Optional[object] = None
    frames: int = 0
    segments: List[Tuple[float, int]] = field(default_factory=list)  # (EXTINF seconds, bytes)
    signal: Optional[bitdepth.ColorSignal] = None  # the source's colour tags / HDR10 metadata it carries
    name: str = ""  # its folder and id: `<HEIGHT>p`, or `<HEIGHT>p_<KBPS>k` when two rungs share a height
    follower: Optional[QpFollower] = None  # the model's QP hint, following the QP the encoder uses

    @property
    def size(self) -> Tuple[int, int]:
        return self.width, self.height


def rendition_names(rungs: Sequence[Tuple[int, int]]) -> List[str]:
    """Folder names: `<HEIGHT>p`, with `_<KBPS>k` added where several rungs share a height."""
    heights = [h for h, _ in rungs]
    names = [f"{h}p_{k}k" if heights.count(h) > 1 else f"{h}p" for h, k in rungs]
    if len(set(names)) != len(names):
        raise UsageError(f"--rendition given twice: {', '.join(n for n in names if names.count(n) > 1)}")
    return names


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = HelpFormatter
    parser.add_argument("input", metavar="IN", help="input file (one decode feeds every rendition)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                        help="folder for master.m3u8 / manifest.mpd, <HEIGHT>p/ and audio/")
    parser.add_argument("--rendition", action="append", type=parse_rendition, default=None, metavar="HEIGHT:KBPS",
                        help="one rung (repeat); default 1080:4500 720:2500 480:1200 360:700 capped at the source")
    parser.add_argument("--format", choices=["hls", "dash", "both"], default="hls",
                        help="packaging: HLS master.m3u8, DASH manifest.mpd, or both over the same fMP4 segments")
    parser.add_argument("--segment-s", type=float, default=2.0, help="segment length, seconds")
    parser.add_argument("--codec", choices=list(codecs.ENCODER_OF), default="hevc", help="video codec")
    parser.add_argument("--preset", default=None, help="encoder preset (default: the codec's)")
    parser.add_argument("--bypass", action="store_true", help="same ladder without pre-editing (A/B)")
    parser.add_argument("--bit-depth", type=int, choices=[8, 10], default=None,
                        help="renditions' bit depth (default: the source's; 10-bit kept for hevc/av1)")
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: start one)")
    parser.add_argument("--model", default="preedit", help="served model name")
    parser.add_argument("--batch", type=int, default=4,
                        help="source frames per request: every rendition's frames of a batch go to the server at once")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit ladder")).parse_args(argv)
    if args.segment_s <= 0:
        raise UsageError(f"--segment-s must be positive, got {args.segment_s}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1 frame, got {args.batch}")
    outdir = Path(args.output)
    try:
        src = av.open(args.input)
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"cannot open {args.input}: {exc}") from None
    if not src.streams.video:
        raise InputError(f"{args.input} has no video stream")
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    rate = vin.average_rate or Fraction(25)
    gop = max(1, int(round(args.segment_s * float(rate))))
    rungs = args.rendition or default_ladder(vin.codec_context.height)
    names = rendition_names(rungs)  # before a server starts: a rung given twice is a usage error
    streams = [vin] + ([ain] if ain is not None else [])
    # Every rendition: 10-bit for a 10-bit source (Main10 / AV1 10-bit; --bit-depth 8 for 8-bit), with the
    # source's colour tags and HDR10 metadata, read from its first frame (the packets read are replayed).
    first, packets = bitdepth.peek_first_frame(src.demux(*streams), vin)
    fmt = bitdepth.output_format(args.codec, 10 if first is not None and bitdepth.keeps_10_bits(first) else 8,
                                 bitdepth.signal_of(first) if first is not None else None, args.bit_depth)
    engine, server = None, None
    if not args.bypass:
        url = args.url
        if url is None:
            server = TritonServer(ServerConfig(model_repository=model_repository(), http_port=0, grpc_port=0, metrics_port=0,
                                               models=(args.model,))).start()
            server.wait_model_ready(args.model)
            url = server.grpc_url
        engine = TritonEngine(url, model_name=args.model)
    outdir.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(vin.frames or None, Path(args.input).name)  # source frames (all renditions), TTY only
    sw, sh = vin.codec_context.width, vin.codec_context.height
    rends = [Rendition(h, k, width=_even(sw * h / sh), name=n) for (h, k), n in zip(rungs, names)]

    def hls_out(sub: str):
        d = outdir / sub
        d.mkdir(exist_ok=True)
        return av.open(str(d / "index.m3u8"), "w", format="hls", options={
            "hls_time": f"{args.segment_s:g}", "hls_playlist_type": "vod", "hls_segment_type": "fmp4",
            "hls_fmp4_init_filename": "init.mp4", "hls_segment_filename": str(d / "seg_%05d.m4s"),
            "hls_flags": "independent_segments"})

    aout = astream = None
    finished = False
    try:
        for r in rends:
            r.settings = EncoderSettings(codec=args.codec, bitrate_kbps=r.kbps, preset=args.preset, keyint=gop,
                                         maxrate_kbps=VBV_MAXRATE * r.kbps, bufsize_kbps=VBV_BUFSIZE * r.kbps,
                                         closed_gop=True)
            lib, opts, bit_rate = encoder_options(r.settings)
            r.out = hls_out(r.name)
            r.stream = r.out.add_stream(lib, rate=rate, options=fmt.encoder_options(opts))
            r.stream.width, r.stream.height, r.stream.pix_fmt = r.width, r.height, fmt.pix_fmt
            fmt.tag(r.stream.codec_context)
            r.signal = fmt.signal  # CODECS (AV1 colour fields) and VIDEO-RANGE in the master playlist
            if args.codec == "hevc":  # the `hvc1` sample entry (parameter sets in hvcC) CODECS names; HLS wants it
                r.stream.codec_context.codec_tag = "hvc1"
            r.stream.codec_context.bit_rate = bit_rate
            r.stream.codec_context.time_base = vin.time_base
            r.follower = QpFollower(r.settings, StreamInfo(r.width, r.height, vin.time_base, rate))
        if ain is not None:
            aout = hls_out("audio")
            astream = aout.add_stream("aac", rate=ain.codec_context.sample_rate)
            astream.bit_rate = 128_000
        sync = _AvSync(rends[0], aout, astream)
        editor = _BatchEditor(rends, engine, fmt, sync, batch=args.batch)
        for packet in packets:
            for frame in packet.decode():
                if packet.stream is vin:
                    if editor.taken % gop == 0:  # a new segment: each hint follows what its encoder used
                        for r in rends:
                            r.follower.advance(editor.taken)
                    bar.update(editor.add(frame))
                elif astream is not None:
                    sync.audio(frame)
        bar.update(editor.flush())
        for r in rends:
            sync.video(r, r.follower.observe(r.stream.encode()))
        sync.audio(None)
        finished = True
    finally:
        bar.close()
        for r, out, stream in [(r, r.out, r.stream) for r in rends] + [(None, aout, astream)]:
            if out is None:
                continue
            if not finished and stream is not None:  # stopped early: flush what the encoder holds
                with contextlib.suppress(Exception):
                    for p in stream.encode():
                        out.mux(p)
            out.close()  # the hls muxer writes the media playlist with EXT-X-ENDLIST
        src.close()
        if server is not None:
            server.stop()
        if not finished and rends and all(r.frames for r in rends):
            try:  # what was encoded stays a playable ladder (frames held for a batch not yet encoded are lost)
                _package(args.format, outdir, rends, args.codec, rate, audio=ain is not None)
                log.warning("ladder stopped after %d frames; %s packages what was encoded", rends[-1].frames, outdir)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to report
                log.warning("ladder stopped; could not package the partial ladder: %s", exc)
    _package(args.format, outdir, rends, args.codec, rate, audio=ain is not None)
    for r in rends if engine is not None else []:
        if r.follower.history:
            log.info("%s: model QP hint per segment %s", r.name,
                     " ".join(f"{q:.1f}" for q in [r.follower.start] + [q for _, q in r.follower.history]))
    return 0


class _BatchEditor:
    """Scales, pre-edits and encodes the renditions' frames in batches of `batch` source frames.

    Renditions of one size share the scaled frame and one request (a row per rendition and frame,
    each with that rendition's QP hint when the frame was taken); the requests of the different
    sizes go to the server together (`engines.run_many`: its instances work on them side by side).
    Frames reach every encoder in source order, with the source timestamps.
    """

    def __init__(self, rends: List[Rendition], engine, fmt, sync, batch: int) -> None:
        self.rends, self.engine, self.fmt, self.sync, self.batch = rends, engine, fmt, sync, max(1, batch)
        self.groups: Dict[Tuple[int, int], List[Rendition]] = {}
        for r in rends:
            self.groups.setdefault(r.size, []).append(r)
        self.held: List[Tuple[object, Dict[Tuple[int, int], object], Dict[str, Optional[float]]]] = []
        self.taken = 0  # source frames taken so far

    def add(self, frame) -> int:
        """Take one decoded source frame; returns how many source frames were encoded now."""
        scaled = {size: frame.reformat(width=size[0], height=size[1], format=self.fmt.pix_fmt, interpolation="LANCZOS")
                  for size in self.groups}
        self.held.append((frame, scaled, {r.name: r.follower.qp for r in self.rends}))
        self.taken += 1
        return self.flush() if len(self.held) >= self.batch else 0

    def flush(self) -> int:
        held, self.held = self.held, []
        if not held:
            return 0
        edited: Dict[Tuple[str, int], object] = {}
        if self.engine is None:  # without the input's side data (HEVC input: libx265 crashed on its SEI)
            for j, (_, scaled, _) in enumerate(held):
                for r in self.rends:
                    edited[r.name, j] = bitdepth.bare_frame(scaled[r.size])
        else:
            jobs, rows = [], []
            for size, group in self.groups.items():
                views, finishes, qps = [], [], []
                for j, (_, scaled, hints) in enumerate(held):
                    view, finish = self._split(scaled[size])
                    for r in group:
                        views.append(view)
                        finishes.append((r.name, j, finish))
                        qps.append(hints[r.name])
                jobs.append((np.stack(views), np.asarray(qps, dtype=np.float32).reshape(-1, 1)))
                rows.append(finishes)
            for out, finishes in zip(run_many(self.engine, jobs), rows):
                for nv12, (name, j, finish) in zip(out, finishes):
                    edited[name, j] = finish(nv12)
        for j, (frame, _, _) in enumerate(held):
            for r in self.rends:
                picture = edited[r.name, j]
                self.fmt.tag(picture)
                picture.pts, picture.time_base = frame.pts, frame.time_base
                # The decoder's picture type would force the source's I/P/B pattern on the
                # encoder (libx264/libx265 honour it): GOPs misaligned, and x265's lookahead
                # crashes with VBV. Every rendition picks its own types within the closed GOP.
                picture.pict_type = av.video.frame.PictureType.NONE
                self.sync.video(r, r.follower.observe(r.stream.encode(picture)))
                r.frames += 1
        return len(held)

    def _split(self, scaled):
        """(the 8-bit NV12 the model sees, how its edit becomes the frame to encode)."""
        if self.fmt.bits == 10:  # the edit on the 8-bit view, applied at 10 bits
            return bitdepth.split_frame10(scaled)
        return scaled.reformat(format="nv12").to_ndarray(), lambda nv12: nv12_to_frame(nv12, False)


class _AvSync:
    """Keeps the audio rendition in sync with the video renditions.

    The fMP4 muxer moves a stream whose first decode time is negative (B-frame reordering: the
    first packet's dts is -delay) to start at 0, which delays the video by the encoder's reorder
    depth (2 frames for x265 medium). The audio, in its own playlist, is given the same shift: its
    frames keep the source timestamps plus that shift, and wait until the first video packet says
    what the shift is (about one look-ahead of audio)."""

    def __init__(self, lead: Rendition, aout, astream) -> None:
        self.lead, self.aout, self.astream = lead, aout, astream
        self.shift: Optional[Fraction] = None  # seconds
        self.pending: list = []

    def video(self, r: Rendition, packets) -> None:
        for p in packets:
            if self.shift is None and r is self.lead:
                self.shift = max(Fraction(0), -Fraction(p.dts * p.time_base)) if p.dts is not None else Fraction(0)
                pending, self.pending = self.pending, []
                for f in pending:
                    self.audio(f)
            r.out.mux(p)

    def audio(self, frame) -> None:
        """Encode one decoded audio frame (None: flush)."""
        if self.astream is None:
            return
        if frame is not None and self.shift is None:
            self.pending.append(frame)
            return
        if frame is None:
            for f in self.pending:  # no video packet ever came: no shift
                self._encode(f, Fraction(0))
            self.pending = []
            for p in self.astream.encode(None):
                self.aout.mux(p)
            return
        self._encode(frame, self.shift)

    def _encode(self, frame, shift: Fraction) -> None:
        rate = self.astream.codec_context.sample_rate
        if frame.pts is not None and frame.time_base is not None:
            frame.pts = int(round((frame.pts * frame.time_base + shift) * rate))
            frame.time_base = Fraction(1, rate)
        for p in self.astream.encode(frame):
            self.aout.mux(p)


def _package(fmt: str, outdir: Path, rends: List[Rendition], family: str, rate: Fraction, audio: bool) -> None:
    if fmt in ("dash", "both"):
        write_mpd(outdir, rends, family, rate, audio=audio)
    if fmt in ("hls", "both"):
        write_master(outdir, rends, family, float(rate), audio=audio)


def read_media_playlist(path: Path) -> List[Tuple[float, int]]:
    """(EXTINF seconds, segment bytes) for each segment of a media playlist."""
    out, dur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        elif line and not line.startswith("#") and dur is not None:
            out.append((dur, (path.parent / line).stat().st_size))
            dur = None
    return out


def _rates(segs: List[Tuple[float, int]]) -> Tuple[int, int]:
    """(peak, average) bit/s of a media playlist's segments (peak: the largest segment's own rate)."""
    peak = max(b * 8 / d for d, b in segs if d > 0)
    avg = sum(b for _, b in segs) * 8 / sum(d for d, _ in segs)
    return int(math.ceil(peak)), int(math.ceil(avg))


def _measure(outdir: Path, r: Rendition, family: str) -> Tuple[int, int, str]:
    """(peak bit/s, average bit/s, RFC 6381 codec) of one encoded rendition."""
    r.segments = read_media_playlist(outdir / r.name / "index.m3u8")
    init = (outdir / r.name / "init.mp4").read_bytes()
    ext = _box_payload(init, {"h264": b"avcC", "hevc": b"hvcC", "av1": b"av1C"}[family])
    return (*_rates(r.segments), codecs_string(family, ext, r.signal))


def video_range(signal: Optional[bitdepth.ColorSignal]) -> str:
    """HLS VIDEO-RANGE (RFC 8216bis §4.4.6.2): PQ, HLG or SDR, from the transfer characteristic."""
    return {16: "PQ", 18: "HLG"}.get(signal.transfer if signal is not None else 0, "SDR")


def write_master(outdir: Path, rends: List[Rendition], family: str, fps: float, audio: bool) -> Path:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio:
        lines.append('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
                     'URI="audio/index.m3u8"')
    abits = 0
    if audio:
        a = read_media_playlist(outdir / "audio" / "index.m3u8")
        abits = _rates(a)[0] if a else 0
    for r in rends:
        peak, avg, cs = _measure(outdir, r, family)
        cs += ",mp4a.40.2" if audio else ""
        attrs = (f"BANDWIDTH={peak + abits},AVERAGE-BANDWIDTH={avg + abits},"
                 f"RESOLUTION={r.width}x{r.height},CODECS=\"{cs}\",FRAME-RATE={fps:.3f},"
                 f"VIDEO-RANGE={video_range(r.signal)}")
        if audio:
            attrs += ',AUDIO="aud"'
        lines += [f"#EXT-X-STREAM-INF:{attrs}", f"{r.name}/index.m3u8"]
    path = outdir / "master.m3u8"
    path.write_text("\n".join(lines) + "\n")
    return path


def _box_payload(data: bytes, box: bytes) -> Optional[bytes]:
    i = data.find(box)
    if i < 4:
        return None
    size = int.from_bytes(data[i - 4:i], "big")
    return data[i + 4:i - 4 + size]


def _boxes(data: bytes, start: int = 0, end: Optional[int] = None):
    """(type, payload start, box end) of each ISO-BMFF box in data[start:end]."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind, head = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8], 8
        if size == 1:
            size, head = int.from_bytes(data[start + 8:start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < head:
            return
        yield kind, start + head, start + size
        start += size


def _box(data: bytes, *path: bytes) -> Optional[Tuple[int, int]]:
    """(payload start, end) of the first box along `path` (e.g. moov, trak, mdia, mdhd)."""
    lo, hi = 0, len(data)
    for name in path:
        for kind, a, b in _boxes(data, lo, hi):
            if kind == name:
                lo, hi = a, b
                break
        else:
            return None
    return lo, hi


def _full_box_u(data: bytes, at: int, v0: int, v1: int, width0: int = 4) -> int:
    """A field of a version 0/1 full box: offset `v0` (width 4) or `v1` (width 8) after the version."""
    version = data[at]
    off, width = (v1, 8) if version == 1 else (v0, width0)
    return int.from_bytes(data[at + off:at + off + width], "big")


def segment_timeline(folder: Path) -> Tuple[int, List[Tuple[int, int]]]:
    """(timescale, [(start, duration) per segment]) of an fMP4 rendition, in its track's timescale.

    Starts are each segment's `tfdt`; a duration is the next start minus this one, and the last
    segment's is the sum of its `trun` sample durations (or the `tfhd` default)."""
    init = (folder / "init.mp4").read_bytes()
    mdhd = _box(init, b"moov", b"trak", b"mdia", b"mdhd")
    timescale = _full_box_u(init, mdhd[0], 12, 20)
    trex = _box(init, b"moov", b"mvex", b"trex")
    default_dur = int.from_bytes(init[trex[0] + 12:trex[0] + 16], "big") if trex else 0
    segs = sorted(folder.glob("seg_*.m4s"))
    starts, last_len = [], 0
    for n, seg in enumerate(segs):
        data = seg.read_bytes()
        tfdt = _box(data, b"moof", b"traf", b"tfdt")
        starts.append(_full_box_u(data, tfdt[0], 4, 4))
        if n == len(segs) - 1:
            last_len = _fragment_duration(data, default_dur)
    durs = [b - a for a, b in zip(starts, starts[1:])] + [last_len]
    return timescale, list(zip(starts, durs))


def _fragment_duration(data: bytes, default_dur: int) -> int:
    total = 0
    for kind, a, b in _boxes(data):
        if kind != b"moof":
            continue
        traf = _box(data[a:b], b"traf")
        base = a + traf[0]
        for k, x, y in _boxes(data, base, a + traf[1]):
            if k == b"tfhd":
                flags = int.from_bytes(data[x + 1:x + 4], "big")
                off = x + 8 + (8 if flags & 1 else 0) + (4 if flags & 2 else 0)
                if flags & 8:
                    default_dur = int.from_bytes(data[off:off + 4], "big")
            elif k == b"trun":
                flags = int.from_bytes(data[x + 1:x + 4], "big")
                count = int.from_bytes(data[x + 4:x + 8], "big")
                off = x + 8 + (4 if flags & 1 else 0) + (4 if flags & 4 else 0)
                step = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                if flags & 0x100:
                    total += sum(int.from_bytes(data[off + i * step:off + i * step + 4], "big") for i in range(count))
                else:
                    total += default_dur * count
    return total


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _segment_template(parent: ET.Element, folder: Path) -> float:
    """SegmentTemplate + SegmentTimeline for `folder`'s segments; returns the duration in seconds."""
    timescale, timeline = segment_timeline(folder)
    tmpl = ET.SubElement(parent, "SegmentTemplate", timescale=str(timescale), startNumber="0",
                         initialization=f"{folder.name}/init.mp4", media=f"{folder.name}/seg_$Number%05d$.m4s")
    # No presentationTimeOffset: every adaptation set keeps the media timeline the HLS playlists use
    # (audio and video in sync by their own timestamps; the audio may start a little after 0).
    tl = ET.SubElement(tmpl, "SegmentTimeline")
    for n, (t, d) in enumerate(timeline):
        attrs = {"t": str(t), "d": str(d)} if n == 0 else {"d": str(d)}
        ET.SubElement(tl, "S", attrs)
    return sum(d for _, d in timeline) / timescale


def write_mpd(outdir: Path, rends: List[Rendition], family: str, rate: Fraction, audio: bool) -> Path:
    """OUTDIR/manifest.mpd (static, ISO-BMFF live profile) over the renditions' fMP4 segments."""
    ns = "urn:mpeg:dash:schema:mpd:2011"
    mpd = ET.Element("MPD", xmlns=ns, type="static", profiles="urn:mpeg:dash:profile:isoff-live:2011",
                     minBufferTime="PT2S")
    period = ET.SubElement(mpd, "Period", id="0", start="PT0S")
    vset = ET.SubElement(period, "AdaptationSet", id="0", contentType="video", mimeType="video/mp4",
                         segmentAlignment="true", startWithSAP="1", frameRate=f"{rate.numerator}/{rate.denominator}")
    duration = 0.0
    for r in rends:
        peak, _avg, cs = _measure(outdir, r, family)
        rep = ET.SubElement(vset, "Representation", id=r.name, bandwidth=str(peak), width=str(r.width),
                            height=str(r.height), codecs=cs, sar="1:1")
        duration = max(duration, _segment_template(rep, outdir / r.name))
    if audio:
        aset = ET.SubElement(period, "AdaptationSet", id="1", contentType="audio", mimeType="audio/mp4",
                             segmentAlignment="true", startWithSAP="1", lang="und")
        peak = _rates(read_media_playlist(outdir / "audio" / "index.m3u8"))[0]
        rep = ET.SubElement(aset, "Representation", id="audio", bandwidth=str(peak), codecs="mp4a.40.2")
        _segment_template(rep, outdir / "audio")
    mpd.set("mediaPresentationDuration", _iso_duration(duration))
    ET.indent(mpd)
    path = outdir / "manifest.mpd"
    path.write_bytes(ET.tostring(mpd, xml_declaration=True, encoding="utf-8") + b"\n")
    return path
