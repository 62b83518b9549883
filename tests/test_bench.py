"""`preedit bench`: the side-by-side table, the goal checks, and a short real run of every row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preedit.perf.speed.bench import (BenchRow, bench_ratios, bench_table, bench_verdicts, build_x264_settings,
                                      round_ratio_lines, serial_ideal_fps, served_instances)
from synthetic import media  # noqa: F401,E402 - fixture


def _rows(inproc_fps: float, triton_fps: float, x264_fps: float, pipeline_fps: float = 0.0):
    rows = [BenchRow("inprocess", "in-process", int(inproc_fps * 10), 10.0),
            BenchRow("triton", "Triton", int(triton_fps * 10), 10.0),
            BenchRow("x264", "libx264 medium", int(x264_fps * 10), 10.0)]
    if pipeline_fps:
        rows.append(BenchRow("pipeline", "pipeline", int(pipeline_fps * 10), 10.0))
    return rows


def test_bench_table_states_ratio_to_x264_when_x264_measured():
    table = bench_table(_rows(40, 38, 10))
    assert "| in-process | 40.0 | 25.0 | 4.00x |" in table
    assert "| libx264 medium | 10.0 | 100.0 | 1.00x |" in table
    no_ref = bench_table(_rows(40, 38, 10)[:2])
    assert "| in-process | 40.0 | 25.0 | - |" in no_ref


def test_bench_verdicts_flag_goals_when_missed_or_met():
    met = bench_verdicts(_rows(40, 38, 10, pipeline_fps=7.8))
    assert "4.00x (goal >= 4x: met)" in met[0] and "95.0% of in-process fps (goal >= 88%: met)" in met[1]
    assert "97.5% of the serial ideal 8.0 fps" in met[2] and met[2].endswith("goal >= 95%: met)")
    missed = bench_verdicts(_rows(30, 20, 10, pipeline_fps=6.0))
    assert "NOT met" in missed[0] and "66.7%" in missed[1] and "NOT met" in missed[1]
    assert "80.0% of the serial ideal 7.5 fps" in missed[2] and "NOT met" in missed[2]
    assert build_x264_settings() == {"preset": "medium", "crf": "23"}


def test_goals_use_the_faster_in_process_row_and_per_round_lines_when_rows_measured(tmp_path):
    rows = _rows(40, 38, 10, pipeline_fps=7.0) + [BenchRow("served_shape", "served shape", 500, 10.0)]
    ratios = bench_ratios(rows)
    assert ratios["triton_kept"] == pytest.approx(0.76)  # against the served shape, the faster row
    assert ratios["triton_vs_inprocess"] == pytest.approx(0.95)
    assert ratios["serial_ideal_fps"] == pytest.approx(serial_ideal_fps(50, 10))
    assert ratios["pipeline_vs_ideal"] == pytest.approx(7.0 / serial_ideal_fps(50, 10))
    lines = bench_verdicts(rows)
    assert "5.00x" in lines[0] and "76.0% of in-process fps" in lines[1] and "NOT met" in lines[1]
    assert "Triton = 95.0% of ORT's default session, 76.0% of the served shape in-process" in lines[-1]
    per_round = {"inprocess": [(400, 10.0), (200, 10.0)], "triton": [(380, 10.0), (380, 10.0)]}
    assert round_ratio_lines(per_round)[0] == "per round, Triton kept share: 95.0%, 190.0%"
    assert round_ratio_lines({}) == []
    model = tmp_path / "m"
    model.mkdir()
    assert served_instances(model) == 1  # no config
    from preedit.export import build_model_config, write_model_config

    write_model_config(build_model_config("m", backend="python", instance_kind="KIND_CPU", instance_count=3),
                       model / "config.pbtxt")
    assert served_instances(model) == 3


def test_benchmarks_block_is_replaced_in_place_when_rerun(tmp_path):
    from preedit.perf.speed.report import replace_marked_block

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# B\n\nbefore\n")
    replace_marked_block(md, "preedit bench 1080p", "first")
    replace_marked_block(md, "preedit bench 720p", "other")
    replace_marked_block(md, "preedit bench 1080p", "second")
    text = md.read_text()
    assert "first" not in text and text.count("second") == 1 and "other" in text and text.startswith("# B\n\nbefore")


def test_encode_rows_cycle_the_decoded_frames_when_more_are_asked():
    from preedit.perf.speed.bench import cycled

    frames = np.arange(3, dtype=np.uint8).reshape(3, 1, 1)
    assert cycled(frames, 7).ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_serial_ideal_is_the_harmonic_combination_of_the_two_stages():
    assert serial_ideal_fps(55.7, 17.3) == pytest.approx(13.2, abs=0.05)  # the figures
    assert serial_ideal_fps(0.0, 17.3) == 0.0
    assert bench_ratios(_rows(40, 38, 10)) == {"triton_kept": pytest.approx(0.95),
                                               "triton_vs_inprocess": pytest.approx(0.95)}  # no pipeline row


def test_bench_measures_inprocess_and_x264_on_real_frames_when_run(tmp_path, media):  # noqa: F811
    from preedit.perf.speed import bench

    out = tmp_path / "bench.json"
    assert bench.main(["--clip", str(media("flower.mp4")), "--resolution", "320x180", "--frames", "6",
                       "--duration-s", "0.6", "--rounds", "2", "--only", "inprocess", "--only", "x264",
                       "--pipeline-max-frames", "9", "--json", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"inprocess", "x264"}
    assert rows["inprocess"]["fps"] > 0 and rows["inprocess"]["frames"] >= 2
    assert rows["x264"]["frames"] == 18 and rows["x264"]["fps"] > 0  # 9 (the 6 decoded, cycled) a round, 2 rounds


@pytest.mark.needs_triton
def test_bench_measures_triton_and_pipeline_rows_when_server_embedded(tmp_path, media):  # noqa: F811
    from preedit.perf.speed import bench

    out = tmp_path / "bench.json"
    results = tmp_path / "perf.md"
    assert bench.main(["--clip", str(media("flower.mp4")), "--resolution", "320x180", "--frames", "4",
                       "--duration-s", "1", "--rounds", "2", "--pipeline-max-frames", "12",
                       "--x264-preset", "ultrafast", "--json", str(out), "--results-md", str(results)]) == 0
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["triton"]["fps"] > 0 and rows["triton"]["frames"] > 0
    assert rows["pipeline"]["frames"] == 24 and rows["pipeline"]["fps"] > 0  # 12 frames in each of 2 rounds
    assert set(data["ratios"]) == {"triton_kept", "serial_ideal_fps", "pipeline_vs_ideal", "triton_vs_inprocess",
                                   "triton_vs_served_shape"}
    assert rows["served_shape"]["frames"] > 0 and len(data["per_round"]["triton"]) == 2
    text = results.read_text()
    assert "preedit bench --clip" in text and "Triton kept share" in text and "of the serial ideal" in text
