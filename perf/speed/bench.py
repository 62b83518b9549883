"""`preedit bench`: pre-editor speed side by side with the encoder it sits in front of.

```
 the same real 1080p frames (NV12) ──> 1. in-process   ONNX Runtime, the served model.onnx, same threads
                                   ──> 2. Triton       client transport, gRPC + system-shm ring
                                   ──> 3. pipeline     `preedit run` (decode → Triton → libx264 medium)
                                   ──> 4. libx264      `medium` encode of the frames (PyAV), no pre-edit
 ──> one table: fps, ms/frame, ratio to libx264 medium, and two ratios:
     Triton kept share   = Triton fps / in-process fps                      (goal ≥ 88 %, issue 14)
     pipeline vs ideal   = pipeline fps / (1 / (1/x264 fps + 1/in-process fps))  (goal ≥ 95 %)
```
The serial ideal is what running the pre-editor and the encoder one after the other at their own
full speed would give; a pipeline that overlaps decode, pre-edit and encode well gets close to it
(or above it, where a stage alone does not fill the cores). All four rows run interleaved in
`--rounds` rounds on the same content (the pipeline encodes the first `--frames` frames of a clip at
the bench size), so a load change on a shared machine hits them alike. In-process is ONNX Runtime
at its defaults (all cores); Triton serves the repository's config as exported (CPU: two
instances sharing the cores, no batching delay; see export/repository.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
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
from preedit.perf.speed.report import append_results, command_line, replace_marked_block, results_section, simple_table
from preedit.serve import ServerConfig, TritonServer, auth_headers, child_env, descendants
from preedit.spec import DEFAULT_QP

log = logging.getLogger(__name__)

ROWS = ("inprocess", "served_shape", "triton", "pipeline", "x264")


@dataclass
class BenchRow:
    """One measured path: frames processed, wall time, fps."""

    name: str
    what: str
    frames: int
    wall_s: float
    note: str = ""
    cpu_s: float = 0.0  # the pipeline row: `preedit run`'s own CPU while its pipeline ran (no start-up)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1e3 * self.wall_s / self.frames if self.frames else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (the pipeline row's `preedit run`)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuProfile:
    """CPU seconds per role while a row runs: this process (`client`), the server (`tritonserver`),
    its python-backend stubs (`stubs`) and reaped child processes (`children`)."""

    def __init__(self, server_pid: Optional[int] = None) -> None:
        self.server_pid = server_pid

    def sample(self) -> Dict[str, float]:
        sample = {"client": cpu_seconds(os.getpid()), "children": children_cpu_seconds()}
        if self.server_pid is not None:
            tree = descendants(self.server_pid)
            if tree:
                sample["tritonserver"] = cpu_seconds(tree[0])
                sample["stubs"] = sum(_cpu_or_zero(p) for p in tree[1:])
        return sample

    @staticmethod
    def delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
        return {k: after[k] - before.get(k, 0.0) for k in after}


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def profile_table(cpu: Dict[str, Dict[str, float]], frames: Dict[str, float]) -> str:
    """CPU milliseconds per frame of each row by process (pure): where the cores went."""
    from preedit.perf.speed.report import simple_table

    roles = ("client", "tritonserver", "stubs", "children")
    body = []
    for name, by_role in cpu.items():
        n = frames.get(name, 0)
        if not n:
            continue
        cells = [f"{1e3 * by_role[r] / n:.1f}" if by_role.get(r) else "-" for r in roles]
        body.append([name] + cells + [f"{1e3 * sum(by_role.values()) / n:.1f}"])
    return simple_table(["row", "this process", "tritonserver", "python stubs", "`preedit run`", "total"], body)


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


class ServedShapeRunner:
    """The served CPU shape in-process: `instances` ONNX Runtime sessions of one intra-op thread each,
    idle threads not spinning (the python-backend model's options), each driven by its own thread
    (ORT releases the GIL). What serving costs is the Triton row against this one: same compute,
    no gRPC, no shared memory, no stubs.

    Args:
        onnx_path: the served `model.onnx`.
        frames: uint8 NV12 `[n, H*3/2, W]`, sent round-robin.
        instances: sessions (the served model's CPU instance count).
    """

    def __init__(self, onnx_path: Path, frames: np.ndarray, instances: int, qp: float = DEFAULT_QP) -> None:
        self.engines = [OrtEngine(onnx_path, threads=1, spinning=False) for _ in range(max(1, instances))]
        self.qp = np.full((1, 1), qp, dtype=np.float32)
        self.frames = frames
        for engine in self.engines:  # warm-up
            engine.run(frames[0][None], self.qp)

    def run(self, duration_s: float) -> tuple:
        """Frames done by all sessions together and wall seconds over about `duration_s`."""
        done = [0] * len(self.engines)
        t0 = time.perf_counter()

        def _loop(k: int) -> None:
            engine, i = self.engines[k], k
            while time.perf_counter() - t0 < duration_s:
                engine.run(self.frames[i % len(self.frames)][None], self.qp)
                done[k] += 1
                i += len(self.engines)

        workers = [threading.Thread(target=_loop, args=(k,), daemon=True) for k in range(len(self.engines))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(done), time.perf_counter() - t0


def served_instances(model_dir: Path) -> int:
    """Instance count of the served model (its config.pbtxt instance groups; 1 if it has none)."""
    from preedit.export.model_config import read_model_config  # lazy: pulls protobuf/tritonclient

    try:
        groups = read_model_config(model_dir / "config.pbtxt").get("instance_group", [])
    except OSError:
        return 1
    return sum(int(g.get("count", 1)) for g in groups) or 1


class TritonRunner:
    """Frames through the client transport (`client/transport.py`: gRPC + system-shm ring)."""

    def __init__(self, url: str, model: str, frames: np.ndarray, inflight: int, frames_per_request: int = 1) -> None:
        from preedit.client.transport import TritonTransport  # lazy: pulls tritonclient

        self.frames = frames
        self.inflight = inflight * frames_per_request  # frames outstanding: every slot's group can fill
        self.transport = TritonTransport(url, model, tuple(frames.shape[1:]), n_slots=inflight,
                                         headers=auth_headers(url), frames_per_request=frames_per_request)
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


def cycled(frames: np.ndarray, n: int) -> np.ndarray:
    """`n` frames taken round-robin from `frames` (pure): the content both encode rows see."""
    return frames[np.arange(n) % len(frames)]


def pipeline_clip(frames: np.ndarray, folder: Path) -> Path:
    """The clip the pipeline row decodes: `frames` (uint8 NV12) stored as a high-quality H.264
    mezzanine (CRF 12, veryfast), so `preedit run` encodes exactly what the libx264 row encodes."""
    import av  # lazy: av

    rows, width = frames.shape[1:]
    height = rows * 2 // 3
    path = folder / f"pipeline_{width}x{height}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, nv12 in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(nv12, format="nv12").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def bench_pipeline(url: str, model: str, clip: Path, preset: str = "medium", max_frames: Optional[int] = None,
                   timeout_s: float = 900.0, inflight: Optional[int] = None, frames_per_request: int = 1) -> BenchRow:
    """`preedit run CLIP -o tmp.mp4 --codec h264 --preset medium --url URL` (client/); its own fps."""
    with tempfile.TemporaryDirectory(prefix="preedit-bench-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "preedit", "run", str(clip), "-o", str(Path(tmp) / "out.mp4"),
               "--url", url, "--model", model, "--codec", "h264", "--preset", preset,
               "--summary-json", str(summary)]
        if max_frames:
            cmd += ["--max-frames", str(max_frames)]
        if inflight:
            cmd += ["--inflight", str(inflight)]
        if frames_per_request > 1:
            cmd += ["--frames-per-request", str(frames_per_request)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=child_env(url))
        if proc.returncode != 0 or not summary.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServerError(f"preedit run failed (exit {proc.returncode}): {tail}")
        data = json.loads(summary.read_text())
    return BenchRow("pipeline", f"full pipeline (`preedit run`: PyAV decode → Triton → libx264 `{preset}`)",
                    int(data["frames"]), float(data["wall_s"]),
                    note=f"end-to-end p50 {data['latency_ms']['end_to_end']['p50_ms']:.0f} ms",
                    cpu_s=float(data.get("cpu_s", 0.0)))


def bench_table(rows: List[BenchRow]) -> str:
    """Side-by-side Markdown table with the ratio to libx264 medium (pure)."""
    ref = next((r.fps for r in rows if r.name == "x264"), None)
    body = [[r.what, f"{r.fps:.1f}", f"{r.ms_per_frame:.1f}", f"{r.fps / ref:.2f}x" if ref else "-",
             str(r.frames), r.note] for r in rows]
    return simple_table(["path", "fps", "ms/frame", "vs libx264 medium", "frames", "note"], body)


TRITON_KEPT_GOAL = 0.88  # issue 14: Triton keeps >= 88 % of in-process fps
PIPELINE_IDEAL_GOAL = 0.95  # issue 14: the pipeline reaches >= 95 % of the serial ideal


def serial_ideal_fps(preedit_fps: float, encode_fps: float) -> float:
    """Frames per second of pre-edit then encode run one after the other at full speed (pure)."""
    return 1.0 / (1.0 / preedit_fps + 1.0 / encode_fps) if preedit_fps > 0 and encode_fps > 0 else 0.0


def best_inprocess_fps(by: Dict[str, float]) -> float:
    """The faster of the two in-process rows (pure): the goals' baseline. ORT's default session (two
    spinning threads) drops from ~125 to ~45 fps at 720p on this 2-vCPU host within seconds, with
    nothing else running; a baseline in that state would flatter every ratio."""
    return max(by.get("inprocess", 0.0), by.get("served_shape", 0.0))


def bench_ratios(rows: List[BenchRow]) -> Dict[str, float]:
    """`triton_kept` (Triton / the faster in-process row) and `pipeline_vs_ideal` (pipeline / serial
    ideal of that row and libx264), plus Triton against each in-process row, where measured (pure)."""
    by = {r.name: r.fps for r in rows}
    out: Dict[str, float] = {}
    best = best_inprocess_fps(by)
    if best > 0 and "triton" in by:
        out["triton_kept"] = by["triton"] / best
        for name in ("inprocess", "served_shape"):
            if by.get(name, 0) > 0:
                out[f"triton_vs_{name}"] = by["triton"] / by[name]
    ideal = serial_ideal_fps(best, by.get("x264", 0.0))
    if ideal > 0 and "pipeline" in by:
        out["serial_ideal_fps"] = ideal
        out["pipeline_vs_ideal"] = by["pipeline"] / ideal
    return out


def bench_verdicts(rows: List[BenchRow]) -> List[str]:
    """The goal checks as lines (pure): in-process ≥ 4x libx264 medium; Triton keeps ≥ 88 % of
    in-process fps; the pipeline ≥ 95 % of its serial ideal (in-process: the faster in-process row)."""
    by = {r.name: r for r in rows}
    ratios = bench_ratios(rows)
    best = best_inprocess_fps({r.name: r.fps for r in rows})
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if best > 0 and "x264" in by and by["x264"].fps > 0:
        ratio = best / by["x264"].fps
        lines.append(f"in-process / libx264 medium = {ratio:.2f}x (goal >= 4x: {verdict(ratio >= 4)})")
    if "triton_kept" in ratios:
        kept = ratios["triton_kept"]
        lines.append(f"Triton kept share = {100 * kept:.1f}% of in-process fps "
                     f"(goal >= {100 * TRITON_KEPT_GOAL:.0f}%: {verdict(kept >= TRITON_KEPT_GOAL)})")
    if "pipeline_vs_ideal" in ratios:
        share = ratios["pipeline_vs_ideal"]
        lines.append(f"pipeline = {100 * share:.1f}% of the serial ideal {ratios['serial_ideal_fps']:.1f} fps "
                     f"(1/(1/x264 + 1/in-process), in-process: the faster in-process row; goal >= {100 * PIPELINE_IDEAL_GOAL:.0f}%: "
                     f"{verdict(share >= PIPELINE_IDEAL_GOAL)})")
    labels = {"triton_vs_inprocess": "ORT's default session", "triton_vs_served_shape": "the served shape in-process"}
    parts = [f"{100 * ratios[k]:.1f}% of {label}" for k, label in labels.items() if k in ratios]
    if len(parts) == 2:
        lines.append("Triton = " + ", ".join(parts) + " (each in-process row alone; no goal)")
    return lines


def round_ratio_lines(per_round: Dict[str, List[tuple]]) -> List[str]:
    """The ratios of each round alone (pure): `per_round` maps a row name to its (frames, wall)
    per round. On a noisy host the spread across rounds says how far one run's ratio can be trusted."""
    n = min((len(v) for v in per_round.values()), default=0)
    if n == 0:
        return []
    rounds = [bench_ratios([BenchRow(name, name, int(v[k][0]), v[k][1]) for name, v in per_round.items()])
              for k in range(n)]
    labels = {"triton_kept": "Triton kept share", "pipeline_vs_ideal": "pipeline / serial ideal",
              "triton_vs_inprocess": "Triton / ORT default in-process"}
    lines = []
    for key, label in labels.items():
        values = [r[key] for r in rounds if key in r]
        if values:
            lines.append(f"per round, {label}: " + ", ".join(f"{100 * v:.1f}%" for v in values))
    return lines


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clip", type=Path, default=None,
                        help="real clip (default: the shared 1080p edge-rotate-buck-bunny.mp4)")
    parser.add_argument("--resolution", default="1080p", help="frame size (default 1080p)")
    parser.add_argument("--frames", type=int, default=90, help="real frames decoded and reused; the pipeline row encodes as many (default 90)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per pre-editor row (default 10)")
    parser.add_argument("--inflight", type=int, default=4,
                        help="Triton requests in flight, in the Triton row and `preedit run --inflight` "
                             "(default 4, `preedit run`'s default)")
    parser.add_argument("--frames-per-request", type=int, default=1,
                        help="frames a Triton request carries, in the Triton row and `preedit run` (default 1)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds of the in-process/Triton/x264 rows (default 2)")
    parser.add_argument("--only", action="append", default=[], choices=ROWS,
                        help="run only these rows (repeatable; default all)")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="ONNX Runtime threads for the in-process row (default 0: ORT's default, all cores)")
    parser.add_argument("--x264-preset", default="medium")
    parser.add_argument("--pipeline-max-frames", type=int, default=240,
                        help="frames the pipeline and libx264 rows encode each round, cycling the --frames "
                             "decoded (default 240: enough that encoder look-ahead fill and flush do not dominate)")
    parser.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: embedded)")
    parser.add_argument("--model", default="preedit")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="append the table to this results log (e.g. perf/results/perf.md)")
    parser.add_argument("--benchmarks-md", type=Path, default=None,
                        help="also rewrite this run's table and ratios in BENCHMARKS.md (a block marked per resolution)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(argv or [])
    args = setup_args(argparse.ArgumentParser(prog="preedit bench", description=__doc__.split("\n")[0])).parse_args(argv)
    if args.duration_s <= 0 or min(args.inflight, args.frames, args.rounds, args.frames_per_request) < 1:
        raise UsageError("--duration-s must be > 0; --inflight, --frames, --rounds and --frames-per-request >= 1")
    selected = args.only or list(ROWS)
    repo = args.model_repository or model_repository()
    model_dir = repo / args.model
    onnx_path = model_dir / "1" / "model.onnx"
    if ("inprocess" in selected or "served_shape" in selected) and not onnx_path.is_file():
        raise ModelError(f"no ONNX model at {onnx_path}; models in {repo}: "
                         f"{', '.join(sorted(p.name for p in repo.iterdir() if p.is_dir())) if repo.is_dir() else 'none'}")
    clip = args.clip or default_clip()
    width, height = parse_resolution(args.resolution)
    frames = load_nv12_frames(clip, width, height, args.frames)
    label = resolution_label(width, height)
    intra = args.intra_op_threads
    pipeline_frames = args.pipeline_max_frames or args.frames
    encode_frames = cycled(frames, pipeline_frames)  # the libx264 row and the pipeline's input
    totals: Dict[str, List[float]] = {}  # name -> [frames, wall_s]
    cpu: Dict[str, Dict[str, float]] = {}  # name -> role -> CPU seconds (the profile)
    per_round: Dict[str, List[tuple]] = {}  # name -> (frames, wall_s) of each round
    profile = CpuProfile()

    def _add(name: str, n: float, wall: float, used: Optional[Dict[str, float]] = None) -> None:
        acc = totals.setdefault(name, [0.0, 0.0])
        acc[0] += n
        acc[1] += wall
        per_round.setdefault(name, []).append((n, wall))
        by_role = cpu.setdefault(name, {})
        for role, seconds in (used or {}).items():
            by_role[role] = by_role.get(role, 0.0) + seconds

    def _timed(name: str, fn) -> tuple:
        before = profile.sample()
        result = fn()
        used = CpuProfile.delta(before, profile.sample())
        if len(result) > 2 and isinstance(result[2], BenchRow) and result[2].cpu_s:
            used["children"] = result[2].cpu_s  # the run's pipeline only, not its interpreter start-up
        _add(name, result[0], result[1], used)
        return result

    server = None
    url = args.url
    runners: Dict[str, object] = {}
    measured: Dict[str, BenchRow] = {}
    x264_bytes = 0
    served = ""
    scratch = tempfile.TemporaryDirectory(prefix="preedit-bench-")
    try:
        if "pipeline" in selected:
            run_clip = pipeline_clip(encode_frames, Path(scratch.name))
        if url is None and ("triton" in selected or "pipeline" in selected):
            server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                               models=(args.model,)))
            server.start()
            server.wait_model_ready(args.model)
            url = server.grpc_url
            profile = CpuProfile(server.proc.pid)
        if "inprocess" in selected:
            runners["inprocess"] = InProcessRunner(onnx_path, frames, intra)
        if "served_shape" in selected:
            runners["served_shape"] = ServedShapeRunner(onnx_path, frames, served_instances(model_dir))
        if "triton" in selected:
            runners["triton"] = TritonRunner(url, args.model, frames, args.inflight, args.frames_per_request)
        # Rounds interleave every row, so a load change on a shared machine hits them alike.
        pipeline_note = ""
        for rnd in range(args.rounds):
            for name in ("inprocess", "served_shape", "triton"):
                if name in runners:
                    _timed(name, lambda: runners[name].run(args.duration_s / args.rounds))
            if "x264" in selected:
                x264_bytes += _timed("x264", lambda: encode_x264(encode_frames, preset=args.x264_preset))[2]
            if "pipeline" in selected:
                row = _timed("pipeline", lambda: _row_result(bench_pipeline(
                    url, args.model, run_clip, preset=args.x264_preset, max_frames=pipeline_frames,
                    inflight=args.inflight, frames_per_request=args.frames_per_request)))[2]
                pipeline_note = row.note
            log.info("round %d/%d: %s", rnd + 1, args.rounds,
                     ", ".join(f"{k} {v[0] / v[1]:.1f} fps" for k, v in totals.items() if v[1] > 0))
    finally:
        if "triton" in runners:
            served = runners["triton"].transport.served_shape()
            runners["triton"].close()
        if server is not None:
            server.stop()
        scratch.cleanup()
    threads = intra or "default"
    names = {"inprocess": f"pre-editor in-process (ONNX Runtime, intra-op threads {threads})",
             "served_shape": f"pre-editor in-process at the served shape ({served_instances(model_dir)} sessions x "
                             "1 ORT thread, no spinning)",
             "triton": f"pre-editor through Triton (gRPC + system shm, {args.inflight} in flight"
                       f"{f' x {args.frames_per_request} frames' if args.frames_per_request > 1 else ''}; served: {served})",
             "x264": f"libx264 `{args.x264_preset}` encode (crf 23, PyAV, default threads)",
             "pipeline": f"full pipeline (`preedit run`: PyAV decode → Triton → libx264 `{args.x264_preset}`)"}
    for name, (n, wall) in totals.items():
        note = f"{x264_bytes * 8 / (n / 24.0) / 1e3:.0f} kbit/s at 24 fps" if name == "x264" and n else ""
        if name == "pipeline":
            note = pipeline_note
        measured[name] = BenchRow(name, names[name], int(n), wall, note=note)
    rows = [measured[name] for name in ROWS if name in measured]
    source = _model_source(model_dir)
    title = f"preedit bench: {label} ({width}x{height}), {args.frames} real frames of {clip.name}, model {args.model} ({source})"
    table = bench_table(rows)
    verdicts = bench_verdicts(rows) + round_ratio_lines(per_round)
    cpu_table = profile_table(cpu, {name: acc[0] for name, acc in totals.items()})
    table += ("\n\nCPU milliseconds per frame by process (user + system, all threads; the Triton "
              "row's overhead over in-process is the cost of serving):\n\n" + cpu_table)
    print(title)
    print(table)
    print("\n".join(verdicts))
    if args.json:
        args.json.write_text(json.dumps({"rows": [dict(asdict(r), fps=r.fps) for r in rows],
                                         "ratios": bench_ratios(rows), "per_round": per_round}, indent=2))
    if args.results_md:
        section = results_section(f"preedit bench at {label}", command_line("preedit bench", argv),
                                  table + "\n" + "\n".join(f"- {v}" for v in verdicts),
                                  facts={"Setup": f"{args.frames} real frames of `{clip.name}` at {width}x{height}, "
                                                  f"model `{args.model}` ({source}); all rows interleaved in "
                                                  f"{args.rounds} rounds"})
        append_results(section, args.results_md)
    if args.benchmarks_md:
        section = results_section(f"`preedit bench` at {label}", command_line("preedit bench", argv),
                                  table + "\n" + "\n".join(f"- {v}" for v in verdicts))
        replace_marked_block(args.benchmarks_md, f"preedit bench {label}", "#" + section)  # a §3 sub-block
    return 0


def _row_result(row: BenchRow) -> tuple:
    return row.frames, row.wall_s, row


def _model_source(model_dir: Path) -> str:
    try:
        contract = json.loads((model_dir / "contract.json").read_text())
    except (OSError, ValueError):
        return "no contract.json"
    source = contract.get("source", "exported checkpoint")
    sha = contract.get("model_sha256", "")[:12]
    return f"{source}, sha256 {sha}" if sha else source
