"""Scale-out acceptance benchmark: N separate `preedit run --segment I/N` processes + `preedit join`
vs one run, and `--workers 1` vs `--workers K` wall time.

```
 preedit bench scale-out --clip friday-filmgrain.mp4 --crfs 24,28,32,36 --segments 3 \
     --out perf/results/scale_out
 preedit bench scale-out --clip friday-filmgrain.mp4 --crfs 24,28,32,36 --segments 3 \
     --keyint 60 --closed-gop --baseline-single --no-workers --out perf/results/scale_out_gop60
```
One embedded Triton serves every process (`--url`), as a Triton Service does in the cluster.
`--keyint K --closed-gop` goes to the single run and to every segment (cuts on the GOP grid);
`--baseline-single` also encodes one run with the encoder's default GOP (open GOP, keyint 250,
scene cuts) and reports the BD-rate of the closed-GOP single and joined files against it.
Key frames (presentation index) and their share of the bits are recorded for every file.
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


def _key_frames(path: Path) -> dict:
    """Key frames of the video stream: presentation indices and their share of the video bytes."""
    import av

    with av.open(str(path)) as c:
        pk = [(int(p.pts), p.size, bool(p.is_keyframe)) for p in c.demux(c.streams.video[0]) if p.size]
    order = {pts: i for i, pts in enumerate(sorted(p[0] for p in pk))}
    total = sum(p[1] for p in pk)
    keys = sorted(order[p[0]] for p in pk if p[2])
    return {"key_frames": keys, "key_bytes_share": sum(p[1] for p in pk if p[2]) / total, "video_bytes": total}


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
    from preedit.serve import child_env

    url = cmd[cmd.index("--url") + 1] if "--url" in cmd else None
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(url))  # key of a locked server
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
    ap.add_argument("--keyint", type=int, default=None, help="GOP length for the single run and the segments")
    ap.add_argument("--closed-gop", action="store_true", help="fixed closed GOP (segments cut on its grid)")
    ap.add_argument("--baseline-single", action="store_true",
                    help="also encode a single run with the encoder's default GOP (the cost of --closed-gop)")
    ap.add_argument("--baseline-json", type=Path, default=None,
                    help="take the default-GOP single run from this earlier scale_out.json (same clip, "
                         "CRFs and scorer: a default-GOP run's `single` or a --baseline-single run's "
                         "`baseline` points) instead of encoding it again")
    ap.add_argument("--no-workers", action="store_true", help="skip the --workers 1 vs K timing")
    ap.add_argument("--out", type=Path, default=Path("perf/results/scale_out"))
    args = ap.parse_args(argv)
    src = Path(args.clip) if Path(args.clip).is_file() else clips_dir() / args.clip
    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    crfs = [float(c) for c in args.crfs.split(",")]
    baseline = {}
    if args.baseline_json is not None:
        prior = json.loads(args.baseline_json.read_text())
        default_run = not prior.get("gop_args")  # its `single` is a default-GOP run; else its `baseline`
        key = "single" if default_run else "baseline"
        if prior["clip"] != Path(args.clip).name or not all(key in p for p in prior["points"]):
            raise SystemExit(f"{args.baseline_json}: no default-GOP single run of {args.clip}")
        baseline = {p["crf"]: {"single_kbps": p[f"{key}_kbps"], "single": p[key]} for p in prior["points"]}
        if set(crfs) - set(baseline):
            raise SystemExit(f"{args.baseline_json} lacks CRF {sorted(set(crfs) - set(baseline))}")
    idx = index_source(str(src))
    gop = args.keyint if args.closed_gop else None
    segs = plan_segments(idx, args.segments, str(src), gop)
    gop_args = ([] if args.keyint is None else ["--keyint", str(args.keyint)]) + (["--closed-gop"] if args.closed_gop else [])
    source_facts = _stream_facts(src)
    py = sys.executable
    result = {"clip": src.name, "codec": args.codec, "frames": len(idx.pts), "key_frames": len(idx.key_pts),
              "gop_args": gop_args,
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
            rc = [*enc, "--crf", f"{crf:g}", *gop_args]
            t_single = _run([py, "-m", "preedit", "run", str(src), "-o", str(single), *rc])
            parts, seg_s = [], []
            for s in segs:
                part = work / f"seg{s.index}_{tag}.mp4"
                seg_s.append(_run(segment_command(str(src), str(part), s.index, len(segs), rc, python=py)))
                parts.append(part)
            joined = work / f"joined_{tag}.mp4"
            t_join = _run([py, "-m", "preedit", "join", *map(str, reversed(parts)), "-o", str(joined)])
            facts = _stream_facts(joined)
            keys_single, keys_joined = _key_frames(single), _key_frames(joined)
            point = {
                "crf": crf, "single_s": t_single, "segment_s": seg_s, "join_s": t_join,
                "frames": facts["frames"], "frames_ok": facts["frames"] == len(idx.pts),
                "pts_strictly_increasing": all(b > a for a, b in zip(facts["pts"], facts["pts"][1:])),
                "pts_equal_source": facts["pts"] == source_facts["pts"],
                "audio_packets": facts["audio_packets"], "plays_in_ffmpeg": _ffmpeg_plays(joined),
                "single_kbps": _video_kbps(single), "joined_kbps": _video_kbps(joined),
                "single_keys": keys_single, "joined_keys": keys_joined,
                "key_frames_equal": keys_single["key_frames"] == keys_joined["key_frames"],
                "single": score(single, src, n_threads=2, expect_frames=len(idx.pts)).metrics,
                "joined": score(joined, src, n_threads=2, expect_frames=len(idx.pts)).metrics,
            }
            if crf in baseline:
                point.update(baseline_kbps=baseline[crf]["single_kbps"], baseline=baseline[crf]["single"],
                             baseline_from=str(args.baseline_json))
            elif args.baseline_single:
                base = work / f"baseline_{tag}.mp4"
                _run([py, "-m", "preedit", "run", str(src), "-o", str(base), *enc, "--crf", f"{crf:g}"])
                point.update(baseline_kbps=_video_kbps(base), baseline_keys=_key_frames(base),
                             baseline=score(base, src, n_threads=2, expect_frames=len(idx.pts)).metrics)
            result["points"].append(point)
            print(json.dumps({k: v for k, v in point.items() if k not in ("single", "joined", "baseline")}), flush=True)
            (out / "scale_out.partial.json").write_text(json.dumps(result, indent=2))
        pts = result["points"]
        with_base = args.baseline_single or bool(baseline)
        pairs = [("joined", "single")] + ([("single", "baseline"), ("joined", "baseline")] if with_base else [])
        for test, ref in pairs:
            table = result[f"bd_rate_{test}_vs_{ref}"] = {}
            for m in BD_METRICS:
                r = bd_rate([p[f"{ref}_kbps"] for p in pts], [p[ref][m] for p in pts],
                            [p[f"{test}_kbps"] for p in pts], [p[test][m] for p in pts])
                table[m] = {"percent": r.value, "warning": r.warning}
        # --workers: one worker vs K workers, same server, same CRF, whole pipeline incl. join.
        crf = crfs[len(crfs) // 2]
        timing = {}
        for k in (() if args.no_workers else (1, args.workers)):
            summary = work / f"workers{k}.json"
            _run([py, "-m", "preedit", "run", str(src), "-o", str(work / f"workers{k}.mp4"), *enc,
                  "--crf", f"{crf:g}", *gop_args, "--workers", str(k), "--summary-json", str(summary)])
            timing[k] = json.loads(summary.read_text())
        result["workers"] = None if args.no_workers else {
            "crf": crf, "wall_s": {str(k): v["wall_s"] for k, v in timing.items()},
            "segment_wall_s": {str(k): [s["wall_s"] for s in v["segments"]] for k, v in timing.items()},
            "speedup": timing[1]["wall_s"] / timing[args.workers]["wall_s"],
        }
    (out / "scale_out.json").write_text(json.dumps(result, indent=2))
    (out / "scale_out.md").write_text(report(result))
    (out / "scale_out.partial.json").unlink(missing_ok=True)
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
    gop = " ".join(r.get("gop_args") or []) or "encoder default GOP"
    if any("single_keys" in p for p in r["points"]):
        lines += ["", f"Key frames (presentation index, share of video bytes), {gop}:"]
    for p in r["points"]:
        if "single_keys" not in p:
            continue
        row = [f"single {p['single_keys']['key_frames']} {100 * p['single_keys']['key_bytes_share']:.1f} %",
               f"joined {p['joined_keys']['key_frames']} {100 * p['joined_keys']['key_bytes_share']:.1f} %"]
        if "baseline_keys" in p or "baseline_kbps" in p:
            k = p.get("baseline_keys")
            where = (f"{k['key_frames']} {100 * k['key_bytes_share']:.1f} %" if k
                     else f"(from {p['baseline_from']})")
            row.append(f"default-GOP single {where} ({p['baseline_kbps']:.1f} kbps)")
        lines.append(f"- CRF {p['crf']:g}: " + "; ".join(row) + f"; equal: {p['key_frames_equal']}")
    lines.append("")
    for key in sorted(k for k in r if k.startswith("bd_rate_")):
        test, ref = key[len("bd_rate_"):].split("_vs_")
        ref = "default-GOP single" if ref == "baseline" else ref
        lines.append(f"BD-rate {test} vs {ref} (%): " + ", ".join(
            f"{m} {v['percent']:+.3f}" for m, v in r[key].items()))
    w = r.get("workers")
    if w:
        lines += ["", f"--workers at CRF {w['crf']:g}: wall " + ", ".join(
            f"{k} worker(s) {v:.1f} s" for k, v in w["wall_s"].items()) + f"; speed-up {w['speedup']:.2f}x",
            "segment wall times: " + "; ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)} s"
                                               for k, v in w["segment_wall_s"].items())]
    return "\n".join(lines) + "\n"

