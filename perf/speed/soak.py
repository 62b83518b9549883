"""Bounded soak: N live streams × D seconds through ONE Triton server, with a latency budget.

```
 synthetic clips (testsrc2, D s at FPS) ──> `preedit run IN x N -o OUT x N --url ... --realtime
    --latency-budget-ms B` (one client process, N pipelines) ──> one embedded Triton server
 sampler (1 s): RSS of the client process and of tritonserver + its python-backend stubs (/proc)
 ──> per stream: frames in (decoded from the input) = frames out (decoded from the output),
     output timestamps strictly increasing; RSS growth from the end of warm-up to the end
```
Pass: every stream loses and reorders no frame, the client exits 0, and the client's and the
server's RSS grow less than `--max-rss-growth` (10 %) between warm-up and the end.
`preedit bench soak --streams 4 --duration-s 60` runs the issue-12 soak.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import av

from preedit.errors import ServerError, UsageError
from preedit.paths import model_repository
from preedit.perf.speed.analyzer_data import parse_resolution
from preedit.perf.speed.report import append_results, command_line, results_section, simple_table
from preedit.quality.ffmpeg import ffmpeg_exe, run_command
from preedit.serve import ServerConfig, TritonServer, child_env, descendants

log = logging.getLogger(__name__)

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_kb(pid: int) -> int:
    """RSS of `pid` and its descendants, in KiB (shared pages counted once per process)."""
    return sum(rss_kb(p) for p in descendants(pid))


def growth(first: int, last: int) -> float:
    """Relative growth `last / first - 1` (pure; 0 when `first` is 0)."""
    return last / first - 1.0 if first > 0 else 0.0


def video_pts(path: Path) -> List[float]:
    """Presentation timestamps (s) of every decoded video frame of `path`, in decode output order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * f.time_base) if f.pts is not None else float("nan")
                for f in container.decode(stream)]


def order_faults(pts: Sequence[float]) -> int:
    """Frames whose timestamp is missing or not after the previous one (pure)."""
    bad, last = 0, float("-inf")
    for cur in pts:
        if cur > last:
            last = cur
        else:  # repeated, backward, or NaN (compares False)
            bad += 1
    return bad


def make_source(path: Path, width: int, height: int, fps: int, duration_s: float) -> Path:
    """A synthetic H.264 clip (FFmpeg `testsrc2`, moving content), exactly `fps * duration_s` frames."""
    frames = int(round(fps * duration_s))
    run_command([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                 f"testsrc2=size={width}x{height}:rate={fps}", "-frames:v", str(frames),
                 "-c:v", "libx264", "-preset", "ultrafast", "-g", str(2 * fps), "-pix_fmt", "yuv420p", str(path)],
                what="synthetic soak source")
    return path


@dataclass
class SoakResult:
    """What the soak measured, per stream and for the two processes."""

    streams: List[Dict[str, object]] = field(default_factory=list)
    client_rc: int = 0
    client_stderr: str = ""
    wall_s: float = 0.0
    rss_kb: Dict[str, Dict[str, int]] = field(default_factory=dict)  # process -> {warm, end, peak}
    samples: int = 0

    @property
    def frames_ok(self) -> bool:
        return self.client_rc == 0 and bool(self.streams) and all(
            s["frames_in"] == s["frames_out"] and s["order_faults"] == 0 for s in self.streams)

    def rss_growth(self, proc: str) -> float:
        r = self.rss_kb.get(proc, {})
        return growth(r.get("warm", 0), r.get("end", 0))


def soak(url: str, server_pid: Optional[int], sources: Sequence[Path], out_dir: Path, *, model: str = "preedit",
         latency_budget_ms: float = 100.0, warmup_s: float = 10.0, sample_s: float = 1.0,
         timeout_s: float = 900.0) -> SoakResult:
    """Run `preedit run` on every source at once (`--realtime`) against `url` and check each stream.

    RSS is sampled every `sample_s`: "warm" is the first sample at or after `warmup_s` from the
    client's start, "end" the last one taken while the client was alive."""
    outputs = [out_dir / f"stream{k}.mp4" for k in range(len(sources))]
    summary = out_dir / "summary.json"
    cmd = [sys.executable, "-m", "preedit", "run", *map(str, sources), *[a for o in outputs for a in ("-o", str(o))],
           "--url", url, "--model", model, "--codec", "h264", "--preset", "ultrafast", "--realtime",
           "--latency-budget-ms", f"{latency_budget_ms:g}", "--summary-json", str(summary)]
    result = SoakResult()
    procs = {"client": None, "server": server_pid}
    stderr_path = out_dir / "client.stderr"
    with open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=child_env(url))
        procs["client"] = child.pid
        rss: Dict[str, Dict[str, int]] = {p: {"warm": 0, "end": 0, "peak": 0} for p, pid in procs.items() if pid}
        try:
            while child.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    child.kill()
                    raise ServerError(f"soak client still running after {timeout_s:.0f} s")
                now = {p: (rss_kb(pid) if p == "client" else tree_rss_kb(pid)) for p, pid in procs.items() if pid}
                if child.poll() is not None:
                    break  # gone while sampling: this sample may be partial
                result.samples += 1
                for p, kb in now.items():
                    if kb <= 0:
                        continue
                    if time.monotonic() - t0 >= warmup_s and not rss[p]["warm"]:
                        rss[p]["warm"] = kb
                    rss[p]["end"] = kb
                    rss[p]["peak"] = max(rss[p]["peak"], kb)
                time.sleep(sample_s)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
    result.wall_s = time.monotonic() - t0
    result.rss_kb = rss
    result.client_rc = child.returncode
    result.client_stderr = stderr_path.read_text(errors="replace")[-2000:]
    payload = json.loads(summary.read_text()) if summary.is_file() else {}
    summaries = payload.get("streams", [payload] if payload else [])
    for k, (src, dst) in enumerate(zip(sources, outputs)):
        pts_in = video_pts(src)
        pts_out = video_pts(dst) if dst.is_file() else []
        s = summaries[k] if k < len(summaries) else {}
        result.streams.append({"stream": k, "frames_in": len(pts_in), "frames_out": len(pts_out),
                               "order_faults": order_faults(pts_out),
                               "pts_match": len(pts_in) == len(pts_out) and all(
                                   abs(a - b) < 1e-3 for a, b in zip(sorted(pts_in), pts_out)),
                               "bypassed": s.get("bypassed_frames"),
                               "preedit_p99_ms": (s.get("latency_ms", {}).get("preedit", {}) or {}).get("p99_ms"),
                               "error": s.get("error")})
    return result


