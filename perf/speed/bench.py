"""`preedit bench`: pre-editor speed side by side with the encoder it sits in front of.

```
 the same real 1080p frames (NV12) ──> 1. in-process   ONNX Runtime, the served model.onnx, same threads
                                   ──> 2. Triton       client transport, gRPC + system-shm ring
                                   ──> 3. pipeline     `preedit run` (decode → Triton → libx264 medium)
                                   ──> 4. libx264      `medium` encode of the frames (PyAV), no pre-edit
 ──> one table: fps, ms/frame, ratio to libx264 medium; Triton overhead vs in-process
```
Goals (issue 2, issue 6): in-process ≥ 4x libx264 medium; Triton costs ≤ 10% of in-process fps.
In-process, Triton and libx264 rows run interleaved in `--rounds` rounds on the same frames, so a
load change on a shared machine hits them alike; the pipeline row runs after them.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from preedit.engines import OrtEngine
from preedit.errors import ModelError, ServerError, UsageError
from preedit.paths import model_repository
from preedit.perf.speed.analyzer_data import default_clip, load_nv12_frames, parse_resolution, resolution_label
from preedit.perf.speed.report import append_results, command_line, results_section, simple_table
from preedit.serve import ServerConfig, TritonServer, auth_headers, child_env
from preedit.spec import DEFAULT_QP

log = logging.getLogger(__name__)

ROWS = ("inprocess", "triton", "pipeline", "x264")


@dataclass
class BenchRow:
    """One measured path: frames processed, wall time, fps."""

    name: str
    what: str
    frames: int
    wall_s: float
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1e3 * self.wall_s / self.frames if self.frames else 0.0


def served_intra_op_threads(model_dir: Path) -> int:
    """`intra_op_threads` the served model uses (config.pbtxt parameter; 0 = ORT default)."""
    from preedit.export import read_model_config  # lazy: pulls torch

    config = read_model_config(model_dir / "config.pbtxt")
    value = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0")
    return int(value)


class InProcessRunner:
    """Batch-1 ONNX Runtime inference with the session options of the served python-backend model.

    Args:
        onnx_path: the served `model.onnx`.
        frames: uint8 NV12 `[n, H*3/2, W]`, sent round-robin.
        intra_op_threads: ORT intra-op threads (0 = ORT default, as in the served config).
    """

    def __init__(self, onnx_path: Path, frames: np.ndarray, intra_op_threads: int = 0,
                 qp: float = DEFAULT_QP) -> None:
        self.engine = OrtEngine(onnx_path, threads=intra_op_threads)
        self.qp = np.full((1, 1), qp, dtype=np.float32)
        self.frames = frames
        self.intra_op_threads = intra_op_threads
        self.index = 0
        self._one()  # warm-up (allocations, first-run kernels)

    def _one(self) -> None:
        self.engine.run(self.frames[self.index % len(self.frames)][None], self.qp)
        self.index += 1

    def run(self, duration_s: float) -> tuple:
        """Frames done and wall seconds over about `duration_s`."""
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
            self._one()
            n += 1
        return n, time.perf_counter() - t0


class TritonRunner:
    """Frames through the client transport (`client/transport.py`: gRPC + system-shm ring)."""

    def __init__(self, url: str, model: str, frames: np.ndarray, inflight: int) -> None:
        from preedit.client.transport import TritonTransport  # lazy: pulls tritonclient

        self.frames = frames
        self.inflight = inflight
        self.transport = TritonTransport(url, model, tuple(frames.shape[1:]), n_slots=inflight,
                                         headers=auth_headers(url))
        self.transport.submit(frames[0]).result(timeout=120)  # warm-up

    def run(self, duration_s: float) -> tuple:
        from preedit.perf.speed.multistream import drive_transport  # lazy: pulls tritonclient

        result = drive_transport(self.transport, self.frames, duration_s, self.inflight)
        if result.errors:
            raise ServerError(f"{result.errors} requests failed during the Triton benchmark")
        return result.frames, result.last_done_s - result.first_send_s

    def close(self) -> None:
        self.transport.close()


def build_x264_settings(preset: str = "medium", crf: int = 23) -> Dict[str, str]:
    """libx264 private options for the reference encode (pure)."""
    return {"preset": preset, "crf": str(crf)}


def encode_x264(frames: np.ndarray, fps: float = 24.0, preset: str = "medium", crf: int = 23) -> tuple:
    """libx264 encode of `frames` (uint8 NV12 `[n, H*3/2, W]`) with PyAV, flush included.

    Returns:
        (frames, wall seconds, encoded bytes).
    """
    import av  # lazy: av

    n, h3, w = frames.shape
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = w, h3 * 2 // 3
    ctx.pix_fmt = "nv12"  # libx264 takes NV12 directly: no conversion in the timed loop
    ctx.time_base = Fraction(1, int(round(fps)))
    ctx.framerate = Fraction(int(round(fps)))
    ctx.options = build_x264_settings(preset, crf)
    out_bytes = 0
    t0 = time.perf_counter()
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(frames[i], format="nv12")
        frame.pts = i
        out_bytes += sum(p.size for p in ctx.encode(frame))
    out_bytes += sum(p.size for p in ctx.encode(None))
    return n, time.perf_counter() - t0, out_bytes


def bench_pipeline(url: str, model: str, clip: Path, preset: str = "medium", max_frames: Optional[int] = None,
                   timeout_s: float = 900.0) -> BenchRow:
    """`preedit run CLIP -o tmp.mp4 --codec h264 --preset medium --url URL` (client/); its own fps."""
    with tempfile.TemporaryDirectory(prefix="preedit-bench-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "preedit", "run", str(clip), "-o", str(Path(tmp) / "out.mp4"),
               "--url", url, "--model", model, "--codec", "h264", "--preset", preset,
               "--summary-json", str(summary)]
        if max_frames:
            cmd += ["--max-frames", str(max_frames)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=child_env(url))
        if proc.returncode != 0 or not summary.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServerError(f"preedit run failed (exit {proc.returncode}): {tail}")
        data = json.loads(summary.read_text())
    return BenchRow("pipeline", f"full pipeline (`preedit run`: PyAV decode → Triton → libx264 `{preset}`)",
                    int(data["frames"]), float(data["wall_s"]),
                    note=f"end-to-end p50 {data['latency_ms']['end_to_end']['p50_ms']:.0f} ms")


def bench_table(rows: List[BenchRow]) -> str:
    """Side-by-side Markdown table with the ratio to libx264 medium (pure)."""
    ref = next((r.fps for r in rows if r.name == "x264"), None)
    body = [[r.what, f"{r.fps:.1f}", f"{r.ms_per_frame:.1f}", f"{r.fps / ref:.2f}x" if ref else "-",
             str(r.frames), r.note] for r in rows]
    return simple_table(["path", "fps", "ms/frame", "vs libx264 medium", "frames", "note"], body)


def bench_verdicts(rows: List[BenchRow]) -> List[str]:
    """The two goal checks as lines (pure): in-process ≥ 4x libx264 medium; Triton ≤ 10% cost."""
    by = {r.name: r for r in rows}
    lines = []
    if "inprocess" in by and "x264" in by and by["x264"].fps > 0:
        ratio = by["inprocess"].fps / by["x264"].fps
        lines.append(f"in-process / libx264 medium = {ratio:.2f}x (goal >= 4x: {'met' if ratio >= 4 else 'NOT met'})")
    if "inprocess" in by and "triton" in by and by["inprocess"].fps > 0:
        cost = 1 - by["triton"].fps / by["inprocess"].fps
        lines.append(f"Triton serving cost = {100 * cost:.1f}% of in-process fps "
                     f"(goal <= 10%: {'met' if cost <= 0.10 else 'NOT met'})")
    return lines


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clip", type=Path, default=None,
                        help="real clip (default: the shared 1080p edge-rotate-buck-bunny.mp4)")
    parser.add_argument("--resolution", default="1080p", help="frame size (default 1080p)")
    parser.add_argument("--frames", type=int, default=45, help="real frames decoded and reused (default 45)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per pre-editor row (default 10)")
    parser.add_argument("--inflight", type=int, default=2, help="Triton requests in flight (default 2)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds of the in-process/Triton/x264 rows (default 2)")
    parser.add_argument("--only", action="append", default=[], choices=ROWS,
                        help="run only these rows (repeatable; default all)")
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="ONNX Runtime threads for the in-process row (default: the served config's value)")
    parser.add_argument("--x264-preset", default="medium")
    parser.add_argument("--pipeline-max-frames", type=int, default=None,
                        help="frames of the clip the pipeline row encodes (default: all)")
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: embedded)")
    parser.add_argument("--model", default="preedit")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="append the table to this results log (e.g. perf/results/perf.md)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(argv or [])
    args = setup_args(argparse.ArgumentParser(prog="preedit bench", description=__doc__.split("\n")[0])).parse_args(argv)
    if args.duration_s <= 0 or min(args.inflight, args.frames, args.rounds) < 1:
        raise UsageError("--duration-s must be > 0; --inflight, --frames and --rounds >= 1")
    selected = args.only or list(ROWS)
    repo = args.model_repository or model_repository()
    model_dir = repo / args.model
    onnx_path = model_dir / "1" / "model.onnx"
    if "inprocess" in selected and not onnx_path.is_file():
        raise ModelError(f"no ONNX model at {onnx_path}; models in {repo}: "
                         f"{', '.join(sorted(p.name for p in repo.iterdir() if p.is_dir())) if repo.is_dir() else 'none'}")
    clip = args.clip or default_clip()
    width, height = parse_resolution(args.resolution)
    frames = load_nv12_frames(clip, width, height, args.frames)
    label = resolution_label(width, height)
    intra = args.intra_op_threads
    if intra is None:
        intra = served_intra_op_threads(model_dir) if "inprocess" in selected else 0
    totals: Dict[str, List[float]] = {}  # name -> [frames, wall_s]

    def _add(name: str, n: float, wall: float) -> None:
        acc = totals.setdefault(name, [0.0, 0.0])
        acc[0] += n
        acc[1] += wall

    server = None
    url = args.url
    runners: Dict[str, object] = {}
    measured: Dict[str, BenchRow] = {}
    x264_bytes = 0
    try:
        if url is None and ("triton" in selected or "pipeline" in selected):
            server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                               models=(args.model,)))
            server.start()
            server.wait_model_ready(args.model)
            url = server.grpc_url
        if "inprocess" in selected:
            runners["inprocess"] = InProcessRunner(onnx_path, frames, intra)
        if "triton" in selected:
            runners["triton"] = TritonRunner(url, args.model, frames, args.inflight)
        # Rounds interleave the rows, so a load change on a shared machine hits them alike.
        for rnd in range(args.rounds):
            for name in ("inprocess", "triton"):
                if name in runners:
                    _add(name, *runners[name].run(args.duration_s / args.rounds))
            if "x264" in selected:
                n, wall, nbytes = encode_x264(frames, preset=args.x264_preset)
                _add("x264", n, wall)
                x264_bytes += nbytes
            log.info("round %d/%d: %s", rnd + 1, args.rounds,
                     ", ".join(f"{k} {v[0] / v[1]:.1f} fps" for k, v in totals.items() if v[1] > 0))
        if "pipeline" in selected:
            if (width, height) != _clip_size(clip):
                log.warning("pipeline row runs at the clip's own size %s, not %s", _clip_size(clip), label)
            measured["pipeline"] = bench_pipeline(url, args.model, clip, preset=args.x264_preset,
                                                max_frames=args.pipeline_max_frames)
            log.info("pipeline: %.1f fps", measured["pipeline"].fps)
    finally:
        if "triton" in runners:
            runners["triton"].close()
        if server is not None:
            server.stop()
    threads = intra or "default"
    names = {"inprocess": f"pre-editor in-process (ONNX Runtime, intra-op threads {threads})",
             "triton": f"pre-editor through Triton (gRPC + system shm, {args.inflight} in flight)",
             "x264": f"libx264 `{args.x264_preset}` encode (crf 23, PyAV, default threads)"}
    for name, (n, wall) in totals.items():
        note = f"{x264_bytes * 8 / (n / 24.0) / 1e3:.0f} kbit/s at 24 fps" if name == "x264" and n else ""
        measured[name] = BenchRow(name, names[name], int(n), wall, note=note)
    rows = [measured[name] for name in ROWS if name in measured]
    source = _model_source(model_dir)
    title = f"preedit bench: {label} ({width}x{height}), {args.frames} real frames of {clip.name}, model {args.model} ({source})"
    table = bench_table(rows)
    verdicts = bench_verdicts(rows)
    print(title)
    print(table)
    print("\n".join(verdicts))
    if args.json:
        args.json.write_text(json.dumps([dict(asdict(r), fps=r.fps) for r in rows], indent=2))
    if args.results_md:
        section = results_section(f"preedit bench at {label}", command_line("preedit bench", argv),
                                  table + "\n" + "\n".join(f"- {v}" for v in verdicts),
                                  facts={"Setup": f"{args.frames} real frames of `{clip.name}` at {width}x{height}, "
                                                  f"model `{args.model}` ({source}); in-process, Triton and libx264 rows "
                                                  f"interleaved in {args.rounds} rounds, pipeline row after them"})
        append_results(section, args.results_md)
    return 0


def _clip_size(clip: Path) -> tuple:
    import av  # lazy: av

    with av.open(str(clip)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.width, ctx.height


def _model_source(model_dir: Path) -> str:
    try:
        contract = json.loads((model_dir / "contract.json").read_text())
    except (OSError, ValueError):
        return "no contract.json"
    source = contract.get("source", "exported checkpoint")
    sha = contract.get("model_sha256", "")[:12]
    return f"{source}, sha256 {sha}" if sha else source
