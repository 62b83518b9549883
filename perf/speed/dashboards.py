"""Operator dashboards: Prometheus scrape config and Grafana dashboard for the client and Triton.

```
 preedit run --metrics-port 9101 ──/metrics──┐
                                             ├──> Prometheus (prometheus.yaml) ──> Grafana (grafana_preedit.json)
 tritonserver --metrics-port 8002 ──/metrics─┘
```
Both files are generated from `PANELS` and `build_scrape_config` (this module) and committed;
`preedit dashboards write` regenerates them (into `deploy/dashboards/`), and a test keeps them in sync. Metric
names come from `client/metrics.py` (client) and Triton's metrics documentation (`nv_inference_*`).
Grafana variables: `$model` (served model, default `preedit`) and the built-in `$__rate_interval`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from preedit.paths import REPO_ROOT

DASHBOARD_NAME = "grafana_preedit.json"
SCRAPE_CONFIG_NAME = "prometheus.yaml"

DEFAULT_CLIENT_TARGETS = ("127.0.0.1:9101",)
DEFAULT_TRITON_TARGETS = ("127.0.0.1:8002",)

_R = "[$__rate_interval]"
_M = '{model="$model"}'

# (title, unit, [(legend, PromQL)]) per panel; order = layout order (two panels per row).
PANELS: Tuple[Tuple[str, str, Tuple[Tuple[str, str], ...]], ...] = (
    ("Throughput (frames/s)", "fps", (
        ("client fps gauge", "sum(preedit_client_fps)"),
        ("encoded frames/s", f'sum(rate(preedit_client_frames_total{{stage="encoded"}}{_R}))'),
        ("Triton inferences/s", f"sum(rate(nv_inference_count{_M}{_R}))"),
    )),
    ("Frames by stage (frames/s)", "fps", (
        ("{{stage}}", f"sum by (stage) (rate(preedit_client_frames_total{_R}))"),
    )),
    ("Per-stage latency p50 (ms)", "ms", (
        ("{{stage}}", "1000 * histogram_quantile(0.5, sum by (le, stage) "
                      f"(rate(preedit_client_stage_latency_seconds_bucket{_R})))"),
    )),
    ("Per-stage latency p99 (ms)", "ms", (
        ("{{stage}}", "1000 * histogram_quantile(0.99, sum by (le, stage) "
                      f"(rate(preedit_client_stage_latency_seconds_bucket{_R})))"),
    )),
    ("Triton queue and compute time (ms)", "ms", (
        ("queue per request", f"sum(rate(nv_inference_queue_duration_us{_M}{_R})) / "
                              f"sum(rate(nv_inference_request_success{_M}{_R})) / 1000"),
        # compute_infer_duration_us accrues per *request* (a batch of n adds n): divide by requests
        ("compute per request", f"sum(rate(nv_inference_compute_infer_duration_us{_M}{_R})) / "
                                f"sum(rate(nv_inference_request_success{_M}{_R})) / 1000"),
        ("request in server", f"sum(rate(nv_inference_request_duration_us{_M}{_R})) / "
                              f"sum(rate(nv_inference_request_success{_M}{_R})) / 1000"),
    )),
    ("Dynamic batch size (frames per execution)", "none", (
        ("avg batch", f"sum(rate(nv_inference_count{_M}{_R})) / sum(rate(nv_inference_exec_count{_M}{_R}))"),
    )),
    ("Queued and in-flight requests", "none", (
        ("Triton pending", f"sum(nv_inference_pending_request_count{_M})"),
        ("client in flight", "sum(preedit_client_inflight_requests)"),
    )),
    ("Bypassed frames (frames/s, and total)", "none", (
        ("{{reason}} /s", f"sum by (reason) (rate(preedit_client_bypassed_frames_total{_R}))"),
        ("total", "sum(preedit_client_bypassed_frames_total)"),
    )),
    ("Errors (per s)", "none", (
        ("client {{kind}}", f"sum by (kind) (rate(preedit_client_errors_total{_R}))"),
        ("Triton {{reason}}", f"sum by (reason) (rate(nv_inference_request_failure{_M}{_R}))"),
    )),
    ("Output bitrate (kbit/s)", "kbps", (
        ("output", f"sum(rate(preedit_client_output_bits_total{_R})) / 1000"),
    )),
)


def build_dashboard(panels=PANELS, title: str = "preedit: pre-editing pipeline and Triton") -> Dict:
    """Grafana dashboard (JSON model, importable; datasource chosen at import) from `panels` (pure)."""
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    out_panels = []
    for i, (panel_title, unit, queries) in enumerate(panels):
        out_panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": panel_title,
            "datasource": datasource,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": datasource, "expr": expr,
                         "legendFormat": legend} for j, (legend, expr) in enumerate(queries)],
        })
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": title,
        "uid": "preedit-pipeline",
        "tags": ["preedit", "triton"],
        "timezone": "utc",
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "schemaVersion": 39,
        "templating": {"list": [{"name": "model", "label": "model", "type": "custom", "query": "preedit",
                                 "current": {"text": "preedit", "value": "preedit"}}]},
        "panels": out_panels,
    }


def dashboard_queries(dashboard: Mapping) -> List[Tuple[str, str]]:
    """Every (panel title, PromQL expression) in a Grafana dashboard, rows included (pure)."""
    found: List[Tuple[str, str]] = []

    def _walk(panels: Sequence[Mapping]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", ""), target["expr"]))
            _walk(panel.get("panels", []))

    _walk(dashboard.get("panels", []))
    return found


def substitute_variables(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables (`$name`, `${name}`, `$__rate_interval`) with values (pure).

    Raises:
        KeyError: the expression uses a variable not in `variables`.
    """

    def _sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"no value for Grafana variable ${name}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", _sub, expr)


