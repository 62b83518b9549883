"""Model analysis (model_analyzer-style, CPU): sweep the served config, measure, pick defaults.

```
 served model.onnx ──write_onnx_model(config variant)──> temp repository, one model per variant
   variants: instance_count x intra_op_threads x max_batch_size x max_queue_delay_us
 one Triton (explicit model control): load variant ─> perf_analyzer at each concurrency ─> unload
 ──> table (fps, p95 per concurrency) + the variant chosen by `choose_config`
```
model_analyzer itself is not used: it needs the Triton SDK container or a server it launches with
its own layout; this sweep drives the same perf_analyzer over the same config fields.
`preedit bench model-analysis --resolution 720p` runs it.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from preedit.errors import ModelError, ServerError, UsageError
from preedit.paths import model_repository
from preedit.perf.speed.perf_analyzer import PerfAnalyzerConfig, run_perf_analyzer
from preedit.perf.speed.report import append_results, command_line, results_section, simple_table
from preedit.serve import PERF_ANALYZER_APIS, ServerConfig, TritonServer

log = logging.getLogger(__name__)

# Current `preedit export` defaults (export/repository.py `cpu_model_config`).
EXPORT_DEFAULTS = {"instance_count": 1, "intra_op_threads": 0, "max_batch_size": 8, "max_queue_delay_us": 2000}


@dataclass(frozen=True)
class ConfigVariant:
    """One served configuration of the CPU model."""

    instance_count: int = 1
    intra_op_threads: int = 0  # 0 = ONNX Runtime default (all cores)
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000

    def __post_init__(self) -> None:
        if self.instance_count < 1 or self.intra_op_threads < 0 or self.max_batch_size < 1 or self.max_queue_delay_us < 0:
            raise UsageError(f"invalid config variant {self}")

    @property
    def name(self) -> str:
        return (f"preedit_i{self.instance_count}_t{self.intra_op_threads}_b{self.max_batch_size}"
                f"_d{self.max_queue_delay_us}")

    def label(self) -> str:
        threads = self.intra_op_threads or "auto"
        return (f"instances {self.instance_count}, threads {threads}, max batch {self.max_batch_size}, "
                f"delay {self.max_queue_delay_us} us")


def build_variants(instances: Sequence[int], threads: Sequence[int], max_batch_sizes: Sequence[int],
                   delays_us: Sequence[int]) -> List[ConfigVariant]:
    """Cross product of the swept fields (pure); with max batch 1 the queue delay is moot, so only
    delay 0 is kept for it."""
    variants = []
    for inst, thr, mbs, delay in itertools.product(instances, threads, max_batch_sizes, delays_us):
        if mbs == 1 and delay != 0:
            continue
        variants.append(ConfigVariant(inst, thr, mbs, delay))
    if not variants:
        raise UsageError("the sweep is empty: give at least one value per field")
    return list(dict.fromkeys(variants))


@dataclass
class VariantResult:
    """Measured fps and p95 latency (ms) of one variant at each concurrency."""

    variant: ConfigVariant
    fps: Dict[int, float] = field(default_factory=dict)
    p95_ms: Dict[int, float] = field(default_factory=dict)
    batch: Dict[int, float] = field(default_factory=dict)


def choose_config(results: Sequence[VariantResult], latency_concurrency: int, throughput_concurrency: int,
                  latency_slack: float = 0.10) -> VariantResult:
    """The variant with the highest fps at `throughput_concurrency` among those whose p95 latency at
    `latency_concurrency` is within `latency_slack` of the best p95 there (pure).

    A single live stream must not pay for batching it cannot use, and several streams should get
    the throughput batching and instances give.

    Raises:
        UsageError: no result measured both concurrencies.
    """
    usable = [r for r in results if latency_concurrency in r.p95_ms and throughput_concurrency in r.fps]
    if not usable:
        raise UsageError("no variant was measured at both concurrencies")
    best_p95 = min(r.p95_ms[latency_concurrency] for r in usable)
    ok = [r for r in usable if r.p95_ms[latency_concurrency] <= best_p95 * (1 + latency_slack)]
    return max(ok, key=lambda r: r.fps[throughput_concurrency])


def analysis_table(results: Sequence[VariantResult], concurrencies: Sequence[int],
                   chosen: Optional[VariantResult] = None) -> str:
    """Markdown table: one row per variant, fps / p95 ms / avg batch per concurrency (pure)."""
    header = ["instances", "ORT threads", "max batch", "queue delay us"]
    for c in concurrencies:
        header += [f"fps @c{c}", f"p95 ms @c{c}", f"batch @c{c}"]
    rows = []
    for r in results:
        v = r.variant
        mark = " **chosen**" if chosen is not None and r.variant == chosen.variant else ""
        defaults = " (export default)" if asdict(v) == EXPORT_DEFAULTS else ""
        row = [f"{v.instance_count}{mark}{defaults}", v.intra_op_threads or "auto", v.max_batch_size, v.max_queue_delay_us]
        for c in concurrencies:
            row += [f"{r.fps[c]:.1f}" if c in r.fps else "-", f"{r.p95_ms[c]:.1f}" if c in r.p95_ms else "-",
                    f"{r.batch[c]:.2f}" if c in r.batch else "-"]
        rows.append(row)
    return simple_table(header, rows, align_right_from=1)


def write_variant_repository(onnx_path: Path, variants: Sequence[ConfigVariant], repo_dir: Path) -> Path:
    """A model repository with one served model per variant (same ONNX graph)."""
    from preedit.export import write_onnx_model  # lazy: pulls torch

    onnx_bytes = Path(onnx_path).read_bytes()
    for v in variants:
        write_onnx_model(onnx_bytes, repo_dir, v.name, max_batch_size=v.max_batch_size, instance_count=v.instance_count,
                         max_queue_delay_us=v.max_queue_delay_us, intra_op_threads=v.intra_op_threads,
                         metadata={"source": f"model analysis variant of {onnx_path}"})
    return Path(repo_dir)


def run_analysis(onnx_path: Path, variants: Sequence[ConfigVariant], input_data: Path, frame_shape: Sequence[int],
                 concurrencies: Sequence[int], work_dir: Path, measurement_interval_ms: int = 3000,
                 stability_percentage: float = 20.0, max_trials: int = 5, passes: int = 1) -> List[VariantResult]:
    """Load each variant in one Triton (explicit model control), measure it, unload it.

    With `passes` 2 the grid is measured forwards then backwards and each figure is the mean of
    its passes, so a load drift on a shared machine does not favour the variants measured first.
    """
    import tritonclient.http as httpclient  # lazy: tritonclient



    repo = write_variant_repository(onnx_path, variants, work_dir / "repository")
    # Explicit model control (opt-in, keyed: load/unload send the key); perf_analyzer over gRPC
    # cannot send headers, so model-config, shared-memory and statistics stay unkeyed on this private server.
    server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                       allow_model_control=True, unkeyed_apis=PERF_ANALYZER_APIS))
    samples: Dict[ConfigVariant, List[VariantResult]] = {v: [] for v in variants}
    order = [v for p in range(passes) for v in (variants if p % 2 == 0 else list(reversed(variants)))]
    with server:
        client = httpclient.InferenceServerClient(server.http_url)
        for v in order:
            result = VariantResult(v)
            if server.proc is None or server.proc.poll() is not None:  # died: start afresh for the rest
                log.warning("tritonserver exited (code %s); restarting it", server.proc and server.proc.returncode)
                server.stop()
                server.start()
                client = httpclient.InferenceServerClient(server.http_url)
            try:
                client.load_model(v.name, headers=server.http_headers)
                server.wait_model_ready(v.name, timeout_s=120)
                for c in concurrencies:
                    cfg = PerfAnalyzerConfig(input_data=input_data, frame_shape=frame_shape, url=server.grpc_url,
                                             model_name=v.name, load=c, measurement_interval_ms=measurement_interval_ms,
                                             stability_percentage=stability_percentage, max_trials=max_trials)
                    row = run_perf_analyzer(cfg, work_dir / f"{v.name}-c{c}.csv", log_path=work_dir / f"{v.name}-c{c}.log")
                    result.fps[c], result.p95_ms[c], result.batch[c] = row.throughput_fps, row.p95_latency_ms, row.avg_batch_size
                log.info("%s: %s", v.label(), ", ".join(f"c{c} {result.fps[c]:.1f} fps p95 {result.p95_ms[c]:.0f} ms"
                                                         for c in concurrencies))
            except (ServerError, Exception) as exc:  # noqa: BLE001 - one bad variant must not end the sweep
                log.warning("variant %s failed: %s", v.name, str(exc).splitlines()[0][:300])
            finally:
                try:
                    client.unload_model(v.name, headers=server.http_headers)
                except Exception:  # noqa: BLE001
                    pass
            samples[v].append(result)
    return [merge_passes(v, samples[v]) for v in variants]


def merge_passes(variant: ConfigVariant, passes: Sequence[VariantResult]) -> VariantResult:
    """Mean of each figure over the passes that measured it (pure)."""
    merged = VariantResult(variant)
    for name in ("fps", "p95_ms", "batch"):
        keys = {c for r in passes for c in getattr(r, name)}
        for c in keys:
            values = [getattr(r, name)[c] for r in passes if c in getattr(r, name)]
            getattr(merged, name)[c] = sum(values) / len(values)
    return merged


def _ints(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{text!r}: expected comma-separated whole numbers") from None


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--resolution", default="720p", help="frame size (default 720p)")
    parser.add_argument("--clip", type=Path, default=None, help="source clip (default: the shared 1080p clip)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--instances", default="1,2", help="instance counts (default 1,2)")
    parser.add_argument("--threads", default="0", help="ORT intra-op threads per instance, 0 = auto (default 0)")
    parser.add_argument("--max-batch", default="1,4,8", help="max batch sizes (default 1,4,8)")
    parser.add_argument("--delays-us", default="0,2000,8000", help="dynamic batcher queue delays (default 0,2000,8000)")
    parser.add_argument("--concurrency", default="1,4",
                        help="concurrencies measured; the first is the latency check, the last the throughput one")
    parser.add_argument("--measurement-interval-ms", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=2,
                        help="1: grid once; 2 (default): forwards then backwards, figures averaged")
    parser.add_argument("--model", default="preedit", help="served model whose ONNX graph is analysed")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--results-md", type=Path, default=None, help="append the table to this results log")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from preedit.perf.speed.analyzer_data import (  # lazy: pulls numpy
        default_clip, load_nv12_frames, nv12_shape, parse_resolution, resolution_label, write_input_data)

    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args(argparse.ArgumentParser(prog="preedit bench model-analysis",
                                              description=__doc__.split("\n")[0])).parse_args(argv)
    onnx_path = (args.model_repository or model_repository()) / args.model / "1" / "model.onnx"
    if not onnx_path.is_file():
        raise ModelError(f"no ONNX model at {onnx_path}")
    variants = build_variants(_ints(args.instances), _ints(args.threads), _ints(args.max_batch), _ints(args.delays_us))
    concurrencies = _ints(args.concurrency)
    width, height = parse_resolution(args.resolution)
    with tempfile.TemporaryDirectory(prefix="preedit-ma-") as tmp:
        work = Path(tmp)
        data = write_input_data(load_nv12_frames(args.clip or default_clip(), width, height, args.frames),
                                work / "input-data.json")
        results = run_analysis(onnx_path, variants, data, nv12_shape(width, height), concurrencies, work,
                               measurement_interval_ms=args.measurement_interval_ms, passes=args.passes)
    chosen = choose_config(results, concurrencies[0], concurrencies[-1])
    table = analysis_table(results, concurrencies, chosen)
    verdict = (f"chosen: {chosen.variant.label()} — highest fps at concurrency {concurrencies[-1]} among variants "
               f"whose p95 at concurrency {concurrencies[0]} is within 10% of the best")
    print(table)
    print(verdict)
    if args.results_md:
        section = results_section(f"Model analysis at {resolution_label(width, height)}",
                                  command_line("preedit bench model-analysis", argv),
                                  table + "\n" + verdict,
                                  facts={"Setup": "perf_analyzer, gRPC + system shm, real frames; one Triton with "
                                                  "explicit model control, each variant loaded alone; "
                                                  f"{args.passes} pass(es) over the grid (forwards, backwards), "
                                                  "figures averaged"})
        append_results(section, args.results_md)
    return 0


if __name__ == "__main__":
    from preedit.cli import script_main

    raise SystemExit(script_main("model_analysis", main))
