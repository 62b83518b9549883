"""`preedit perf`: perf_analyzer sweeps against the served pre-editor with real NV12 frames.

```
 clip ──real frames, scaled──> input-data JSON (per resolution)
 embedded Triton (or --url) <── perf_analyzer, gRPC + system shm, one run per load point
        concurrency sweep (closed loop) ──> peak fps ──> request-rate sweep (open loop, Poisson)
 ──> out/perf/<stamp>/{sweep.csv, sweep.png, sweep.md} + a section appended to perf/results/perf.md
```
Example: `preedit perf --resolution 720p --resolution 1080p --concurrency 1:8`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
from pathlib import Path
from typing import List, Optional, Sequence

from preedit.errors import ServerError, UsageError
from preedit.paths import REPO_ROOT, model_repository
from preedit.perf.speed.analyzer_data import (default_clip, load_nv12_frames, nv12_shape, parse_resolution,
                                 resolution_label, write_input_data)
from preedit.perf.speed.perf_analyzer import SHARED_MEMORY_KINDS, PerfAnalyzerConfig, PerfResult, run_perf_analyzer
from preedit.perf.speed.report import (RESULTS_MD, append_results, command_line, markdown_table,
                              plot_throughput_latency, results_section, write_csv)
from preedit.serve import PERF_ANALYZER_APIS, ServerConfig, TritonServer

log = logging.getLogger(__name__)

# Request-rate sweep as fractions of the peak closed-loop throughput ("auto").
AUTO_RATE_FRACTIONS = (0.25, 0.5, 0.75, 0.9)


def parse_int_list(text: str) -> List[int]:
    """`1:8` (1..8), `1:8:2` (1,3,5,7) or `1,2,4,8` -> sorted unique positive ints (pure)."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, end = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            values = list(range(start, end + 1, step))
        else:
            values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"{text!r} is not a list: use START:END[:STEP] or A,B,C") from None
    if not values or min(values) < 1:
        raise UsageError(f"{text!r} must list positive whole numbers")
    return sorted(set(values))


def parse_rates(text: str) -> Optional[List[float]]:
    """`auto` -> None (fractions of the peak), `none` -> [], else `5,10,20` requests/s (pure)."""
    key = text.strip().lower()
    if key == "auto":
        return None
    if key == "none":
        return []
    try:
        rates = [float(p) for p in key.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"request rates {text!r}: use auto, none or R1,R2,... (requests/s)") from None
    if not rates or min(rates) <= 0:
        raise UsageError(f"request rates {text!r} must be positive")
    return rates


def auto_rates(peak_fps: float, fractions: Sequence[float] = AUTO_RATE_FRACTIONS) -> List[float]:
    """Open-loop request rates below the measured peak throughput (pure)."""
    return sorted({round(max(0.5, peak_fps * f), 1) for f in fractions})


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clip", type=Path, default=None,
                        help="clip whose frames are sent (default: the shared 1080p edge-rotate-buck-bunny.mp4)")
    parser.add_argument("--resolution", action="append", default=[],
                        help="frame size: 720p, 1080p, 2160p or WxH (repeatable; default 720p and 1080p)")
    parser.add_argument("--frames", type=int, default=8, help="distinct real frames in the input data (default 8)")
    parser.add_argument("--concurrency", default="1:8", help="closed-loop sweep: START:END[:STEP] or A,B,C (default 1:8)")
    parser.add_argument("--request-rates", default="auto",
                        help="open-loop sweep in requests/s: auto (25/50/75/90%% of peak), none, or R1,R2,...")
    parser.add_argument("--shared-memory", default="system", choices=SHARED_MEMORY_KINDS,
                        help="system (CPU hosts, default), cuda (GPU hosts) or none")
    parser.add_argument("--measurement-interval-ms", type=int, default=4000)
    parser.add_argument("--stability-percentage", type=float, default=15.0)
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: start the embedded server)")
    parser.add_argument("--model", default="preedit", help="served model name (default preedit)")
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="repository for the embedded server (default: the project's model_repository/)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where CSV/PNG/MD go (default out/perf/<stamp>)")
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD,
                        help="results log to append the run to (default perf/results/perf.md)")
    parser.add_argument("--no-append", action="store_true", help="do not append to the results log")
    return parser