def report_table(res: SoakResult) -> str:
    """Markdown: one row per stream, then one per process (pure)."""
    rows = [[s["stream"], s["frames_in"], s["frames_out"], s["order_faults"], "yes" if s["pts_match"] else "no",
             s["bypassed"], "-" if s["preedit_p99_ms"] is None else f"{s['preedit_p99_ms']:.1f}"]
            for s in res.streams]
    streams = simple_table(["stream", "frames in", "frames out", "order faults", "pts = input", "bypassed (budget)",
                            "pre-edit p99 ms"], rows)
    procs = simple_table(["process", "RSS after warm-up MiB", "RSS at end MiB", "peak MiB", "growth"],
                         [[p, f"{r['warm'] / 1024:.1f}", f"{r['end'] / 1024:.1f}", f"{r['peak'] / 1024:.1f}",
                           f"{100 * res.rss_growth(p):+.1f} %"] for p, r in res.rss_kb.items()])
    return f"{streams}\n\n{procs}\n"


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--streams", type=int, default=4, help="live streams through the one server (default 4)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of each stream (default 60)")
    parser.add_argument("--resolution", default="320x240", help="synthetic source size (default 320x240)")
    parser.add_argument("--fps", type=int, default=25, help="synthetic source frame rate (default 25)")
    parser.add_argument("--clip", type=Path, default=None,
                        help="use this clip for every stream instead of the synthetic source")
    parser.add_argument("--latency-budget-ms", type=float, default=100.0,
                        help="per-frame pre-edit budget of the client (default 100)")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="RSS baseline taken this long after start")
    parser.add_argument("--max-rss-growth", type=float, default=0.10, help="pass bound on RSS growth (default 0.10)")
    parser.add_argument("--model", default="preedit")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="append the tables to this results log (e.g. perf/results/soak.md)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args(argparse.ArgumentParser(prog="preedit bench soak",
                                              description=__doc__.split("\n")[0])).parse_args(argv)
    if args.streams < 1 or not args.duration_s > 0 or args.fps < 1 or not args.latency_budget_ms > 0:
        raise UsageError("--streams and --fps must be >= 1, --duration-s and --latency-budget-ms > 0")
    width, height = parse_resolution(args.resolution)
    with tempfile.TemporaryDirectory(prefix="preedit-soak-") as tmp:
        tmp_path = Path(tmp)
        if args.clip is not None:
            sources = [args.clip] * args.streams
        else:
            one = make_source(tmp_path / "source.mp4", width, height, args.fps, args.duration_s)
            sources = [one] * args.streams
        server = TritonServer(ServerConfig(model_repository=args.model_repository or model_repository(),
                                           http_port=0, grpc_port=0, metrics_port=0, models=(args.model,)))
        server.start()
        try:
            server.wait_model_ready(args.model)
            res = soak(server.grpc_url, server.proc.pid, sources, tmp_path, model=args.model,
                       latency_budget_ms=args.latency_budget_ms, warmup_s=args.warmup_s)
        finally:
            server.stop()
    table = report_table(res)
    rss_ok = all(res.rss_growth(p) < args.max_rss_growth for p in res.rss_kb) and \
        all(r["warm"] for r in res.rss_kb.values())
    verdict = (f"frames: {'OK' if res.frames_ok else 'FAULT'} (client exit {res.client_rc}); RSS growth < "
               f"{100 * args.max_rss_growth:g} %: {'OK' if rss_ok else 'FAULT'}; {res.samples} samples, "
               f"{res.wall_s:.1f} s")
    what = (f"{args.streams} streams x {args.duration_s:g} s of "
            + (f"`{args.clip.name}`" if args.clip else f"synthetic testsrc2 {width}x{height} at {args.fps} fps")
            + f", `--realtime --latency-budget-ms {args.latency_budget_ms:g}`, one client process, one server")
    print(f"soak: {what}\n{table}\n{verdict}")
    if not res.frames_ok:
        print(res.client_stderr, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"what": what, "verdict": verdict, "streams": res.streams,
                                         "rss_kb": res.rss_kb, "client_rc": res.client_rc,
                                         "wall_s": res.wall_s}, indent=2))
    if args.results_md:
        append_results(results_section("Soak (issue 12)", command_line("preedit bench soak", argv), table + "\n" + verdict,
                                       facts={"Setup": what + "; RSS from /proc (client process; tritonserver + "
                                                            "python-backend stubs), warm = first sample after "
                                                            f"{args.warmup_s:g} s, end = last sample before exit"}),
                       args.results_md)
    return 0 if res.frames_ok and rss_ok else 1


if __name__ == "__main__":
    from preedit.cli import script_main

    raise SystemExit(script_main("soak", main))
