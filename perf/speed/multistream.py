"""Multi-stream benchmark: 1, 2, 4, 8 streams of real frames against one Triton server.

```
 stream k (thread) ──real NV12 frames──> TritonTransport (client/, gRPC + system-shm ring, `inflight`
 stream k+1        ──...                  requests in flight per stream)
            one Triton server: the dynamic batcher batches frames ACROSS streams
 ──> aggregate fps, per-frame round-trip latency p50/p99 (ms), server-side avg batch size
```
Two modes:
- `serving` (default): frames are pre-decoded, so the figure is what the server and the client
  transport sustain (decode and encode excluded);
- `pipeline`: `preedit run IN x N -o OUT x N --url ...` (client/, decode → Triton → encode per stream),
  reading its per-stream summaries.
`preedit bench multistream --streams 1,2,4,8 --resolution 720p` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from preedit.errors import ServerError, UsageError
from preedit.paths import model_repository
from preedit.perf.speed.analyzer_data import default_clip, load_nv12_frames, parse_resolution, resolution_label
from preedit.perf.speed.cli import parse_int_list
from preedit.perf.speed.report import append_results, command_line, results_section, simple_table
from preedit.serve import ServerConfig, TritonServer, auth_headers, child_env

log = logging.getLogger(__name__)

MODES = ("serving", "pipeline")


@dataclass
class StreamRun:
    """What one stream measured: per-frame round-trip latencies and its active window."""

    latencies_s: List[float] = field(default_factory=list)
    first_send_s: float = 0.0
    last_done_s: float = 0.0
    errors: int = 0

    @property
    def frames(self) -> int:
        return len(self.latencies_s)


def drive_transport(transport, frames: np.ndarray, duration_s: float, inflight: int,
                    stream_fps: Optional[float] = None, start_at_s: Optional[float] = None) -> StreamRun:
    """Send frames through a `PreEditor` transport (`submit(nv12) -> Future`) for `duration_s`.

    Closed loop with at most `inflight` requests outstanding, or paced at `stream_fps` (a live
    stream) when given. Latency is measured from just before `submit` (the input copy into
    shared memory included) to the result callback.

    Args:
        transport: object with `submit(nv12: uint8 [H*3/2, W]) -> Future`.
        frames: uint8 `[n, H*3/2, W]` frames, sent round-robin.
        duration_s: stop sending after this long; outstanding requests are awaited.
        inflight: requests outstanding at most.
        stream_fps: pace sending at this rate (None: as fast as the window allows).
        start_at_s: `time.perf_counter()` to start at (aligns several streams).
    """
    run = StreamRun()
    window = threading.Semaphore(inflight)
    lock = threading.Lock()
    pending: set = set()  # outstanding futures only: a done one (and its frame) is dropped at once,
    # so a run's memory stays at `inflight` frames (holding every result faulted in a fresh frame each time)
    if start_at_s is not None:
        time.sleep(max(0.0, start_at_s - time.perf_counter()))
    t_start = time.perf_counter()
    run.first_send_s = t_start
    i = 0
    while True:
        now = time.perf_counter()
        if now - t_start >= duration_s:
            break
        if stream_fps:
            due = t_start + i / stream_fps
            if due > now:
                time.sleep(due - now)
        window.acquire()
        t0 = time.perf_counter()

        def _done(fut, t0=t0):
            t1 = time.perf_counter()
            with lock:
                if fut.exception() is None:
                    run.latencies_s.append(t1 - t0)
                    run.last_done_s = max(run.last_done_s, t1)
                else:
                    run.errors += 1
                pending.discard(fut)
            window.release()

        fut = transport.submit(frames[i % len(frames)])
        with lock:
            pending.add(fut)
        fut.add_done_callback(_done)
        i += 1
    with lock:
        left = list(pending)
    for fut in left:
        try:
            fut.result(timeout=120)
        except Exception:  # noqa: BLE001 - counted in the callback
            pass
    return run


def latency_percentiles_ms(latencies_s: Sequence[float]) -> Dict[str, float]:
    """p50/p90/p99 and mean of latencies given in seconds, in ms (pure; zeros when empty)."""
    if not len(latencies_s):
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    arr = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "p99_ms": float(np.percentile(arr, 99)), "mean_ms": float(arr.mean())}


def aggregate(runs: Sequence[StreamRun]) -> Dict[str, float]:
    """Aggregate fps over the common window and latency percentiles over all frames (pure)."""
    frames = sum(r.frames for r in runs)
    if frames == 0:
        return {"frames": 0, "aggregate_fps": 0.0, "per_stream_fps": 0.0, "errors": sum(r.errors for r in runs),
                **latency_percentiles_ms([])}
    t0 = min(r.first_send_s for r in runs if r.frames)
    t1 = max(r.last_done_s for r in runs)
    fps = frames / (t1 - t0) if t1 > t0 else 0.0
    lat = latency_percentiles_ms([x for r in runs for x in r.latencies_s])
    return {"frames": frames, "aggregate_fps": fps, "per_stream_fps": fps / len(runs),
            "errors": sum(r.errors for r in runs), **lat}


def batch_totals(stats: dict, model: str) -> Dict[str, int]:
    """Inferences and executions of `model` from Triton's statistics JSON, both read from its
    per-batch statistics (pure).

    Triton counts a batch's size and the execution in one locked update, so one snapshot of these is
    consistent; the model-level `inference_count` is updated per request in another call, before
    the batch's (pairing it with the execution count, as the Prometheus counters do, can race)."""
    inferences = executions = 0
    for m in stats.get("model_stats", []):
        if m.get("name") != model:
            continue
        for batch in m.get("batch_stats", []):
            n = int(batch.get("compute_infer", {}).get("count", 0))
            inferences += int(batch.get("batch_size", 0)) * n
            executions += n
    return {"inferences": inferences, "executions": executions}