def sweep(url: str, model: str, clip: Path, resolutions: Sequence[str], frames: int, concurrency: Sequence[int],
          rates: Optional[Sequence[float]], out_dir: Path, shared_memory: str = "system",
          measurement_interval_ms: int = 4000, stability_percentage: float = 15.0,
          max_trials: int = 6) -> List[PerfResult]:
    """Concurrency sweep then request-rate sweep per resolution against a served model."""
    results: List[PerfResult] = []
    for res_text in resolutions:
        width, height = parse_resolution(res_text)
        label = resolution_label(width, height)
        data = write_input_data(load_nv12_frames(clip, width, height, frames), out_dir / f"input-data-{label}.json")
        common = dict(input_data=data, frame_shape=nv12_shape(width, height), url=url, model_name=model,
                      shared_memory=shared_memory, measurement_interval_ms=measurement_interval_ms,
                      stability_percentage=stability_percentage, max_trials=max_trials)
        points = [("concurrency", float(c)) for c in concurrency]
        done_closed: List[PerfResult] = []
        for phase in ("closed", "open"):
            if phase == "open":
                if rates is None:
                    peak = max((r.throughput_fps for r in done_closed), default=0.0)
                    points = [("request_rate", r) for r in auto_rates(peak)] if peak > 0 else []
                else:
                    points = [("request_rate", float(r)) for r in rates]
            for mode, load in points:
                cfg = PerfAnalyzerConfig(mode=mode, load=load, **common)
                stem = f"{label}-{mode}-{load:g}"
                try:
                    row = run_perf_analyzer(cfg, out_dir / "raw" / f"{stem}.csv", log_path=out_dir / "raw" / f"{stem}.log")
                except ServerError as exc:
                    log.warning("%s", exc)
                    continue
                row.resolution = label
                log.info("%s %s=%g: %.1f fps, p95 %.1f ms, batch %.2f", label, mode, load, row.throughput_fps,
                         row.p95_latency_ms, row.avg_batch_size)
                results.append(row)
                if phase == "closed":
                    done_closed.append(row)
            if phase == "closed":
                points = []
    return results


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(argv or [])
    args = setup_args(argparse.ArgumentParser(prog="preedit perf", description=__doc__.split("\n")[0])).parse_args(argv)
    resolutions = args.resolution or ["720p", "1080p"]
    for res in resolutions:
        parse_resolution(res)
    concurrency = parse_int_list(args.concurrency)
    rates = parse_rates(args.request_rates)
    clip = args.clip or default_clip()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out_dir or REPO_ROOT / "out" / "perf" / stamp
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)

    server = None
    url = args.url
    if url is None:
        # perf_analyzer over gRPC sends no headers: model-config, shm, statistics unkeyed here.
        server = TritonServer(ServerConfig(model_repository=args.model_repository or model_repository(),
                                           http_port=0, grpc_port=0, metrics_port=0,
                                           unkeyed_apis=PERF_ANALYZER_APIS))
        server.start()
        url = server.grpc_url
    try:
        if server is not None:
            server.wait_model_ready(args.model)
        results = sweep(url, args.model, clip, resolutions, args.frames, concurrency, rates, out_dir,
                        shared_memory=args.shared_memory, measurement_interval_ms=args.measurement_interval_ms,
                        stability_percentage=args.stability_percentage, max_trials=args.max_trials)
    finally:
        if server is not None:
            server.stop()
    if not results:
        raise ServerError(f"no perf_analyzer point succeeded; logs in {out_dir / 'raw'}")

    csv_path = write_csv(results, out_dir / "sweep.csv")
    png_path = plot_throughput_latency(results, out_dir / "sweep.png", title=f"{args.model} on Triton ({clip.name})")
    table = markdown_table(results)
    (out_dir / "sweep.md").write_text(table)
    print(table)
    print(f"CSV {csv_path}\nplot {png_path}")
    if not args.no_append:
        section = results_section(
            "perf_analyzer sweep", command_line("preedit perf", argv), table,
            facts={"Setup": f"model `{args.model}`, gRPC + {args.shared_memory} shared memory, batch-1 requests "
                            f"(server-side dynamic batching), {args.frames} real frames of `{clip.name}` scaled "
                            f"to each size; latencies are client-side; queue/compute are server averages",
                   "Files": f"`{csv_path}`, `{png_path}`"})
        print(f"appended to {append_results(section, args.results_md)}")
    return 0
