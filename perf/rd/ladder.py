"""Ladder acceptance + BD-style report on one real clip: `preedit bench ladder` (issue 19; slow, not a test).

```
 sintel-snowfight.mp4 (10 s, no audio) + friday-filmgrain.mp4's audio looped ──ffmpeg -c:v copy──> src.mp4
   ├─ preedit ladder --format both            (pre-edited, one embedded Triton)  ─┐ checks: FFmpeg + PyAV play
   └─ preedit ladder --format both --bypass   (same ladder, no pre-editing)      ─┤ master.m3u8 and manifest.mpd,
                                                                                   │ frames = input, key frames
 per rendition: decode, bicubic up to the source size (as a player shows it) ─────┤ aligned, segments ±1 frame,
   score vs the source (libvmaf: VMAF-NEG, VMAF v1, PSNR-Y, XPSNR-Y, VMAF)         │ avg rate ±10 %, peak ≤ BANDWIDTH
 BD-rate over the renditions (the ladder's rate-quality curve), pre-edited vs bypass
```
Writes `OUT/ladder_<clip>_<codec>.json` and prints a Markdown summary:

    nice -n 10 preedit bench ladder --out perf/results/ladder
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

CLIP, AUDIO_FROM = "sintel-snowfight.mp4", "friday-filmgrain.mp4"  # flower.mp4's track is silent
RUNGS = ("360:700", "270:400", "180:200")
REPORT = ("vmaf_neg", "vmaf_v1", "psnr_y", "xpsnr_y", "vmaf")


def mux_audio(video: Path, audio: Path, dst: Path) -> Path:
    """`video`'s stream copied, with `audio`'s track looped to its length and coded AAC 128 kbit/s."""
    from preedit.quality.ffmpeg import ffmpeg_exe, run_command

    run_command([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
                 "-stream_loop", "-1", "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                 "-c:a", "aac", "-b:a", "128k", "-shortest", str(dst)], what="muxing the audio in")
    return dst


def _ffmpeg_frames(url: str, video_index: int) -> int:
    """Frames FFmpeg decodes from video stream `video_index` of a master playlist / MPD (with the audio)."""
    from preedit.quality.ffmpeg import ffmpeg_exe, run_command

    proc = run_command([ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats",
                        "-i", url, "-map", f"0:v:{video_index}", "-map", "0:a:0?", "-f", "null", "-"],
                       what=f"playing {Path(url).name}")
    return int(re.findall(r"frame=\s*(\d+)", proc.stderr)[-1])


def check_ladder(outdir: Path, rungs: Sequence[tuple], frames: int, fps: float, segment_s: float) -> Dict:
    """The issue's acceptance checks on one ladder folder; every figure is returned, `ok` says if all held."""
    import av

    from preedit.client.ladder import read_media_playlist, rendition_names

    master = (outdir / "master.m3u8").read_text()
    bandwidth = [int(b) for b in re.findall(r"[^-]BANDWIDTH=(\d+)", master)]
    out: Dict = {"renditions": [], "ok": True}
    keys_first = None
    with av.open(str(outdir / "master.m3u8")) as c:  # PyAV plays the master (every variant stream)
        pyav_frames = {}
        for s in c.streams.video:
            pyav_frames[(s.codec_context.width, s.codec_context.height)] = 0
        for packet in c.demux(*c.streams.video):
            for _ in packet.decode():
                key = (packet.stream.codec_context.width, packet.stream.codec_context.height)
                pyav_frames[key] += 1
    mpd = str((outdir / "manifest.mpd").resolve())
    for i, ((h, kbps), bw, name) in enumerate(zip(rungs, bandwidth, rendition_names(rungs))):
        sub = outdir / name
        with av.open(str(sub / "index.m3u8")) as c:
            v = c.streams.video[0]
            decoded = [(float(f.pts * v.time_base), f.key_frame) for f in c.decode(v)]
            size = (v.codec_context.width, v.codec_context.height)
        keys = [t for t, k in decoded if k]
        keys_first = keys if keys_first is None else keys_first
        segs = read_media_playlist(sub / "index.m3u8")
        video_bits = sum(b for _, b in segs) * 8
        avg = video_bits / sum(d for d, _ in segs)
        peak = max(b * 8 / d for d, b in segs)
        r = {"name": name, "height": h, "target_kbps": kbps, "size": list(size), "frames": len(decoded),
             "pyav_master_frames": pyav_frames.get(size), "ffmpeg_master_frames": _ffmpeg_frames(str(outdir / "master.m3u8"), i),
             "ffmpeg_mpd_frames": _ffmpeg_frames(mpd, i), "keyframes_s": keys,
             "segments_s": [round(d, 4) for d, _ in segs], "avg_kbps": avg / 1000, "peak_kbps": peak / 1000,
             "bandwidth_kbps": bw / 1000, "video_bits": video_bits}
        r["checks"] = {
            "frames_equal_input": r["frames"] == frames == r["pyav_master_frames"] == r["ffmpeg_master_frames"]
                                  == r["ffmpeg_mpd_frames"],
            "keyframes_aligned": keys == keys_first,
            "segments_within_1_frame": all(abs(d - segment_s) <= 1 / fps + 1e-6 for d, _ in segs[:-1]),
            "avg_within_10pct": abs(avg / (kbps * 1000) - 1) <= 0.10,
            "peak_within_bandwidth": peak <= bw,
        }
        out["ok"] &= all(r["checks"].values())
        out["renditions"].append(r)
    return out