def build_scrape_config(client_targets: Sequence[str] = DEFAULT_CLIENT_TARGETS,
                        triton_targets: Sequence[str] = DEFAULT_TRITON_TARGETS,
                        scrape_interval_s: float = 5.0) -> Dict:
    """Prometheus configuration scraping the client(s) and Triton (pure)."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": "preedit_client", "metrics_path": "/metrics",
             "static_configs": [{"targets": list(client_targets)}]},
            {"job_name": "triton", "metrics_path": "/metrics",
             "static_configs": [{"targets": list(triton_targets)}]},
        ],
    }


def render_scrape_config(config: Mapping) -> str:
    """YAML text of a scrape config, with a header saying where it comes from."""
    import yaml  # lazy: yaml

    header = ("# Prometheus scrape config for preedit: the client (`preedit run --metrics-port 9101`) and Triton\n"
              "# (`preedit serve`, metrics on :8002). Generated by `preedit dashboards write`;\n"
              "# point the targets at your hosts, or regenerate with --client/--triton.\n")
    return header + yaml.safe_dump(dict(config), sort_keys=False)


def write_files(out_dir: Path, client_targets: Sequence[str] = DEFAULT_CLIENT_TARGETS,
                triton_targets: Sequence[str] = DEFAULT_TRITON_TARGETS,
                scrape_interval_s: float = 5.0) -> Tuple[Path, Path]:
    """Write `prometheus.yaml` and `grafana_preedit.json` into `out_dir`."""
    scrape_config, dashboard_json = Path(out_dir) / SCRAPE_CONFIG_NAME, Path(out_dir) / DASHBOARD_NAME
    Path(scrape_config).write_text(render_scrape_config(
        build_scrape_config(client_targets, triton_targets, scrape_interval_s)))
    Path(dashboard_json).write_text(json.dumps(build_dashboard(), indent=2) + "\n")
    return Path(scrape_config), Path(dashboard_json)


def main(argv: Optional[List[str]] = None) -> int:
    parser = setup_args(argparse.ArgumentParser(prog="preedit dashboards", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    if args.action == "queries":
        for title, expr in dashboard_queries(build_dashboard()):
            print(f"{title}: {expr}")
        return 0
    paths = write_files(args.out, args.client or DEFAULT_CLIENT_TARGETS, args.triton or DEFAULT_TRITON_TARGETS)
    print("\n".join(str(p) for p in paths))
    return 0


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `preedit dashboards` options."""
    parser.add_argument("action", choices=["write", "queries"],
                        help="write: regenerate prometheus.yaml and grafana_preedit.json; queries: list PromQL")
    parser.add_argument("--client", action="append", default=[], help="client metrics target host:port (repeatable)")
    parser.add_argument("--triton", action="append", default=[], help="Triton metrics target host:port (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "deploy" / "dashboards",
                        help="folder for prometheus.yaml and grafana_preedit.json (default: deploy/dashboards)")
    return parser
