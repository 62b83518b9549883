"""Reports for the speed benchmarks: CSV, Markdown tables, throughput-vs-latency plot, results log.

```
 [PerfResult rows] ──write_csv──> sweep.csv (CSV_COLUMNS)
                   ──markdown_table──> | resolution | mode | load | fps | p50 | p95 | p99 | ... |
                   ──plot_throughput_latency──> sweep.png (fps vs p95 latency, one line per size/mode)
 section text ──append_results──> perf/results/perf.md (the lead copies it into BENCHMARKS.md)
```
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import shlex
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from preedit.paths import REPO_ROOT

from preedit.perf.speed.perf_analyzer import CSV_COLUMNS, PerfResult

RESULTS_MD = REPO_ROOT / "perf" / "results" / "perf.md"


def machine_summary() -> str:
    """One line describing this machine: CPU model, cores, load average, OS (for result records)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load avg %.2f/%.2f/%.2f" % os.getloadavg()
    except OSError:
        load = "load avg n/a"
    return f"{cpu}, {os.cpu_count()} cores, {load}, {platform.system()} {platform.release()}"


def command_line(prog: str, argv: Sequence[str]) -> str:
    """Copy-pasteable command line for a record (never executed)."""
    return " ".join([prog] + [shlex.quote(a) for a in argv])


def write_csv(rows: Iterable[PerfResult], path: Path) -> Path:
    """Write result rows with the `CSV_COLUMNS` header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_row())
    return path


def _load(row: PerfResult) -> str:
    return f"{row.concurrency:g}" if row.mode == "concurrency" else f"{row.request_rate_per_s:g}/s"


def markdown_table(rows: Sequence[PerfResult]) -> str:
    """perf_analyzer results as a Markdown table (pure)."""
    head = ("| resolution | load | fps | p50 ms | p95 ms | p99 ms | avg batch | queue ms | compute ms |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        kind = "concurrency" if r.mode == "concurrency" else "rate"
        compute_ms = (r.server_compute_input_us + r.server_compute_infer_us + r.server_compute_output_us) / 1000
        lines.append(f"| {r.resolution} | {kind} {_load(r)} | {r.throughput_fps:.1f} | {r.p50_latency_ms:.1f} | "
                     f"{r.p95_latency_ms:.1f} | {r.p99_latency_ms:.1f} | {r.avg_batch_size:.2f} | "
                     f"{r.server_queue_us / 1000:.1f} | {compute_ms:.1f} |")
    return head + "\n".join(lines) + "\n"


def simple_table(header: Sequence[str], rows: Sequence[Sequence[object]], align_right_from: int = 1) -> str:
    """A Markdown table from plain rows (pure); columns from `align_right_from` are right-aligned."""
    seps = ["---" if i < align_right_from else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(seps) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def plot_throughput_latency(rows: Sequence[PerfResult], path: Path, title: str = "preedit on Triton") -> Path:
    """Throughput (fps) against p95 latency (ms), one line per resolution and load mode."""
    import matplotlib  # lazy: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib

    groups: Dict[tuple, List[PerfResult]] = {}
    for r in rows:
        groups.setdefault((r.resolution, r.mode), []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (res, mode), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r.concurrency if mode == "concurrency" else r.request_rate_per_s)
        style = "o-" if mode == "concurrency" else "s--"
        ax.plot([m.p95_latency_ms for m in members], [m.throughput_fps for m in members], style,
                label=f"{res} {mode.replace('_', ' ')}")
        for m in members:
            ax.annotate(_load(m), (m.p95_latency_ms, m.throughput_fps), textcoords="offset points",
                        xytext=(3, 3), fontsize=7)
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel("throughput (frames/s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_section(title: str, command: str, body: str, facts: Optional[Mapping[str, str]] = None) -> str:
    """A dated Markdown section recording a run: title, exact command, machine, facts, body (pure
    apart from the timestamp and machine line)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {title} ({stamp})", "", f"Command: `{command}`", "", f"Machine: {machine_summary()}"]
    for key, value in (facts or {}).items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n\n" + body.rstrip() + "\n\n"


def replace_marked_block(path: Path, marker: str, body: str) -> Path:
    """Put `body` between `<!-- marker -->` and `<!-- /marker -->` in a Markdown file (e.g. a table
    that a benchmark rewrites in BENCHMARKS.md), appending the block at the end when absent."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)
    return path


def append_results(section: str, path: Optional[Path] = None) -> Path:
    """Append a section to the results log (created with a heading when missing)."""
    path = Path(path) if path is not None else RESULTS_MD
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Speed results (perf_analyzer, bench, multi-stream, model analysis)\n\n"
                        "Appended by `preedit perf`, `preedit bench` and the `perf/` benchmark commands.\n\n")
    with path.open("a") as fh:
        fh.write(section)
    return path
