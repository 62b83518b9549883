"""Pure parts of `preedit eval`: encode/reference commands, bitstream sizes, clip sets, BD collation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from preedit.errors import InputError, UsageError
from preedit import codecs
from preedit.perf.rd import variants as _codecs
from preedit.perf.rd import sources as _sources
from preedit.perf.rd import eval as ev


def test_build_encode_cmd_merges_x265_tuning_into_one_params_arg_when_tuned():
    codec = codecs.get_codec("libx265")
    cmd = codecs.ffmpeg_argv(codec, Path("in.y4m"), Path("o.hevc"), 32, tune=True, vf="unsharp=5:5:1.0",
                                   ffmpeg="ffmpeg")  # fmt: skip
    assert cmd.count("-x265-params") == 1
    assert cmd[cmd.index("-x265-params") + 1] == "log-level=error:info=0:aq-mode=3:psy-rdoq=1.0"
    assert cmd[cmd.index("-crf") + 1] == "32" and cmd[cmd.index("-vf") + 1] == "unsharp=5:5:1.0"
    assert cmd[-3:] == ["-f", "hevc", "o.hevc"]


def test_build_encode_cmd_uses_obu_and_tune_when_codec_is_svtav1():
    codec = codecs.get_codec("libsvtav1")
    plain = codecs.ffmpeg_argv(codec, Path("in.y4m"), Path("o.obu"), 44, ffmpeg="ffmpeg")
    tuned = codecs.ffmpeg_argv(codec, Path("in.y4m"), Path("o.obu"), 44, tune=True, ffmpeg="ffmpeg")
    assert "-svtav1-params" not in plain and tuned[tuned.index("-svtav1-params") + 1] == "tune=0"
    assert plain[-3:] == ["-f", "obu", "o.obu"] and "-vf" not in plain


def test_build_encode_cmd_uses_cq_when_codec_is_nvenc():
    cmd = codecs.ffmpeg_argv(codecs.get_codec("hevc_nvenc"), Path("i"), Path("o"), 30, ffmpeg="ffmpeg")
    assert cmd[cmd.index("-cq") + 1] == "30" and "-crf" not in cmd


def test_get_codec_lists_choices_when_name_is_unknown():
    with pytest.raises(UsageError, match="libx265"):
        codecs.get_codec("x266")
    with pytest.raises(UsageError, match="unsharp"):
        _codecs.get_variant("sharpen")


def test_video_bytes_excludes_sei_when_stream_is_h264_or_hevc():
    sps = b"\x00\x00\x00\x01" + bytes([0x67]) + b"\x11" * 10
    sei = b"\x00\x00\x01" + bytes([0x06]) + b"\x22" * 700
    idr = b"\x00\x00\x01" + bytes([0x65]) + b"\x33" * 50
    data = sps + sei + idr
    assert _codecs.video_bytes(data, "h264") == len(data) - (3 + 1 + 700)
    hevc_sei = b"\x00\x00\x01" + bytes([39 << 1, 1]) + b"\x44" * 300
    hevc_vps = b"\x00\x00\x00\x01" + bytes([32 << 1, 1]) + b"\x55" * 20
    data = hevc_vps + hevc_sei
    assert _codecs.video_bytes(data, "hevc") == len(hevc_vps)
    assert _codecs.video_bytes(data, "av1") == len(data)


def test_model_qp_maps_av1_crf_to_equal_quality_qp_and_clamps():
    from preedit.qp import av1_model_qp

    assert codecs.model_qp("hevc", 32, qp_range=(10.0, 51.0)) == 32.0
    for crf in (36, 44, 51, 57, 63):  # the CRF map of preedit.qp (fitted on training clips)
        assert codecs.model_qp("av1", crf, qp_range=(10.0, 51.0)) == pytest.approx(av1_model_qp(crf, "crf"))
    assert codecs.model_qp("hevc", 5, qp_range=(10.0, 51.0)) == 10.0


def test_parse_raw_name_reads_geometry_when_name_carries_it():
    r = _sources.parse_raw_name("CiscoVT2people_320x192_12fps.yuv")
    assert (r.width, r.height, r.fps, r.pix_fmt) == (320, 192, 12.0, "yuv420p")
    r = _sources.parse_raw_name("sparks_480x270_yuv420p10le.yuv")
    assert (r.width, r.height, r.fps, r.pix_fmt) == (480, 270, 25.0, "yuv420p10le")
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        _sources.parse_raw_name("clip.yuv")


def test_build_reference_cmd_converts_range_and_bounds_frames_when_clip_is_raw():
    cmd = _sources.build_reference_cmd(Path("sparks_480x270_yuv420p10le.yuv"), Path("r.y4m"), frames=8,
                                       max_height=180, ffmpeg="ffmpeg")  # fmt: skip
    assert cmd[cmd.index("-f") + 1] == "rawvideo" and cmd[cmd.index("-pix_fmt") + 1] == "yuv420p10le"
    assert cmd[cmd.index("-frames:v") + 1] == "8"
    vf = cmd[cmd.index("-vf") + 1]
    assert "out_range=tv" in vf and "min(180" in vf and "format=yuv420p" in vf
    with pytest.raises(UsageError):
        _sources.build_reference_cmd(Path("a.mp4"), Path("r.y4m"), frames=0, max_height=0, ffmpeg="ffmpeg")


def test_default_clips_uses_held_out_list_and_warns_when_one_is_missing(tmp_path, caplog):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mkv", "c.y4m", "notes.md"):
        (clips / name).write_bytes(b"x")
    assert [p.name for p in _sources.default_clips(clips, ("c.y4m", "missing.mp4"))] == ["c.y4m"]
    assert "missing.mp4" in caplog.text
    assert [p.name for p in _sources.resolve_clips([], clips, ("b.mkv", "a.mp4"))] == ["a.mp4", "b.mkv"]


def test_clip_split_matches_the_shipped_training_config():
    import yaml

    from preedit.paths import REPO_ROOT
    from preedit.splits import HELDOUT_CLIPS, TRAIN_CLIPS

    cfg = yaml.safe_load((REPO_ROOT / "training" / "default" / "config.yaml").read_text())
    assert tuple(cfg["heldout"]) == HELDOUT_CLIPS and tuple(cfg["train_sources"]) == TRAIN_CLIPS
    assert not set(HELDOUT_CLIPS) & set(TRAIN_CLIPS)


def test_eval_config_adds_anchor_and_rejects_bad_values_when_constructed(tmp_path):
    cfg = ev.EvalConfig(clips=[tmp_path / "a.mp4"], out_dir=tmp_path, variants=["preedit"])
    assert cfg.variants == ["source", "preedit"]
    with pytest.raises(UsageError, match="ladder"):
        ev.EvalConfig(clips=[tmp_path / "a.mp4"], out_dir=tmp_path, ladders={"libx265": [30]})
    with pytest.raises(UsageError, match="frames"):
        ev.EvalConfig(clips=[tmp_path / "a.mp4"], out_dir=tmp_path, frames=0)
    with pytest.raises(UsageError, match="no clips"):
        ev.EvalConfig(clips=[], out_dir=tmp_path)


def _pt(clip, variant, rate, vmaf):
    base = {k: vmaf for k in ("vmaf", "vmaf_neg", "vmaf_v1", "psnr_y", "psnr_yuv", "ms_ssim", "xpsnr_y")}
    return {"clip": clip, "codec": "libx265", "variant": variant, "rate_kbps": rate, **base}


def test_summarize_averages_per_clip_and_counts_bad_cases_when_clips_disagree():
    pts = []
    q = [60.0, 70.0, 80.0, 90.0, 95.0]
    r = [100.0, 200.0, 400.0, 800.0, 1600.0]
    for clip, factor in (("a", 0.8), ("b", 1.1)):
        pts += [_pt(clip, "source", ri, qi) for ri, qi in zip(r, q)]
        pts += [_pt(clip, "preedit", ri * factor, qi) for ri, qi in zip(r, q)]
    rows, notes = ev.compute_bd(pts)
    assert not notes
    by = {(x["clip"], x["metric"]): x for x in rows}
    assert by[("a", "vmaf")]["bd_rate_pchip"] == pytest.approx(-20.0)
    assert by[("b", "vmaf")]["bd_rate_akima"] == pytest.approx(10.0)
    summary = {(s["variant"], s["metric"]): s for s in ev.summarize(rows)}
    s = summary[("preedit", "vmaf_neg")]
    assert s["mean_bd_rate_pchip"] == pytest.approx(-5.0)  # mean of -20 and +10, not a pooled curve
    assert s["bad_cases"] == 1 and s["clips_valid"] == 2
    assert not math.isnan(s["mean_bd_quality_pchip"])


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--codecs", "x266"], 2, "choose from libx265"),
        (["--ladder", "libx265:22,27"], 2, "CODEC=VALUE"),
        (["--ladder", "libx265=22,abc"], 2, "comma-separated numbers"),
        (["--variants", "source,sharpen"], 2, "choose from source"),
    ],
)
def test_eval_cli_exits_with_usage_error_when_options_are_bad(tmp_path, capsys, args, code, text):
    from preedit.cli import run_subcommand

    clip = tmp_path / "a.y4m"
    clip.write_bytes(b"YUV4MPEG2 W16 H16 F25:1\n")
    assert run_subcommand("eval", [str(clip), "--out", str(tmp_path / "o"), *args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("preedit eval: error:") and text in err[0]


def test_eval_cli_exits_with_input_error_when_clip_is_missing(tmp_path, capsys):
    from preedit.cli import run_subcommand

    assert run_subcommand("eval", [str(tmp_path / "nope.mp4")]) == 3
    assert "not found" in capsys.readouterr().err
