"""`preedit ladder`: an HLS bitrate ladder from one decode (issue 19; a first cut, HLS only).

```
 IN ──decode once──┬─ scale (FFmpeg swscale, lanczos) ─ pre-edit (one Triton) ─ encode ─ hls muxer ─ OUTDIR/<H>p/
                   ├─ ...one branch per rendition (closed GOP of segment-s × fps frames, scene-cut off,
                   │   target bitrate with VBV: maxrate = 1.1 × rate, bufsize = 2 × rate)
                   └─ audio ─ AAC ─ hls muxer ─ OUTDIR/audio/
 OUTDIR/master.m3u8: one EXT-X-STREAM-INF per rendition (BANDWIDTH = measured peak segment rate,
 AVERAGE-BANDWIDTH, RESOLUTION, CODECS, FRAME-RATE), audio as an EXT-X-MEDIA rendition.
```

    preedit ladder in.mp4 -o out/ --rendition 720:3000 --rendition 360:800 --codec h264 --bypass
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

from preedit import codecs
from preedit.client.encode import EncoderSettings
from preedit.client.encode._pyav import encoder_options, model_qp, nv12_to_frame
from preedit.client.interfaces import StreamInfo
from preedit.engines import TritonEngine
from preedit.errors import InputError, UsageError
from preedit.paths import model_repository
from preedit.serve import ServerConfig, TritonServer

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


def codecs_string(family: str, extradata: Optional[bytes]) -> str:
    """RFC 6381 CODECS value from the encoder's global header (avcC / hvcC); AV1 a main-profile default."""
    x = extradata or b""
    if family == "h264" and len(x) >= 4 and x[0] == 1:
        return f"avc1.{x[1]:02X}{x[2]:02X}{x[3]:02X}"
    if family == "hevc" and len(x) >= 13 and x[0] == 1:
        space, tier, profile = x[1] >> 6, (x[1] >> 5) & 1, x[1] & 31
        compat = int.from_bytes(x[2:6], "big")
        compat = int(f"{compat:032b}"[::-1], 2)
        return f"hvc1.{'ABC'[space - 1] if space else ''}{profile}.{compat:X}.{'HL'[tier]}{x[12]}.B0"
    if family == "av1":
        return "av01.0.08M.08"
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


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("input", metavar="IN")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    parser.add_argument("--rendition", action="append", type=parse_rendition, default=None, metavar="HEIGHT:KBPS",
                        help="one rung (repeat); default 1080:4500 720:2500 480:1200 360:700 capped at the source")
    parser.add_argument("--format", choices=["hls"], default="hls", help="packaging (DASH: not built yet)")
    parser.add_argument("--segment-s", type=float, default=2.0, help="segment length, seconds")
    parser.add_argument("--codec", choices=list(codecs.ENCODER_OF), default="hevc")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--bypass", action="store_true", help="same ladder without pre-editing (A/B)")
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: start one)")
    parser.add_argument("--model", default="preedit")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit ladder")).parse_args(argv)
    if args.segment_s <= 0:
        raise UsageError(f"--segment-s must be positive, got {args.segment_s}")
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
    engine, server = None, None
    if not args.bypass:
        url = args.url
        if url is None:
            server = TritonServer(ServerConfig(model_repository=model_repository(), http_port=0, grpc_port=0,
                                               models=(args.model,))).start()
            server.wait_model_ready(args.model)
            url = server.grpc_url
        engine = TritonEngine(url, model_name=args.model)
    outdir.mkdir(parents=True, exist_ok=True)
    sw, sh = vin.codec_context.width, vin.codec_context.height
    rends = [Rendition(h, k, width=_even(sw * h / sh)) for h, k in rungs]

    def hls_out(sub: str):
        d = outdir / sub
        d.mkdir(exist_ok=True)
        return av.open(str(d / "index.m3u8"), "w", format="hls", options={
            "hls_time": f"{args.segment_s:g}", "hls_playlist_type": "vod", "hls_segment_type": "fmp4",
            "hls_fmp4_init_filename": "init.mp4", "hls_segment_filename": str(d / "seg_%05d.m4s"),
            "hls_flags": "independent_segments"})

    try:
        for r in rends:
            r.settings = EncoderSettings(codec=args.codec, bitrate_kbps=r.kbps, preset=args.preset, keyint=gop,
                                         maxrate_kbps=1.1 * r.kbps, bufsize_kbps=2.0 * r.kbps, closed_gop=True)
            lib, opts, bit_rate = encoder_options(r.settings)
            r.out = hls_out(f"{r.height}p")
            r.stream = r.out.add_stream(lib, rate=rate, options=opts)
            r.stream.width, r.stream.height, r.stream.pix_fmt = r.width, r.height, "yuv420p"
            r.stream.codec_context.bit_rate = bit_rate
            r.stream.codec_context.time_base = vin.time_base
            r.qp = model_qp(r.settings, StreamInfo(r.width, r.height, vin.time_base, rate))
        aout = astream = None
        if ain is not None:
            aout = hls_out("audio")
            astream = aout.add_stream("aac", rate=ain.codec_context.sample_rate)
            astream.bit_rate = 128_000
        streams = [vin] + ([ain] if ain is not None else [])
        for packet in src.demux(*streams):
            for frame in packet.decode():
                if packet.stream is vin:
                    for r in rends:
                        scaled = frame.reformat(width=r.width, height=r.height, format="yuv420p",
                                                interpolation="LANCZOS")
                        if engine is not None:
                            nv12 = scaled.reformat(format="nv12").to_ndarray()
                            edited = nv12_to_frame(engine.run(nv12[None], r.qp)[0], False)
                            scaled = edited
                        scaled.pts, scaled.time_base = frame.pts, frame.time_base
                        for p in r.stream.encode(scaled):
                            r.out.mux(p)
                        r.frames += 1
                elif astream is not None:
                    frame.pts = None
                    for p in astream.encode(frame):
                        aout.mux(p)
        for r in rends:
            for p in r.stream.encode():
                r.out.mux(p)
        if astream is not None:
            for p in astream.encode():
                aout.mux(p)
    finally:
        for r in rends:
            if r.out is not None:
                r.out.close()
        if aout is not None:
            aout.close()
        src.close()
        if server is not None:
            server.stop()
    write_master(outdir, rends, args.codec, float(rate), audio=ain is not None)
    return 0


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


