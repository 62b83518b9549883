"""Dashboards: generated files in sync, names match the exporters, and every dashboard query
returns data from a REAL Prometheus scraping a running pipeline and Triton."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from preedit.serve import child_env
import yaml

from preedit.paths import REPO_ROOT
from preedit.perf.speed import dashboards
from preedit.perf.speed.dashboards import (build_dashboard, build_scrape_config, dashboard_queries,
                                     render_scrape_config, substitute_variables)

DEPLOY = REPO_ROOT / "deploy" / "dashboards"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Triton's per-model metrics the dashboard may use (server docs, user_guide/metrics.md).
TRITON_METRICS = {"nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
                  "nv_inference_request_failure", "nv_inference_queue_duration_us",
                  "nv_inference_compute_infer_duration_us", "nv_inference_request_duration_us",
                  "nv_inference_pending_request_count"}


def _metric_names(expr: str) -> set:
    import re

    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?=\s*[{\[)])", expr))
    return {w for w in words if w.startswith(("preedit_", "nv_"))}


def test_dashboard_files_match_generator_when_committed():
    committed = json.loads((DEPLOY / dashboards.DASHBOARD_NAME).read_text())
    assert committed == json.loads(json.dumps(build_dashboard()))
    assert (DEPLOY / dashboards.SCRAPE_CONFIG_NAME).read_text() == render_scrape_config(build_scrape_config())


def test_dashboard_queries_use_only_exported_metric_names_when_parsed():
    from preedit.client.telemetry import METRIC_NAMES

    client = set(METRIC_NAMES) | {f"{n}_bucket" for n in METRIC_NAMES}
    queries = dashboard_queries(build_dashboard())
    titles = {t for t, _ in queries}
    for wanted in ("Throughput", "latency p50", "latency p99", "queue", "batch size", "Bypassed", "Errors", "bitrate"):
        assert any(wanted.lower() in t.lower() for t in titles), f"no panel about {wanted}"
    for title, expr in queries:
        names = _metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        unknown = names - client - TRITON_METRICS
        assert not unknown, f"{title}: unknown metrics {unknown}"


def test_substitute_variables_raises_when_variable_unknown():
    assert substitute_variables('x{model="$model"}[$__rate_interval]', {"model": "m", "__rate_interval": "5s"}) \
        == 'x{model="m"}[5s]'
    with pytest.raises(KeyError, match="nope"):
        substitute_variables("rate(x[$nope])", {})


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_scrape_config_passes_promtool_check_when_generated(tmp_path):
    path = tmp_path / "prometheus.yaml"
    path.write_text(render_scrape_config(build_scrape_config(["127.0.0.1:9", "127.0.0.1:10"], ["127.0.0.1:11"], 2)))
    proc = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {j["job_name"] for j in yaml.safe_load(path.read_text())["scrape_configs"]}
    assert jobs == {"preedit_client", "triton"}


def _get_json(url: str, timeout_s: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read().decode())


def _query(base: str, expr: str, at: float) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    data = _get_json(url)
    assert data["status"] == "success", data
    return data["data"]["result"]


def _value(result: list) -> float:
    return float(result[0]["value"][1]) if result else float("nan")


@pytest.mark.needs_prometheus
@pytest.mark.needs_triton
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) not installed; scripts/setup.sh "
                                               "installs it when run as root with apt")
def test_every_dashboard_query_returns_data_when_prometheus_scrapes_a_running_pipeline(tmp_path, clip):
    from preedit.paths import model_repository
    from preedit.serve import ServerConfig, TritonServer, free_port

    source = clip("bottle-detection.mp4")  # 640x360, 29.8 fps; --realtime paces it like a live feed
    client_port, prom_port = free_port(), free_port()
    with TritonServer(ServerConfig(model_repository=model_repository(), http_port=0, grpc_port=0,
                                   metrics_port=0, models=("preedit",))) as server:
        server.wait_model_ready("preedit")
        config = tmp_path / "prometheus.yaml"
        config.write_text(render_scrape_config(build_scrape_config(
            [f"127.0.0.1:{client_port}"], [f"127.0.0.1:{server.config.metrics_port}"], scrape_interval_s=1)))
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{prom_port}"
        client = None
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and prom.poll() is None:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    time.sleep(0.3)
            assert prom.poll() is None, f"prometheus exited: {prom.stderr.read().decode()[-500:]}"
            # At most 30 s of a live-paced feed; stopped as soon as the queries have run.
            client = subprocess.Popen([sys.executable, "-m", "preedit", "run", str(source), "-o",
                                       str(tmp_path / "out.mp4"), "--url", server.grpc_url, "--metrics-port",
                                       str(client_port), "--realtime", "--max-frames", "900", "--codec", "h264",
                                       "--preset", "ultrafast"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env=child_env(server.grpc_url))
            deadline = time.monotonic() + 60
            ready = False
            while time.monotonic() < deadline and client.poll() is None:
                time.sleep(1.0)
                try:
                    now = time.time()
                    samples = [_value(_query(base, f"count_over_time({m}[30s])", now)) for m in (
                        'preedit_client_frames_total{stage="encoded"}', 'nv_inference_count{model="preedit"}')]
                    encoded = _value(_query(base, 'preedit_client_frames_total{stage="encoded"}', now))
                except OSError:
                    continue  # Prometheus still starting
                if min(samples) >= 5 and encoded > 0:
                    ready = True
                    break
            assert ready, (f"Prometheus never saw 5 samples of a running pipeline (client exit {client.poll()}): "
                           f"{client.stderr.read().decode()[-500:] if client.poll() is not None else ''}")
            at = time.time()
            variables = {"model": "preedit", "__rate_interval": "10s"}
            empty = []
            for title, expr in dashboard_queries(build_dashboard()):
                if not _query(base, substitute_variables(expr, variables), at):
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
            # The load-bearing panels show real activity, not just zero series.
            fps = _value(_query(base, substitute_variables(dashboard_queries(build_dashboard())[1][1], variables), at))
            assert fps > 0
            batch = _value(_query(base, 'sum(rate(nv_inference_count{model="preedit"}[10s])) / '
                                        'sum(rate(nv_inference_exec_count{model="preedit"}[10s]))', at))
            assert batch >= 1.0
            p50 = _query(base, "histogram_quantile(0.5, sum by (le, stage) "
                               "(rate(preedit_client_stage_latency_seconds_bucket[10s])))", at)
            by_stage = {r["metric"]["stage"]: float(r["value"][1]) for r in p50}
            assert by_stage.get("preedit", 0) > 0 and by_stage.get("end_to_end", 0) > 0, by_stage
        finally:
            for proc in (client, prom):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
