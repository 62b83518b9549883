"""`preedit run IN -o OUT --workers K`: K segment processes against one server, then a join.

```
 preedit run IN -o OUT --workers K
   ├─ one Triton (embedded, or --url)                          ┌─ preedit run IN -o part0 --segment 0/K --url U
   ├─ K child processes (argument lists, no shell) ────────────┼─ …
   │                                                           └─ preedit run IN -o partK-1 --segment K-1/K --url U
   └─ preedit join part0 … partK-1 -o OUT   (stream copy, the title's audio from IN)
```
This is the same unit of work a Kubernetes Indexed Job runs (deploy/k8s/), on one machine. The
parts go to a hidden folder beside OUT, removed after a successful join and kept (with each
worker's log) when a worker fails. Ctrl-C interrupts every worker (each finalises its part).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from preedit.codecs import PARAMS_OPTION
from preedit.errors import InputError, PreeditError, UsageError
from preedit.paths import model_repository
from preedit.serve import ServerConfig, TritonServer, child_env

log = logging.getLogger(__name__)


def segment_command(source: str, output: str, index: int, count: int, passthrough: List[str],
                    python: Optional[str] = None) -> List[str]:
    """The argument list of one segment worker (the same command an Indexed Job pod runs)."""
    return [python or sys.executable, "-m", "preedit", "run", str(source), "-o", str(output),
            "--segment", f"{index}/{count}", *passthrough]


def passthrough_args(args, url: Optional[str]) -> List[str]:
    """The encoder / pre-editor options of this run, for its workers."""
    out: List[str] = ["--codec", args.codec]
    for flag, value in (("--crf", args.crf), ("--qp", args.qp), ("--bitrate", args.bitrate),
                        ("--preset", args.preset), ("--model", args.model), ("--keyint", args.keyint),
                        ("--maxrate", args.maxrate), ("--bufsize", args.bufsize), ("--tune", args.tune),
                        ("--bit-depth", getattr(args, "bit_depth", None)),
                        *((f"--{o}", getattr(args, o.replace("-", "_"), None)) for o in PARAMS_OPTION.values())):
        if value is not None:
            out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if getattr(args, "closed_gop", False):
        out.append("--closed-gop")
    if args.deterministic:
        out.append("--deterministic")
    if args.bypass:
        out.append("--bypass")
    elif url:
        out += ["--url", url]
    if getattr(args, "transport", "shm") != "shm" and not args.bypass:
        out += ["--transport", args.transport]
    out += ["--device", args.device, "--inflight", str(args.inflight),
            "--request-timeout-s", f"{args.request_timeout_s:g}",
            "--connect-timeout-s", f"{args.connect_timeout_s:g}", "--queue-size", str(args.queue_size)]
    if getattr(args, "frames_per_request", 1) > 1:
        out += ["--frames-per-request", str(args.frames_per_request)]
    return out


def _check(args) -> None:
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.segment is not None:
        raise UsageError("give --workers or --segment, not both")
    if len(args.inputs) != 1 or len(args.output) != 1:
        raise UsageError("--workers takes one input file and one output file")
    if args.demo or args.realtime or args.latency_budget_ms is not None or args.max_frames is not None:
        raise UsageError("--workers is for whole files: drop --demo/--realtime/--latency-budget-ms/--max-frames")
    if args.metrics_port is not None:
        raise UsageError("--workers: each worker is its own process; use the server's metrics (--triton-metrics-port)")
    if "://" in args.output[0] or args.output[0].lower().endswith(".m3u8"):
        raise UsageError("--workers writes one file (joined at the end), not a live output; drop --workers")
    src, dst = Path(args.inputs[0]), Path(args.output[0])
    if not src.is_file():
        raise InputError(f"--workers needs a file input; not found: {src}")
    if src.resolve() == dst.resolve():
        raise UsageError(f"output would overwrite the input: {dst}")


def run_workers(args) -> int:
    from preedit.client.encode import container_for  # lazy: pulls av
    from preedit.client.join import join  # lazy: pulls av
    from preedit.client.run import DEFAULT_MODEL, DETERMINISTIC_MODEL, _check_model_in_repository  # lazy: pulls av
    from preedit.client.segment import plan_segments, index_source  # lazy: pulls av

    _check(args)
    source, output = args.inputs[0], args.output[0]
    container_for(output, args.codec)
    k = args.workers
    if getattr(args, "closed_gop", False) and args.keyint is None:
        raise UsageError("--closed-gop needs --keyint FRAMES (the fixed GOP length)")
    gop = args.keyint if getattr(args, "closed_gop", False) else None
    plan_segments(index_source(source), k, source, gop)  # fails early when the title has too few GOPs
    out_dir = Path(output).resolve().parent
    if not out_dir.is_dir():
        raise UsageError(f"output folder does not exist: {out_dir}")
    parts_dir = Path(tempfile.mkdtemp(prefix=f".{Path(output).name}.parts-", dir=out_dir))
    ext = Path(output).suffix if Path(output).suffix.lower() in (".mp4", ".mkv") else ".mkv"
    parts = [parts_dir / f"part{i:04d}{ext}" for i in range(k)]
    server = None
    ok = False
    t0 = time.monotonic()
    try:
        url = args.url
        if not args.bypass and url is None:
            model = DETERMINISTIC_MODEL if args.deterministic else (args.model or DEFAULT_MODEL)
            repo = args.model_repository or model_repository()
            _check_model_in_repository(repo, model)
            server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0,
                                               metrics_port=args.triton_metrics_port, models=(model,)))
            server.start()
            server.wait_model_ready(model)
            url = server.grpc_url
            log.info("embedded Triton for %d workers: gRPC %s, metrics %s", k, url, server.metrics_url)
        common = passthrough_args(args, url)
        procs = []
        for i, part in enumerate(parts):
            cmd = segment_command(source, str(part), i, k, common +
                                  ["--summary-json", str(part) + ".summary.json"])
            logf = open(str(part) + ".log", "wb")
            procs.append((subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                           env=child_env(url)), logf, part))  # key of a locked server
        try:
            codes = [p.wait() for p, _, _ in procs]
        except KeyboardInterrupt:
            for p, _, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p, _, _ in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            raise
        finally:
            for _, logf, _ in procs:
                logf.close()
        t_workers = time.monotonic() - t0
        failed = [(i, c) for i, c in enumerate(codes) if c != 0]
        if failed:
            i, code = failed[0]
            tail = Path(str(parts[i]) + ".log").read_text(errors="replace").strip().splitlines()[-1:]
            raise PreeditError(f"{len(failed)} of {k} workers failed (worker {i} exit {code}: "
                               f"{tail[0] if tail else 'no output'}); parts and logs kept in {parts_dir}")
        result = join([str(p) for p in parts], output, audio_from=source)
        wall = time.monotonic() - t0
        summaries = [json.loads(Path(str(p) + ".summary.json").read_text()) for p in parts]
        for i, s in enumerate(summaries):
            print(f"  segment {i}/{k}: {s['frames']} frames in {s['wall_s']:.2f} s", flush=True)
        print(f"{k} workers: {result['frames']} frames -> {output} in {wall:.2f} s "
              f"(workers {t_workers:.2f} s incl. server start, join {wall - t_workers:.2f} s), "
              f"{result['frames'] / wall:.1f} fps", flush=True)
        if args.summary_json:
            args.summary_json.write_text(json.dumps({"workers": k, "wall_s": wall, "workers_s": t_workers,
                                                     "frames": result["frames"], "output": output,
                                                     "segments": summaries}, indent=2))
        ok = True
        return 0
    finally:
        if server is not None:
            server.stop()
        if ok:
            shutil.rmtree(parts_dir, ignore_errors=True)
