"""libvmaf/XPSNR scoring: pure command building and parsing, plus one real scoring run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from preedit.errors import InputError, UsageError
from preedit.quality import metrics
from preedit.quality.y4m import Y4MHeader, write_y4m


def test_build_score_cmd_names_all_models_and_features_when_nothing_skipped(tmp_path):
    cmd = metrics.build_score_cmd("d.hevc", "r.y4m", tmp_path / "v.json", tmp_path / "x.txt", ffmpeg="ffmpeg")
    assert cmd[0] == "ffmpeg" and cmd[cmd.index("-i") + 1] == "d.hevc"
    graph = cmd[cmd.index("-lavfi") + 1]
    for version in ("vmaf_v0.6.1\\:name=vmaf|", "vmaf_v0.6.1neg\\:name=vmaf_neg", "vmaf_v1.0.16_3d0h\\:name=vmaf_v1"):
        assert version in graph
    assert "name=psnr|name=float_ms_ssim" in graph and "xpsnr=stats_file=" in graph
    assert graph.count("setpts=N") == 2  # frames paired by index on both inputs


def test_build_score_cmd_drops_metrics_when_skipped(tmp_path):
    cmd = metrics.build_score_cmd("d", "r", tmp_path / "v.json", tmp_path / "x.txt", skip=["vmaf_v1", "ms_ssim"],
                                  ffmpeg="ffmpeg")  # fmt: skip
    graph = cmd[cmd.index("-lavfi") + 1]
    assert "vmaf_v1.0.16" not in graph and "ms_ssim" not in graph and "vmaf_v0.6.1neg" in graph


def test_build_score_cmd_refuses_log_path_when_it_needs_filter_escaping(tmp_path):
    with pytest.raises(UsageError, match="escaping"):
        metrics.build_score_cmd("d", "r", "/tmp/a:b/v.json", tmp_path / "x.txt", ffmpeg="ffmpeg")


def test_parse_vmaf_log_weights_psnr_yuv_6_1_1_when_given_a_log():
    frames = [{"frameNum": i, "metrics": {"vmaf": 90.0 + i, "vmaf_neg": 88.0, "vmaf_v1": 91.0, "psnr_y": 40.0,
                                           "psnr_cb": 44.0 + i, "psnr_cr": 48.0, "float_ms_ssim": 0.99}}
              for i in range(3)]  # fmt: skip
    n, per_frame, version = metrics.parse_vmaf_log(json.dumps({"version": "abc", "frames": frames}))
    assert n == 3 and version == "abc"
    assert per_frame["vmaf"] == [90.0, 91.0, 92.0]
    assert per_frame["psnr_yuv"][1] == pytest.approx((6 * 40.0 + 45.0 + 48.0) / 8)


def test_parse_vmaf_log_gives_nan_when_a_model_is_absent():
    frames = [{"metrics": {"vmaf": 90.0, "vmaf_neg": 88.0, "psnr_y": 40.0, "psnr_cb": 44.0, "psnr_cr": 48.0}}]
    _, per_frame, _ = metrics.parse_vmaf_log(json.dumps({"frames": frames}))
    assert math.isnan(per_frame["vmaf_v1"][0]) and math.isnan(per_frame["ms_ssim"][0])


def test_parse_vmaf_log_raises_input_error_when_log_is_garbage():
    with pytest.raises(InputError):
        metrics.parse_vmaf_log("not json")


def test_parse_xpsnr_log_caps_infinite_frames_when_frames_are_identical():
    text = "n:    1  XPSNR y: 46.6589  XPSNR u: 50.0052  XPSNR v: 49.8236\nn:    2  XPSNR y: inf  XPSNR u: inf  XPSNR v: inf\n"
    assert metrics.parse_xpsnr_log(text) == [46.6589, metrics.XPSNR_CAP_DB]


def test_unsupported_metrics_lists_v1_and_ms_ssim_when_frames_are_tiny():
    assert metrics.unsupported_metrics(640, 360) == []
    assert set(metrics.unsupported_metrics(160, 96)) == {"vmaf_v1", "ms_ssim"}
    assert metrics.unsupported_metrics(256, 160) == ["ms_ssim"]


def _write_clip(path, frames):
    h, w = frames[0][0].shape
    write_y4m(path, Y4MHeader(w, h, 25, 1, (f"W{w}", f"H{h}", "F25:1", "Ip", "A1:1", "C420jpeg")), frames)
    return path


def test_score_ranks_blurred_below_identical_when_scoring_real_frames(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 180, 320
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(3):
        y = (128 + 60 * np.sin((xx + 3 * t) / 7.0) * np.cos(yy / 9.0) + rng.normal(0, 6, (h, w))).clip(16, 235)
        frames.append((y.astype(np.uint8), np.full((h // 2, w // 2), 120, np.uint8), np.full((h // 2, w // 2), 136, np.uint8)))
    ref = _write_clip(tmp_path / "ref.y4m", frames)
    blurred = [((f[0][:, :-2].astype(int) + f[0][:, 1:-1] + f[0][:, 2:]) // 3, f[1], f[2]) for f in frames]
    blurred = [(np.pad(b[0], ((0, 0), (1, 1)), mode="edge").astype(np.uint8), b[1], b[2]) for b in blurred]
    dist = _write_clip(tmp_path / "dist.y4m", blurred)

    same = metrics.score(ref, ref, expect_frames=3)
    worse = metrics.score(dist, ref, expect_frames=3)
    assert same.frames == worse.frames == 3
    assert same.metrics["psnr_y"] == pytest.approx(60.0) and same.metrics["ms_ssim"] == pytest.approx(1.0)
    for key in ("vmaf", "vmaf_neg", "vmaf_v1", "psnr_y", "psnr_yuv", "ms_ssim", "xpsnr_y"):
        assert math.isfinite(worse.metrics[key])
        assert worse.metrics[key] < same.metrics[key], key
    with pytest.raises(InputError, match="expected 5"):
        metrics.score(dist, ref, expect_frames=5)
