"""`preedit eval --vmaf-device`: libvmaf_cuda where FFmpeg and a GPU have it, CPU libvmaf otherwise.

No GPU and no libvmaf_cuda build here: the CUDA filter graph is run with its two CUDA filters
swapped for their CPU counterparts (hwupload_cuda → null, libvmaf_cuda → libvmaf), which checks
its structure and the log merge for real; the fallback is checked against this machine's FFmpeg.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from preedit.errors import UsageError
from preedit.quality import metrics
from preedit.quality.ffmpeg import ffmpeg_exe, ffmpeg_has_filter, run_command


def _lavfi_y4m(path: Path, graph: str) -> Path:
    run_command([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                 "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(path)], what="test clip")
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("vmaf_cuda")
    ref = _lavfi_y4m(root / "ref.y4m", "testsrc2=size=256x192:rate=25:duration=0.16")  # 4 frames, every metric runs
    dist = _lavfi_y4m(root / "dist.y4m", "testsrc2=size=256x192:rate=25:duration=0.16,gblur=sigma=1.5")
    return dist, ref


def test_cuda_graph_uploads_both_sides_and_splits_models_between_gpu_and_cpu(tmp_path):
    cmd = metrics.build_score_cmd("d.hevc", "r.y4m", tmp_path / "v.json", tmp_path / "x.txt", ffmpeg="ffmpeg",
                                  vmaf_device="cuda", cuda_log=tmp_path / "c.json", cuda_device=1)
    graph = cmd[cmd.index("-lavfi") + 1]
    assert graph.count("hwupload_cuda=device=1") == 2 and "split=3" in graph
    gpu = graph[graph.index("libvmaf_cuda="):]
    cpu = graph[graph.index("]libvmaf=") + 1:graph.index(";[d2]")]
    assert "name=vmaf|" in gpu and "name=vmaf_neg'" in gpu and "vmaf_v1" not in gpu
    assert f"log_path={tmp_path / 'c.json'}" in gpu and gpu.endswith(",nullsink")
    assert "name=vmaf_v1" in cpu and "name=vmaf\\:" not in cpu.replace("vmaf_v1", "")
    assert "name=psnr|name=float_ms_ssim" in cpu and "xpsnr=stats_file" in graph
    cpu_only = metrics.build_score_cmd("d.hevc", "r.y4m", "v.json", "x.txt", ffmpeg="ffmpeg")
    assert "cuda" not in " ".join(cpu_only)


@pytest.mark.parametrize("kwargs", [dict(bit_depth=10), dict(skip=("vmaf_v1",)), dict()])
def test_cuda_graph_refuses_what_libvmaf_cuda_cannot_score(tmp_path, kwargs):
    cuda_log = None if not kwargs else tmp_path / "c.json"
    with pytest.raises(UsageError, match="libvmaf_cuda"):
        metrics.build_score_cmd("d", "r", "v.json", "x.txt", ffmpeg="ffmpeg", vmaf_device="cuda", cuda_log=cuda_log,
                                **kwargs)


def test_cuda_graph_with_cpu_stand_ins_scores_exactly_like_the_cpu_graph(pair, tmp_path):
    dist, ref = pair
    vlog, xlog, clog = tmp_path / "v.json", tmp_path / "x.txt", tmp_path / "c.json"
    cmd = metrics.build_score_cmd(dist, ref, vlog, xlog, vmaf_device="cuda", cuda_log=clog)
    swapped = [a.replace("hwupload_cuda=device=0", "null").replace("libvmaf_cuda=", "libvmaf=") for a in cmd]
    run_command(swapped, error=UsageError, what="CUDA graph with CPU stand-ins")
    cpu_log = json.loads(vlog.read_text())["frames"][0]["metrics"]
    assert "vmaf" not in cpu_log and "vmaf_v1" in cpu_log  # VMAF/NEG were not computed twice
    merged = metrics.scores_from_logs(vlog.read_text(), xlog.read_text(), clog.read_text(), expect_frames=4)
    ref_scores = metrics.score(dist, ref)
    assert merged.frames == ref_scores.frames == 4
    for key in metrics.METRICS:
        assert math.isfinite(merged.metrics[key]) and merged.metrics[key] == pytest.approx(ref_scores.metrics[key], abs=1e-9), key
    assert merged.metrics["vmaf"] < 99  # the blur is seen


def test_device_choice_falls_back_to_cpu_with_one_line_when_filter_or_device_is_missing():
    assert metrics.choose_vmaf_device("cpu", has_filter=True, cuda_error=None) == ("cpu", None)
    assert metrics.choose_vmaf_device("auto", has_filter=True, cuda_error=None) == ("cuda", None)
    assert metrics.choose_vmaf_device("cuda", has_filter=True, cuda_error=None) == ("cuda", None)
    dev, note = metrics.choose_vmaf_device("cuda", has_filter=False, cuda_error=None, ffmpeg="ffmpeg-x")
    assert dev == "cpu" and "ffmpeg-x has no libvmaf_cuda" in note and "\n" not in note
    dev, note = metrics.choose_vmaf_device("auto", has_filter=True, cuda_error="CUDA_ERROR_NO_DEVICE")
    assert dev == "cpu" and "CUDA_ERROR_NO_DEVICE" in note and "CPU libvmaf" in note
    with pytest.raises(UsageError, match="valid: cpu, cuda, auto"):
        metrics.choose_vmaf_device("gpu", has_filter=True, cuda_error=None)


def test_auto_falls_back_for_real_when_this_ffmpeg_has_no_libvmaf_cuda(monkeypatch):
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    assert ffmpeg_has_filter("libvmaf") and ffmpeg_has_filter("xpsnr")  # the probe reads this binary's list
    if ffmpeg_has_filter("libvmaf_cuda"):
        pytest.skip("this FFmpeg has libvmaf_cuda (a GPU build): the fallback is not what happens here")
    dev, note = metrics.resolve_vmaf_device("auto")
    assert dev == "cpu" and "no libvmaf_cuda filter" in note and "scoring with CPU libvmaf" in note


def test_score_on_cuda_scores_small_clips_on_cpu(tmp_path):
    clip = _lavfi_y4m(tmp_path / "s.y4m", "testsrc2=size=64x48:rate=25:duration=0.08")
    result = metrics.score(clip, clip, vmaf_device="cuda")  # 64x48: VMAF v1 and MS-SSIM skipped → CPU graph
    assert result.frames == 2 and result.metrics["vmaf"] > 90 and math.isnan(result.metrics["vmaf_v1"])


def test_eval_cli_auto_says_it_scored_on_cpu_and_records_it(tmp_path, caplog, capsys):
    from preedit.cli import main as cli_main

    clip = _lavfi_y4m(tmp_path / "c.y4m", "testsrc2=size=64x48:rate=25:duration=0.12")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code = cli_main(["eval", str(clip), "--codecs", "libx264", "--variants", "source", "--ladder",
                         "libx264=30,40", "--frames", "3", "--vmaf-device", "auto", "--out", str(out),
                         "--no-cache", "--no-plots", "--no-crops", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "eval.json").read_text())
    assert data["config"]["vmaf_device"] == "cpu" and data["config"]["vmaf_device_requested"] == "auto"
    notes = [w for w in data["warnings"] if "libvmaf_cuda" in w]
    assert len(notes) == 1 and notes[0] in caplog.text and "vmaf_device" not in data["tool_versions"]
    assert all(math.isfinite(p["vmaf_neg"]) for p in data["points"])


def test_gpu_check_vmaf_step_reports_why_it_cannot_compare_here(monkeypatch, capsys):
    import importlib.util

    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    if ffmpeg_has_filter("libvmaf_cuda"):
        pytest.skip("this FFmpeg has libvmaf_cuda")
    spec = importlib.util.spec_from_file_location("gpu_check_vmaf_cuda",
                                                  Path(__file__).resolve().parents[1] / "deploy/gpu_check_vmaf_cuda.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 1
    row = json.loads(capsys.readouterr().out)
    assert row["vmaf_device"] == "cpu" and "no libvmaf_cuda" in row["note"]