def write_master(outdir: Path, rends: List[Rendition], family: str, fps: float, audio: bool) -> Path:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio:
        lines.append('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
                     'URI="audio/index.m3u8"')
    abits = 0
    if audio:
        a = read_media_playlist(outdir / "audio" / "index.m3u8")
        abits = int(max(b * 8 / d for d, b in a if d > 0)) if a else 0
    for r in rends:
        segs = read_media_playlist(outdir / f"{r.height}p" / "index.m3u8")
        r.segments = segs
        peak = max(b * 8 / d for d, b in segs if d > 0)
        avg = sum(b for _, b in segs) * 8 / sum(d for d, _ in segs)
        init = (outdir / f"{r.height}p" / "init.mp4").read_bytes()
        ext = _box_payload(init, b"avcC" if family == "h264" else b"hvcC")
        cs = codecs_string(family, ext) + (",mp4a.40.2" if audio else "")
        attrs = (f"BANDWIDTH={int(math.ceil(peak)) + abits},AVERAGE-BANDWIDTH={int(math.ceil(avg)) + abits},"
                 f"RESOLUTION={r.width}x{r.height},CODECS=\"{cs}\",FRAME-RATE={fps:.3f}")
        if audio:
            attrs += ',AUDIO="aud"'
        lines += [f"#EXT-X-STREAM-INF:{attrs}", f"{r.height}p/index.m3u8"]
    path = outdir / "master.m3u8"
    path.write_text("\n".join(lines) + "\n")
    return path


def _box_payload(data: bytes, box: bytes) -> Optional[bytes]:
    i = data.find(box)
    if i < 4:
        return None
    size = int.from_bytes(data[i - 4:i], "big")
    return data[i + 4:i - 4 + size]
