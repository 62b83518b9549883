"""Scale-out acceptance benchmark: N separate `preedit run --segment I/N` processes + `preedit join`
vs one run, and `--workers 1` vs `--workers K` wall time.

```
 preedit bench scale-out --clip friday-filmgrain.mp4 --crfs 24,28,32,36 --segments 3 \
     --out perf/results/scale_out
```
One embedded Triton serves every process (`--url`), as a Triton Service does in the cluster.
Checks on each joined file: the input's frame count, strictly increasing timestamps (= the
source's), the title's audio packets, a clean FFmpeg decode. Quality against the original with
libvmaf (VMAF-NEG, VMAF v1, VMAF, PSNR-Y, XPSNR); BD-rate joined vs single (should be ~0).
Writes `scale_out.json` and `scale_out.md` under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from preedit.client.workers import segment_command
from preedit.paths import clips_dir, model_repository
from preedit.quality.metrics import score
from preedit.serve import ServerConfig, TritonServer

BD_METRICS = ("vmaf_neg", "vmaf_v1", "vmaf", "psnr_y", "xpsnr_y")


def _video_kbps(path: Path) -> float:
    import av  # lazy: av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pk = [p for p in c.demux(v) if p.size]
        bits = sum(p.size for p in pk) * 8
        ts = sorted(float(p.pts * p.time_base) for p in pk)
        rate = float(v.average_rate or 30)
        return bits / (ts[-1] - ts[0] + 1 / rate) / 1000


def _stream_facts(path: Path) -> dict:
    import av  # lazy: av

    with av.open(str(path)) as c:
        pts = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = sum(1 for p in c.demux(*c.streams.audio) if p.size) if c.streams.audio else 0
    return {"frames": len(pts), "pts": pts, "audio_packets": audio}


def _ffmpeg_plays(path: Path) -> bool:
    import imageio_ffmpeg  # lazy: imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True)
    return proc.returncode == 0 and not proc.stderr.strip()


def _run(cmd: List[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.monotonic() - t0


def main(argv: Optional[List[str]] = None) -> int:
    from preedit.client.segment import index_source, plan_segments  # lazy: pulls av
    from preedit.quality.bdrate import bd_rate  # lazy: pulls numpy

    ap = argparse.ArgumentParser(prog="preedit bench scale-out", description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="friday-filmgrain.mp4")
    ap.add_argument("--crfs", default="24,28,32,36")
    ap.add_argument("--codec", default="hevc")
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("perf/results/scale_out"))
    args = ap.parse_args(argv)
    src = Path(args.clip) if Path(args.clip).is_file() else clips_dir() / args.clip
    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    crfs = [float(c) for c in args.crfs.split(",")]
    idx = index_source(str(src))
    segs = plan_segments(idx, args.segments, str(src))
    source_facts = _stream_facts(src)
    py = sys.executable
    result = {"clip": src.name, "codec": args.codec, "frames": len(idx.pts), "key_frames": len(idx.key_pts),
              "segments": [{"index": s.index, "start_pts": s.start_pts, "end_pts": s.end_pts, "frames": s.frames}
                           for s in segs],
              "source_audio_packets": source_facts["audio_packets"], "points": []}
    with TritonServer(ServerConfig(model_repository=model_repository(), http_port=0, grpc_port=0,
                                   metrics_port=0, models=("preedit",))) as server:
        server.wait_model_ready("preedit")
        url = server.grpc_url
        enc = ["--codec", args.codec, "--url", url]
        for crf in crfs:
            tag = f"crf{crf:g}"
            single = work / f"single_{tag}.mp4"
            t_single = _run([py, "-m", "preedit", "run", str(src), "-o", str(single), *enc, "--crf", f"{crf:g}"])
            parts, seg_s = [], []
            for s in segs:
                part = work / f"seg{s.index}_{tag}.mp4"
                seg_s.append(_run(segment_command(str(src), str(part), s.index, len(segs),
                                                  [*enc, "--crf", f"{crf:g}"], python=py)))
                parts.append(part)
            joined = work / f"joined_{tag}.mp4"
            t_join = _run([py, "-m", "preedit", "join", *map(str, reversed(parts)), "-o", str(joined)])
            facts = _stream_facts(joined)
            point = {
                "crf": crf, "single_s": t_single, "segment_s": seg_s, "join_s": t_join,
                "frames": facts["frames"], "frames_ok": facts["frames"] == len(idx.pts),
                "pts_strictly_increasing": all(b > a for a, b in zip(facts["pts"], facts["pts"][1:])),
                "pts_equal_source": facts["pts"] == source_facts["pts"],
                "audio_packets": facts["audio_packets"], "plays_in_ffmpeg": _ffmpeg_plays(joined),
                "single_kbps": _video_kbps(single), "joined_kbps": _video_kbps(joined),
                "single": score(single, src, n_threads=2, expect_frames=len(idx.pts)).metrics,
                "joined": score(joined, src, n_threads=2, expect_frames=len(idx.pts)).metrics,
            }
            result["points"].append(point)
            print(json.dumps({k: v for k, v in point.items() if k not in ("single", "joined")}), flush=True)
            (out / "scale_out.partial.json").write_text(json.dumps(result, indent=2))
        pts = result["points"]
        result["bd_rate_joined_vs_single"] = {}
        for m in BD_METRICS:
            r = bd_rate([p["single_kbps"] for p in pts], [p["single"][m] for p in pts],
                        [p["joined_kbps"] for p in pts], [p["joined"][m] for p in pts])
            result["bd_rate_joined_vs_single"][m] = {"percent": r.value, "warning": r.warning}
        # --workers: one worker vs K workers, same server, same CRF, whole pipeline incl. join.
        crf = crfs[len(crfs) // 2]
        timing = {}
        for k in (1, args.workers):
            summary = work / f"workers{k}.json"
            _run([py, "-m", "preedit", "run", str(src), "-o", str(work / f"workers{k}.mp4"), *enc,
                  "--crf", f"{crf:g}", "--workers", str(k), "--summary-json", str(summary)])
            timing[k] = json.loads(summary.read_text())
        result["workers"] = {
            "crf": crf, "wall_s": {str(k): v["wall_s"] for k, v in timing.items()},
            "segment_wall_s": {str(k): [s["wall_s"] for s in v["segments"]] for k, v in timing.items()},
            "speedup": timing[1]["wall_s"] / timing[args.workers]["wall_s"],
        }
    (out / "scale_out.json").write_text(json.dumps(result, indent=2))
    (out / "scale_out.md").write_text(report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    lines = [f"# Scale out: {r['clip']} ({r['frames']} frames, {r['key_frames']} key frames, "
             f"{r['source_audio_packets']} audio packets), {r['codec']}", "",
             "Segments: " + ", ".join(f"{s['index']}: pts [{s['start_pts']}, {s['end_pts']}) {s['frames']} fr"
                                      for s in r["segments"]), "",
             "| CRF | frames | pts = source | audio pkts | FFmpeg decode | single kbps | joined kbps | "
             "VMAF-NEG single / joined | VMAF v1 single / joined | PSNR-Y single / joined |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["points"]:
        s, j = p["single"], p["joined"]
        lines.append(f"| {p['crf']:g} | {p['frames']} | {p['pts_equal_source']} | {p['audio_packets']} | "
                     f"{'clean' if p['plays_in_ffmpeg'] else 'ERRORS'} | {p['single_kbps']:.1f} | "
                     f"{p['joined_kbps']:.1f} | {s['vmaf_neg']:.2f} / {j['vmaf_neg']:.2f} | "
                     f"{s['vmaf_v1']:.2f} / {j['vmaf_v1']:.2f} | {s['psnr_y']:.2f} / {j['psnr_y']:.2f} |")
    lines += ["", "BD-rate joined vs single (%): " + ", ".join(
        f"{m} {v['percent']:+.3f}" for m, v in r["bd_rate_joined_vs_single"].items())]
    w = r.get("workers")
    if w:
        lines += ["", f"--workers at CRF {w['crf']:g}: wall " + ", ".join(
            f"{k} worker(s) {v:.1f} s" for k, v in w["wall_s"].items()) + f"; speed-up {w['speedup']:.2f}x",
            "segment wall times: " + "; ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)} s"
                                               for k, v in w["segment_wall_s"].items())]
    return "\n".join(lines) + "\n"

