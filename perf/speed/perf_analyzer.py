"""perf_analyzer (from `tritonclient[all]==2.51.0`): build the command (pure), run it, read its CSV.

```
 PerfPoint(load) ──build_perf_analyzer_cmd──> argv (gRPC, system shm, real-data JSON, -f csv)
   ──run_perf_analyzer (LD_LIBRARY_PATH from preedit.install_support)──> perf_analyzer CSV
   ──parse_perf_csv──> PerfResult (fps, p50/p90/p95/p99 ms, per-stage server times µs)
```
The binary links `libb64.so.0d` and `libcudart.so.12` even on CPU; `preedit.install_support`
links the copies shipped in the pinned wheels into `.cache/triton/lib`, so no apt step is needed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from preedit.errors import ServerError, UsageError
from preedit.install_support import library_env, prepare

SHARED_MEMORY_KINDS = ("none", "system", "cuda")
LOAD_MODES = ("concurrency", "request_rate")

# Columns of our CSV (units in the names); one row per load point.
CSV_COLUMNS = (
    "resolution", "mode", "concurrency", "request_rate_per_s", "throughput_fps",
    "p50_latency_ms", "p90_latency_ms", "p95_latency_ms", "p99_latency_ms", "avg_batch_size",
    "client_send_us", "network_server_us", "server_queue_us", "server_compute_input_us",
    "server_compute_infer_us", "server_compute_output_us", "client_recv_us", "stability_percentage",
)

# perf_analyzer CSV header -> our column (latencies are µs in its CSV).
_PA_COLUMNS = {
    "Inferences/Second": "throughput_fps",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_server_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_latency_ms",
    "p90 latency": "p90_latency_ms",
    "p95 latency": "p95_latency_ms",
    "p99 latency": "p99_latency_ms",
}


@dataclass
class PerfAnalyzerConfig:
    """One perf_analyzer measurement point against a served pre-editor.

    Args:
        input_data: real-data JSON (`perf_analyzer_data.write_input_data`).
        frame_shape: NV12 shape `(H*3/2, W)` of the frames in `input_data`.
        mode: `concurrency` (closed loop) or `request_rate` (open loop, `poisson` arrivals).
        load: concurrency (requests in flight) or request rate (requests/s).
        shared_memory: `system` on CPU hosts, `cuda` on GPU hosts, `none` sends pixels over gRPC.
        measurement_interval_ms: length of one measurement window.
        stability_percentage: windows must agree within this many percent.
        max_trials: windows tried before giving up on stability.
        percentile: latency percentile perf_analyzer stabilises on.
    """

    input_data: Path
    frame_shape: Sequence[int]
    url: str = "127.0.0.1:8001"
    model_name: str = "preedit"
    mode: str = "concurrency"
    load: float = 1
    batch_size: int = 1
    shared_memory: str = "system"
    measurement_interval_ms: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10
    percentile: int = 95
    request_distribution: str = "poisson"
    metrics_url: Optional[str] = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.mode not in LOAD_MODES:
            raise UsageError(f"mode must be one of {', '.join(LOAD_MODES)}, got {self.mode!r}")
        if self.shared_memory not in SHARED_MEMORY_KINDS:
            raise UsageError(f"shared memory must be one of {', '.join(SHARED_MEMORY_KINDS)}, "
                             f"got {self.shared_memory!r}")
        if self.load <= 0:
            raise UsageError(f"load must be > 0, got {self.load}")
        if self.mode == "concurrency" and int(self.load) != self.load:
            raise UsageError(f"concurrency must be a whole number, got {self.load}")
        if len(self.frame_shape) != 2 or min(self.frame_shape) <= 0:
            raise UsageError(f"frame_shape must be (H*3/2, W), got {tuple(self.frame_shape)}")
        if self.batch_size < 1 or self.measurement_interval_ms < 100 or self.max_trials < 1:
            raise UsageError("batch size >= 1, measurement interval >= 100 ms and max trials >= 1 required")
        if self.request_distribution not in ("poisson", "constant"):
            raise UsageError(f"request distribution must be poisson or constant, got {self.request_distribution!r}")

    @property
    def output_shm_bytes(self) -> int:
        """Bytes of one output region: one batch of NV12 frames (`--output-shared-memory-size`)."""
        return int(self.frame_shape[0]) * int(self.frame_shape[1]) * self.batch_size


def build_perf_analyzer_cmd(cfg: PerfAnalyzerConfig, csv_path: Path, binary: str = "perf_analyzer") -> List[str]:
    """The perf_analyzer argument list for one load point (pure; no shell).

    Args:
        cfg: the measurement point.
        csv_path: where perf_analyzer writes its CSV (`-f`).
        binary: the perf_analyzer executable.
    """
    h3, w = (int(x) for x in cfg.frame_shape)
    cmd = [
        str(binary), "-m", cfg.model_name, "-i", "grpc", "-u", cfg.url, "--async",
        "-b", str(cfg.batch_size),
        "--input-data", str(cfg.input_data),
        "--shape", f"NV12_IN:{h3},{w}",
        "--shared-memory", cfg.shared_memory,
        "--measurement-interval", str(cfg.measurement_interval_ms),
        "--stability-percentage", str(cfg.stability_percentage),
        "--max-trials", str(cfg.max_trials),
        f"--percentile={cfg.percentile}",
        "-f", str(csv_path),
    ]
    if cfg.shared_memory != "none":
        cmd += ["--output-shared-memory-size", str(cfg.output_shm_bytes)]
    if cfg.mode == "concurrency":
        cmd += ["--concurrency-range", f"{int(cfg.load)}:{int(cfg.load)}:1"]
    else:
        cmd += ["--request-rate-range", f"{cfg.load:g}:{cfg.load:g}:1",
                "--request-distribution", cfg.request_distribution]
    if cfg.metrics_url:
        cmd += ["--collect-metrics", "--metrics-url", cfg.metrics_url, "--verbose-csv"]
    cmd += list(cfg.extra_args)
    return cmd


def parse_perf_csv(text: str) -> List[Dict[str, float]]:
    """Rows of a perf_analyzer CSV in our units: throughput fps, latencies ms, stage times µs (pure).

    The first column is `Concurrency` or `Request Rate`; latency percentiles are converted from µs
    to ms. Unknown columns are ignored.

    Raises:
        ServerError: the CSV has no data rows or no throughput column.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    rows = [r for r in rows if r and any((v or "").strip() for v in r.values())]
    if not rows or "Inferences/Second" not in rows[0]:
        raise ServerError("perf_analyzer wrote no measurement rows (see its output above)")
    parsed = []
    for row in rows:
        out: Dict[str, float] = {}
        if row.get("Concurrency"):
            out["concurrency"] = float(row["Concurrency"])
        if row.get("Request Rate"):
            out["request_rate_per_s"] = float(row["Request Rate"])
        for src, dst in _PA_COLUMNS.items():
            value = (row.get(src) or "").strip()
            if not value:
                continue
            number = float(value)
            out[dst] = number / 1000.0 if dst.endswith("_ms") else number
        parsed.append(out)
    return parsed


