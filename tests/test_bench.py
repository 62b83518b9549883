"""`preedit bench`: the side-by-side table, the goal checks, and a short real run of every row."""

from __future__ import annotations

import json

import pytest

from preedit.perf.speed.bench import BenchRow, bench_table, bench_verdicts, build_x264_settings
from synthetic import media  # noqa: F401,E402 - fixture


def _rows(inproc_fps: float, triton_fps: float, x264_fps: float):
    return [BenchRow("inprocess", "in-process", int(inproc_fps * 10), 10.0),
            BenchRow("triton", "Triton", int(triton_fps * 10), 10.0),
            BenchRow("x264", "libx264 medium", int(x264_fps * 10), 10.0)]


def test_bench_table_states_ratio_to_x264_when_x264_measured():
    table = bench_table(_rows(40, 38, 10))
    assert "| in-process | 40.0 | 25.0 | 4.00x |" in table
    assert "| libx264 medium | 10.0 | 100.0 | 1.00x |" in table
    no_ref = bench_table(_rows(40, 38, 10)[:2])
    assert "| in-process | 40.0 | 25.0 | - |" in no_ref


def test_bench_verdicts_flag_goals_when_missed_or_met():
    met = bench_verdicts(_rows(40, 38, 10))
    assert "4.00x (goal >= 4x: met)" in met[0] and "5.0% of in-process fps (goal <= 10%: met)" in met[1]
    missed = bench_verdicts(_rows(30, 20, 10))
    assert "NOT met" in missed[0] and "33.3%" in missed[1] and "NOT met" in missed[1]
    assert build_x264_settings() == {"preset": "medium", "crf": "23"}


def test_bench_measures_inprocess_and_x264_on_real_frames_when_run(tmp_path, media):  # noqa: F811
    from preedit.perf.speed import bench

    out = tmp_path / "bench.json"
    assert bench.main(["--clip", str(media("flower.mp4")), "--resolution", "320x180", "--frames", "6",
                       "--duration-s", "0.6", "--rounds", "2", "--only", "inprocess", "--only", "x264",
                       "--json", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"inprocess", "x264"}
    assert rows["inprocess"]["fps"] > 0 and rows["inprocess"]["frames"] >= 2
    assert rows["x264"]["frames"] == 12 and rows["x264"]["fps"] > 0  # 6 frames per round, 2 rounds


@pytest.mark.needs_triton
def test_bench_measures_triton_and_pipeline_rows_when_server_embedded(tmp_path, media):  # noqa: F811
    from preedit.perf.speed import bench

    out = tmp_path / "bench.json"
    results = tmp_path / "perf.md"
    assert bench.main(["--clip", str(media("flower.mp4")), "--resolution", "320x180", "--frames", "4",
                       "--duration-s", "1", "--rounds", "1", "--only", "triton", "--only", "pipeline",
                       "--pipeline-max-frames", "12", "--x264-preset", "ultrafast", "--json", str(out),
                       "--results-md", str(results)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert rows["triton"]["fps"] > 0 and rows["triton"]["frames"] > 0
    assert rows["pipeline"]["frames"] == 12 and rows["pipeline"]["fps"] > 0
    assert "preedit bench --clip" in results.read_text()
