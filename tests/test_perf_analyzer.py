"""`preedit perf`: real-frame input data, perf_analyzer command/CSV handling, and a short real sweep."""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest

from preedit.errors import ServerError, UsageError
from preedit.perf.speed.cli import auto_rates, parse_int_list, parse_rates
from preedit.perf.speed.perf_analyzer import (CSV_COLUMNS, PerfAnalyzerConfig, build_perf_analyzer_cmd,
                                        parse_avg_batch_size, parse_perf_csv)
from preedit.perf.speed.analyzer_data import (build_input_data, load_nv12_frames, nv12_shape, parse_resolution,
                                             resolution_label)
from synthetic import media  # noqa: F401,E402 - fixture


def test_parse_resolution_accepts_names_and_even_sizes_when_valid():
    assert parse_resolution("1080p") == (1920, 1080)
    assert parse_resolution("640x360") == (640, 360)
    assert resolution_label(1280, 720) == "720p" and resolution_label(642, 360) == "642x360"
    for bad in ("4k", "641x359", "0x10", "x"):
        with pytest.raises(UsageError, match="720p" if bad in ("4k", "x") else "even"):
            parse_resolution(bad)


def test_input_data_round_trips_real_frames_when_encoded(media):  # noqa: F811
    frames = load_nv12_frames(media("flower.mp4"), 320, 180, n_frames=3)
    assert frames.shape == (3, *nv12_shape(320, 180)) and frames.dtype == np.uint8
    assert frames[:, :180].std() > 5  # real picture content, not a flat frame
    data = build_input_data(frames, qp=30)
    assert len(data["data"]) == 3
    for frame, entry in zip(frames, data["data"]):
        raw = base64.b64decode(entry["NV12_IN"]["content"]["b64"])
        assert entry["NV12_IN"]["shape"] == [270, 320]
        assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(270, 320), frame)
        assert entry["QP"] == {"content": [30.0], "shape": [1]}
    json.dumps(data)  # serialisable as perf_analyzer reads it


def test_load_nv12_frames_cycles_clip_when_it_is_shorter_than_asked(media):  # noqa: F811
    frames = load_nv12_frames(media("sar2.mp4"), 64, 48, n_frames=40)
    assert frames.shape[0] == 40
    assert np.array_equal(frames[20], frames[0]) and not np.array_equal(frames[1], frames[0])  # 20 frames


def test_build_cmd_uses_system_shm_sized_for_one_output_frame_when_on_cpu(tmp_path):
    cfg = PerfAnalyzerConfig(input_data=tmp_path / "d.json", frame_shape=(1620, 1920), load=3)
    cmd = build_perf_analyzer_cmd(cfg, tmp_path / "o.csv", "pa")
    assert cmd[0] == "pa" and "--async" in cmd
    assert cmd[cmd.index("--shared-memory") + 1] == "system"
    assert int(cmd[cmd.index("--output-shared-memory-size") + 1]) >= 1620 * 1920
    assert cmd[cmd.index("--concurrency-range") + 1] == "3:3:1"
    assert cmd[cmd.index("--shape") + 1] == "NV12_IN:1620,1920"
    rate = build_perf_analyzer_cmd(PerfAnalyzerConfig(input_data=tmp_path / "d.json", frame_shape=(270, 320),
                                                      mode="request_rate", load=12.5), tmp_path / "o.csv")
    assert rate[rate.index("--request-rate-range") + 1] == "12.5:12.5:1" and "--concurrency-range" not in rate


def test_perf_config_rejects_bad_values_when_constructed(tmp_path):
    with pytest.raises(UsageError, match="concurrency, request_rate"):
        PerfAnalyzerConfig(input_data=tmp_path, frame_shape=(270, 320), mode="burst")
    with pytest.raises(UsageError, match="none, system, cuda"):
        PerfAnalyzerConfig(input_data=tmp_path, frame_shape=(270, 320), shared_memory="gpu")
    with pytest.raises(UsageError, match="whole number"):
        PerfAnalyzerConfig(input_data=tmp_path, frame_shape=(270, 320), load=1.5)


def test_parse_perf_csv_converts_latency_to_ms_when_read():
    text = ("Concurrency,Inferences/Second,Client Send,Server Queue,Server Compute Infer,p50 latency,p99 latency\n"
            "2,40.5,12,2100,45000,48000,91000\n")
    (row,) = parse_perf_csv(text)
    assert row["concurrency"] == 2 and row["throughput_fps"] == 40.5
    assert row["p50_latency_ms"] == pytest.approx(48.0) and row["p99_latency_ms"] == pytest.approx(91.0)
    assert row["server_queue_us"] == 2100
    with pytest.raises(ServerError, match="no measurement rows"):
        parse_perf_csv("Concurrency,Inferences/Second\n")
    assert parse_avg_batch_size("Inference count: 90\n  Execution count: 30\n") == pytest.approx(3.0)
    assert parse_avg_batch_size("no server section") == 0.0


def test_sweep_lists_parse_when_given_ranges_or_lists():
    assert parse_int_list("1:8") == list(range(1, 9))
    assert parse_int_list("1:8:3") == [1, 4, 7]
    assert parse_int_list("4,1,2,2") == [1, 2, 4]
    with pytest.raises(UsageError):
        parse_int_list("0,1")
    assert parse_rates("auto") is None and parse_rates("none") == []
    assert parse_rates("5,7.5") == [5.0, 7.5]
    rates = auto_rates(40.0)
    assert rates == sorted(rates) and max(rates) < 40.0 and len(rates) == 4


@pytest.mark.needs_triton
def test_perf_command_writes_csv_plot_and_table_when_sweep_runs(tmp_path, media):  # noqa: F811
    from preedit.perf.speed import cli as analyzer_cli

    source = media("flower.mp4")
    results_md = tmp_path / "perf.md"
    argv = ["--clip", str(source), "--resolution", "256x144", "--frames", "2", "--concurrency", "1,2",
            "--request-rates", "20", "--measurement-interval-ms", "800", "--max-trials", "4",
            "--stability-percentage", "50", "--out-dir", str(tmp_path / "out"), "--results-md", str(results_md)]
    assert analyzer_cli.main(argv) == 0
    with (tmp_path / "out" / "sweep.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert {(r["mode"], float(r["concurrency"] or 0), float(r["request_rate_per_s"] or 0)) for r in rows} == {
        ("concurrency", 1.0, 0.0), ("concurrency", 2.0, 0.0), ("request_rate", 0.0, 20.0)}
    for r in rows:
        assert float(r["throughput_fps"]) > 0 and float(r["p99_latency_ms"]) >= float(r["p50_latency_ms"]) > 0
        assert r["resolution"] == "256x144"
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 1000
    assert "| 256x144 | concurrency 1 |" in (tmp_path / "out" / "sweep.md").read_text()
    log = results_md.read_text()
    assert "preedit perf --clip" in log and "| 256x144 | rate 20/s |" in log