def parse_avg_batch_size(stdout: str) -> float:
    """Server-side average batch size from perf_analyzer's report: inference count / execution count.

    Returns 0.0 when the report has no server section (pure).
    """
    inferences = re.findall(r"Inference count:\s*(\d+)", stdout)
    executions = re.findall(r"Execution count:\s*(\d+)", stdout)
    if not inferences or not executions or int(executions[-1]) == 0:
        return 0.0
    return int(inferences[-1]) / int(executions[-1])


def perf_analyzer_binary() -> str:
    """The perf_analyzer shipped with tritonclient in this environment."""
    local = Path(sys.executable).parent / "perf_analyzer"
    if local.is_file():
        return str(local)
    found = shutil.which("perf_analyzer")
    if not found:
        raise ServerError("perf_analyzer not found: install tritonclient[all]==2.51.0 (scripts/setup.sh)")
    return found


@dataclass
class PerfResult:
    """One measured load point (units in the field names)."""

    mode: str
    concurrency: float = 0.0
    request_rate_per_s: float = 0.0
    throughput_fps: float = 0.0
    p50_latency_ms: float = 0.0
    p90_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    p99_latency_ms: float = 0.0
    avg_batch_size: float = 0.0
    client_send_us: float = 0.0
    network_server_us: float = 0.0
    server_queue_us: float = 0.0
    server_compute_input_us: float = 0.0
    server_compute_infer_us: float = 0.0
    server_compute_output_us: float = 0.0
    client_recv_us: float = 0.0
    resolution: str = ""
    stability_percentage: float = 0.0

    def to_row(self) -> Dict[str, object]:
        data = asdict(self)
        return {k: data[k] for k in CSV_COLUMNS}


UNSTABLE_MARK = "Failed to obtain stable measurement"


def run_perf_analyzer(cfg: PerfAnalyzerConfig, csv_path: Path, timeout_s: float = 600.0,
                      log_path: Optional[Path] = None, relax_unstable: int = 2) -> PerfResult:
    """Run perf_analyzer for one load point and return the parsed result.

    On a shared machine the windows may not agree within `stability_percentage`; perf_analyzer then
    fails. Up to `relax_unstable` re-runs double the allowed spread (capped at 100%); the spread
    finally used is recorded in `PerfResult.stability_percentage`.

    Raises:
        ServerError: perf_analyzer failed or timed out (its last output line is in the message).
    """

    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    env = library_env(prepare())
    for attempt in range(relax_unstable + 1):
        cmd = build_perf_analyzer_cmd(cfg, csv_path, perf_analyzer_binary())
        csv_path.unlink(missing_ok=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise ServerError(f"perf_analyzer timed out after {timeout_s:.0f} s at {cfg.mode}={cfg.load:g}") from None
        output = proc.stdout + proc.stderr
        if log_path is not None:
            Path(log_path).write_text(output)
        if proc.returncode != 0 and UNSTABLE_MARK in output and attempt < relax_unstable \
                and cfg.stability_percentage < 100:
            cfg = dataclasses.replace(cfg, stability_percentage=min(100.0, cfg.stability_percentage * 2))
            continue
        break
    if proc.returncode != 0 or not csv_path.is_file():
        lines = [ln for ln in output.splitlines() if ln.strip()]
        tail = lines[-1].strip() if lines else "no output"
        raise ServerError(f"perf_analyzer failed (exit {proc.returncode}) at {cfg.mode}={cfg.load:g}: {tail[:300]}")
    rows = parse_perf_csv(csv_path.read_text())
    fields = {k: v for k, v in rows[0].items() if k in PerfResult.__dataclass_fields__}
    return PerfResult(mode=cfg.mode, avg_batch_size=parse_avg_batch_size(proc.stdout),
                      stability_percentage=cfg.stability_percentage, **fields)