def _upscaled_y4m(src: Path, size: tuple, dst: Path) -> Path:
    """A rendition decoded and scaled (bicubic) to the source size, as the y4m the scores read."""
    from preedit.quality.ffmpeg import ffmpeg_exe, run_command

    run_command([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:v:0",
                 "-vf", f"scale={size[0]}:{size[1]}:flags=bicubic,format=yuv420p", "-f", "yuv4mpegpipe", str(dst)],
                what=f"upscaling {src.parent.name}")
    return dst


def main(argv: List[str] = None) -> int:
    import av

    from preedit.paths import clips_dir
    from preedit.quality.bdrate import bd_rate
    from preedit.quality.metrics import score, tool_versions

    ap = argparse.ArgumentParser(prog="preedit bench ladder", description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(clips_dir() / CLIP))
    ap.add_argument("--audio-from", default=str(clips_dir() / AUDIO_FROM),
                    help="clip whose audio is looped in (the 10 s clips here have none)")
    ap.add_argument("--rendition", action="append", default=None, metavar="HEIGHT:KBPS")
    ap.add_argument("--codec", default="hevc")
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--out", default="perf/results/ladder")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    rung_text = args.rendition or list(RUNGS)
    rungs = [tuple(int(x) for x in r.split(":")) for r in rung_text]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="preedit_ladder_bench_", dir=args.work) as tmp:
        work = Path(tmp)
        src = mux_audio(Path(args.clip), Path(args.audio_from), work / "src.mp4")
        with av.open(str(src)) as c:
            v = c.streams.video[0]
            frames = sum(1 for _ in c.decode(v))
            fps, size, has_audio = float(v.average_rate), (v.codec_context.width, v.codec_context.height), bool(c.streams.audio)
        ref = _upscaled_y4m(src, size, work / "ref.y4m")
        result: Dict = {"clip": Path(args.clip).name, "audio_from": Path(args.audio_from).name, "frames": frames,
                        "fps": fps, "source_size": list(size), "has_audio": has_audio, "codec": args.codec,
                        "segment_s": args.segment_s, "renditions": rung_text, "variants": {},
                        "scoring": "each rendition decoded, bicubic up to the source size, vs the source",
                        "tools": tool_versions()}
        for name, extra in (("preedit", []), ("bypass", ["--bypass"])):
            lad = work / name
            cmd = ["ladder", str(src), "-o", str(lad), "--codec", args.codec, "--segment-s", f"{args.segment_s:g}",
                   "--format", "both", *extra]
            for r in rung_text:
                cmd += ["--rendition", r]
            t0 = time.monotonic()  # each ladder in its own process, as an operator runs it
            proc = subprocess.run([sys.executable, "-m", "preedit", *cmd], timeout=1800)
            if proc.returncode != 0:
                return 1
            wall = time.monotonic() - t0
            checks = check_ladder(lad, rungs, frames, fps, args.segment_s)
            for r in checks["renditions"]:
                dist = _upscaled_y4m(lad / r["name"] / "index.m3u8", size, work / "dist.y4m")
                s = score(dist, ref, expect_frames=frames, size=size)
                r["scores"] = {k: s.metrics[k] for k in s.metrics}
                dist.unlink()
            shown = ["SRC" if c == str(src) else "OUTDIR" if c == str(lad) else c for c in cmd]
            result["variants"][name] = {"command": "preedit " + " ".join(shown), "wall_s": wall, **checks}
    pre, byp = result["variants"]["preedit"]["renditions"], result["variants"]["bypass"]["renditions"]
    kbps = lambda rs: [r["video_bits"] / 1000 / (frames / fps) for r in rs]  # noqa: E731
    result["bd_rate_pct"] = {}
    for k in REPORT:
        res = bd_rate(kbps(byp), [r["scores"][k] for r in byp], kbps(pre), [r["scores"][k] for r in pre])
        result["bd_rate_pct"][k] = {"value": None if math.isnan(res.value) else res.value, "warning": res.warning}
    path = outdir / f"ladder_{Path(args.clip).stem}_{args.codec}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"wrote {path}")
    return 0 if all(v["ok"] for v in result["variants"].values()) else 1


def markdown(result: Dict) -> str:
    """The BENCHMARKS.md tables of one run."""
    lines = ["| variant | rendition | frames | avg / target kbit/s | peak ≤ BANDWIDTH kbit/s | key frames aligned | "
             "segments ±1 fr | VMAF-NEG | VMAF v1 | PSNR-Y | XPSNR-Y | VMAF |", "|" + "---|" * 12]
    for name, var in result["variants"].items():
        for r in var["renditions"]:
            c, s = r["checks"], r["scores"]
            lines.append(f"| {name} | {r['size'][0]}x{r['size'][1]} | {r['frames']} | {r['avg_kbps']:.0f} / "
                         f"{r['target_kbps']} | {r['peak_kbps']:.0f} ≤ {r['bandwidth_kbps']:.0f} | "
                         f"{'yes' if c['keyframes_aligned'] else 'NO'} | "
                         f"{'yes' if c['segments_within_1_frame'] else 'NO'} | {s['vmaf_neg']:.2f} | "
                         f"{s['vmaf_v1']:.2f} | {s['psnr_y']:.2f} | {s['xpsnr_y']:.2f} | {s['vmaf']:.2f} |")
    bd = result["bd_rate_pct"]
    fmt = lambda v: "n/a" if v["value"] is None else f"{v['value']:+.1f} %"  # noqa: E731
    lines += ["", "| BD-rate over the ladder, pre-edited vs bypass | VMAF-NEG | VMAF v1 | PSNR-Y | XPSNR-Y | VMAF |",
              "|---|---|---|---|---|---|", "| " + " | ".join([result["clip"]] + [fmt(bd[k]) for k in REPORT]) + " |"]
    return "\n".join(lines)
