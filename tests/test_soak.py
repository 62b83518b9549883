"""Issue 12 soak, short form: live streams through one Triton server keep every frame, in order.

The full soak (`preedit bench soak --streams 4 --duration-s 60`, RSS growth included) is a
benchmark (BENCHMARKS.md §8); here only the frame and order conditions are asserted."""

from __future__ import annotations

import pytest

from preedit.cli import main as cli_main
from preedit.perf.speed.soak import growth, make_source, order_faults, soak
from preedit.serve import ServerConfig, TritonServer


def test_order_faults_counts_repeated_backward_and_missing_timestamps():
    assert order_faults([0.0, 0.04, 0.08]) == 0
    assert order_faults([0.0, 0.04, 0.04, 0.02, float("nan"), 0.2]) == 3
    assert growth(100, 109) == pytest.approx(0.09) and growth(0, 5) == 0.0


def test_bench_soak_is_a_bench_subcommand_and_refuses_bad_numbers(capsys):
    assert cli_main(["bench", "soak", "--streams", "0"]) == 2
    assert "--streams" in capsys.readouterr().err


@pytest.mark.needs_triton
def test_soak_keeps_every_frame_in_order_per_stream_when_two_live_streams_share_one_server(tmp_path):
    src = make_source(tmp_path / "src.mp4", 96, 64, 25, 3.0)
    with TritonServer(ServerConfig(http_port=0, grpc_port=0, metrics_port=0, models=("preedit",))) as srv:
        srv.wait_model_ready("preedit")
        res = soak(srv.grpc_url, srv.proc.pid, [src, src], tmp_path, latency_budget_ms=100.0, warmup_s=0.5)
    assert res.client_rc == 0, res.client_stderr
    assert [(s["frames_in"], s["frames_out"], s["order_faults"], s["pts_match"]) for s in res.streams] == \
        [(75, 75, 0, True)] * 2
    assert all(s["error"] is None for s in res.streams)