def read_batch_totals(url: str, model: str, at_least: Optional[Dict[str, int]] = None, inferences: int = 0,
                      wait_s: float = 30.0) -> Optional[Dict[str, int]]:
    """`batch_totals` of `model` on the server at gRPC `url` (keyed statistics API: the key of a server
    this process started, `PREEDIT_TRITON_KEY` or the key file; None without one).

    With `at_least`, wait until the batch statistics count `inferences` more than it: the python
    backend reports a batch's statistics after its responses are sent, so a read right after the
    client ends can miss the last batches. Not reached within `wait_s`: ServerError, never a
    silently partial figure."""
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                stats = client.get_inference_statistics(model, as_json=True, headers=auth_headers(url),
                                                        client_timeout=10.0)
            except InferenceServerException as exc:
                log.warning("no batch statistics from %s (%s); avg batch not reported", url, exc.message())
                return None
            totals = batch_totals(stats, model)
            if at_least is None or totals["inferences"] - at_least["inferences"] >= inferences:
                return totals
            if time.monotonic() > deadline:
                raise ServerError(f"Triton's batch statistics of {model!r} count "
                                  f"{totals['inferences'] - at_least['inferences']} of {inferences} inferences "
                                  f"after {wait_s:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()


def avg_batch_size(before: Optional[Dict[str, int]], after: Optional[Dict[str, int]]) -> float:
    """Inferences per model execution between two `batch_totals` snapshots (pure; 0 when unknown)."""
    if not before or not after:
        return 0.0
    execs = after["executions"] - before["executions"]
    infers = after["inferences"] - before["inferences"]
    return infers / execs if execs > 0 else 0.0


def run_serving(url: str, model: str, frames: np.ndarray, n_streams: int, duration_s: float, inflight: int,
                stream_fps: Optional[float] = None) -> Dict[str, float]:
    """`n_streams` concurrent transports on one server; returns `aggregate(...)` plus `avg_batch_size`."""
    from preedit.client.transport import TritonTransport  # lazy: pulls prometheus_client

    shape = tuple(frames.shape[1:])
    transports = [TritonTransport(url, model, shape, n_slots=inflight, headers=auth_headers(url))
                  for _ in range(n_streams)]
    try:
        # Warm-up: one frame per stream, so first-request costs stay out of the window.
        for t in transports:
            t.submit(frames[0]).result(timeout=120)
        before = read_batch_totals(url, model)
        runs: List[Optional[StreamRun]] = [None] * n_streams
        start_at = time.perf_counter() + 0.2

        def _one(k: int) -> None:
            runs[k] = drive_transport(transports[k], frames, duration_s, inflight, stream_fps, start_at)

        threads = [threading.Thread(target=_one, args=(k,), daemon=True) for k in range(n_streams)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        done = sum(r.frames for r in runs if r is not None)
        after = read_batch_totals(url, model, at_least=before, inferences=done) if before else None
    finally:
        for t in transports:
            t.close()
    result = aggregate([r for r in runs if r is not None])
    result["avg_batch_size"] = avg_batch_size(before, after)
    result["streams"] = n_streams
    return result


def run_pipeline_streams(url: str, model: str, clip: Path, n_streams: int, codec: str = "h264",
                         preset: str = "ultrafast", max_frames: Optional[int] = None,
                         timeout_s: float = 900.0) -> Dict[str, float]:
    """`preedit run` (client/) with the clip `n_streams` times against one server; parses its summaries."""
    with tempfile.TemporaryDirectory(prefix="preedit-ms-") as tmp:
        summary = Path(tmp) / "summary.json"
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        outputs = [a for k in range(n_streams) for a in ("-o", str(out_dir / f"stream{k}.mp4"))]
        cmd = [sys.executable, "-m", "preedit", "run", *([str(clip)] * n_streams), *outputs, "--url", url, "--model", model, "--codec", codec, "--preset", preset, "--summary-json", str(summary)]
        if max_frames:
            cmd += ["--max-frames", str(max_frames)]
        before = read_batch_totals(url, model)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=child_env(url))  # the key: the child registers shm on a locked server
        if proc.returncode != 0 or not summary.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServerError(f"preedit run with {n_streams} streams failed (exit {proc.returncode}): {tail}")
        payload = json.loads(summary.read_text())
    streams = payload["streams"] if "streams" in payload else [payload]
    frames = sum(s["frames"] for s in streams)
    after = read_batch_totals(url, model, at_least=before, inferences=frames) if before else None
    wall = max(s["wall_s"] for s in streams) or 1e-9
    e2e = [s["latency_ms"]["end_to_end"] for s in streams]
    pre = [s["latency_ms"]["preedit"] for s in streams]
    return {"streams": n_streams, "frames": frames, "aggregate_fps": frames / wall,
            "per_stream_fps": frames / wall / n_streams,
            "p50_ms": float(np.median([x["p50_ms"] or 0 for x in pre])),
            "p99_ms": float(max(x["p99_ms"] or 0 for x in pre)),
            "e2e_p50_ms": float(np.median([x["p50_ms"] or 0 for x in e2e])),
            "e2e_p99_ms": float(max(x["p99_ms"] or 0 for x in e2e)),
            "errors": sum(1 for s in streams if s.get("error")),
            "avg_batch_size": avg_batch_size(before, after)}


def scaling_table(results: Sequence[Dict[str, float]], mode: str) -> str:
    """Markdown table of the scaling, with speed-up against one stream (pure)."""
    base = results[0]["aggregate_fps"] if results and results[0]["aggregate_fps"] > 0 else None
    header = ["streams", "aggregate fps", "per-stream fps", "speed-up vs 1", "p50 ms", "p99 ms", "avg batch"]
    if mode == "pipeline":
        header += ["end-to-end p50 ms", "end-to-end p99 ms"]
    rows = []
    for r in results:
        row = [int(r["streams"]), f"{r['aggregate_fps']:.1f}", f"{r['per_stream_fps']:.1f}",
               f"{r['aggregate_fps'] / base:.2f}x" if base else "-", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
               f"{r['avg_batch_size']:.2f}"]
        if mode == "pipeline":
            row += [f"{r['e2e_p50_ms']:.1f}", f"{r['e2e_p99_ms']:.1f}"]
        rows.append(row)
    return simple_table(header, rows)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--mode", default="serving", choices=MODES,
                        help="serving: pre-decoded frames through the client transport (default); "
                             "pipeline: full `preedit run` per stream")
    parser.add_argument("--streams", default="1,2,4,8", help="stream counts to measure (default 1,2,4,8)")
    parser.add_argument("--resolution", default="720p", help="serving mode frame size: 720p, 1080p, 2160p or WxH")
    parser.add_argument("--clip", type=Path, default=None, help="source clip (default: the shared 1080p clip)")
    parser.add_argument("--frames", type=int, default=8, help="distinct real frames per stream (serving mode)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measurement window per point (serving)")
    parser.add_argument("--inflight", type=int, default=2, help="requests in flight per stream (default 2)")
    parser.add_argument("--stream-fps", type=float, default=None,
                        help="pace each stream like a live feed at this frame rate (default: as fast as possible)")
    parser.add_argument("--max-frames", type=int, default=None, help="pipeline mode: frames per stream")
    parser.add_argument("--codec", default="h264", help="pipeline mode encoder (default h264)")
    parser.add_argument("--preset", default="ultrafast", help="pipeline mode encoder preset (default ultrafast)")
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: embedded)")
    parser.add_argument("--model", default="preedit")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="append the table to this results log (e.g. perf/results/perf.md)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args(argparse.ArgumentParser(prog="preedit bench multistream",
                                              description=__doc__.split("\n")[0])).parse_args(argv)
    counts = parse_int_list(args.streams)
    if args.inflight < 1 or args.duration_s <= 0:
        raise UsageError("--inflight must be >= 1 and --duration-s > 0")
    clip = args.clip or default_clip()
    width, height = parse_resolution(args.resolution)
    frames = load_nv12_frames(clip, width, height, args.frames) if args.mode == "serving" else None

    server = None
    url = args.url
    if url is None:
        server = TritonServer(ServerConfig(model_repository=args.model_repository or model_repository(),
                                           http_port=0, grpc_port=0, metrics_port=0))
        server.start()
        url = server.grpc_url
    results = []
    try:
        if server is not None:
            server.wait_model_ready(args.model)
        for n in counts:
            if args.mode == "serving":
                res = run_serving(url, args.model, frames, n, args.duration_s, args.inflight, args.stream_fps)
            else:
                res = run_pipeline_streams(url, args.model, clip, n, args.codec, args.preset, args.max_frames)
            log.info("%d streams: %.1f fps aggregate, p50 %.1f ms, p99 %.1f ms, batch %.2f", n,
                     res["aggregate_fps"], res["p50_ms"], res["p99_ms"], res["avg_batch_size"])
            results.append(res)
    finally:
        if server is not None:
            server.stop()
    table = scaling_table(results, args.mode)
    what = (f"{resolution_label(width, height)} real frames of `{clip.name}`, {args.inflight} in flight per stream"
            if args.mode == "serving" else f"`preedit run` of `{clip.name}` per stream, {args.codec} {args.preset}")
    pace = f", each stream paced at {args.stream_fps:g} fps" if args.stream_fps else ", closed loop"
    print(f"multi-stream ({args.mode}): {what}{pace}\n{table}")
    if args.json:
        args.json.write_text(json.dumps({"mode": args.mode, "results": results}, indent=2))
    if args.results_md:
        section = results_section(f"Multi-stream scaling ({args.mode})",
                                  command_line("preedit bench multistream", argv), table,
                                  facts={"Setup": f"{what}{pace}; one Triton server (dynamic batcher), "
                                                  "latency = client round trip per frame (shm copy in/out included); "
                                                  "avg batch = inferences / executions from Triton's per-batch statistics"})
        append_results(section, args.results_md)
    return 0


if __name__ == "__main__":
    from preedit.cli import script_main

    raise SystemExit(script_main("multistream", main))
