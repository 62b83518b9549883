"""Issue 18 row 9: Triton's compute_infer_duration_us accrues per request, so dividing it by
exec_count (batch executions) inflated the panel by the batch size."""

import json
from pathlib import Path

from preedit.perf.speed.dashboards import build_dashboard

ROOT = Path(__file__).resolve().parents[1]


def _exprs(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def test_row9_compute_time_is_divided_by_requests_not_executions():
    for dash in (build_dashboard(), json.loads((ROOT / "deploy/dashboards/grafana_preedit.json").read_text())):
        compute = [e for e in _exprs(dash) if "nv_inference_compute_infer_duration_us" in e]
        assert compute, "the compute panel is missing"
        for expr in compute:
            denominator = expr.split(" / ", 1)[1]
            assert "nv_inference_request_success" in denominator and "exec_count" not in denominator
