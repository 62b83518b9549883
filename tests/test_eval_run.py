"""The whole `preedit eval` on two short real clips, two codecs, 5 rate points (tiny frames and sizes).

Checks the report structure, the known sharpening pattern (VMAF gain much larger than VMAF-NEG
gain), that an identity pre-editor gives BD-rate 0, and that a rerun is served from the cache.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from preedit.network import identity_model
from preedit.perf.rd import eval as ev
from preedit.perf.rd import report as eval_report
from preedit.engines import TorchEngine
from preedit.quality.metrics import METRICS

CLIPS = ("asl-bird.mkv", "park_joy_480x270_50fps.y4m")  # full-range H.264 in MKV; uncompressed 50 fps y4m
CODECS = ("libx265", "libsvtav1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from preedit.paths import clips_dir

    paths = [clips_dir() / c for c in CLIPS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"shared clips {missing} not found under {clips_dir()}")
    root = tmp_path_factory.mktemp("eval")
    cfg = ev.EvalConfig(clips=paths, out_dir=root / "out", codecs=CODECS, variants=("source", "preedit", "unsharp"),
                        frames=4, max_height=180, jobs=2, cache_dir=root / "cache", command="pytest")  # fmt: skip
    editor = TorchEngine(identity_model())
    result = ev.run_eval(cfg, editor, progress=False)
    eval_report.write_reports(result, cfg.out_dir)
    return cfg, editor, result


def test_eval_writes_every_point_and_report_when_run_on_two_clips(run):
    cfg, editor, result = run
    out = cfg.out_dir
    assert len(result.points) == len(CLIPS) * len(CODECS) * 3 * 5
    for c in result.clips:
        assert c.frames == 4 and c.height == 180 and c.width % 2 == 0
    assert {p["frames"] for p in result.points} == {4}
    assert all(p["rate_kbps"] > 0 and p["bytes"] <= p["file_bytes"] for p in result.points)
    assert {c.name: c.color_range for c in result.clips}["asl-bird"] == "full"

    data = json.loads((out / "eval.json").read_text())
    assert data["model"]["hash"] == editor.model_hash
    assert {"ffmpeg", "libvmaf", "libx265", "libsvtav1"} <= set(data["tool_versions"])
    assert len(data["points"]) == len(result.points) and "vmaf_neg" in data["points"][0]
    with open(out / "points.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(result.points)

    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| clip | codec"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:2] == ["clip", "codec"] and len(cols) == 2 + 2 * len(METRICS)  # groups: preedit, unsharp
    assert cols[2].startswith("preedit") and cols[2 + len(METRICS)].startswith("unsharp")
    for clip in ("asl-bird", "park_joy_480x270_50fps"):
        for codec in CODECS:
            assert f"| {clip} | {codec} |" in md
    assert "bad cases" in md and editor.model_hash in md
    for clip in ("asl-bird", "park_joy_480x270_50fps"):
        for metric in METRICS:
            assert (out / f"rd_{clip}_{metric}.png").stat().st_size > 1000
        for codec in CODECS:
            assert (out / f"crops_{clip}_{codec}.png").stat().st_size > 1000


def test_eval_gives_zero_bd_rate_when_preeditor_is_identity(run):
    _, _, result = run
    rows = [r for r in result.bd if r["variant"] == "preedit"]
    assert len(rows) == len(CLIPS) * len(CODECS) * len(METRICS)
    for r in rows:
        assert math.isfinite(r["bd_rate_pchip"]), r
        assert r["bd_rate_pchip"] == 0.0 and r["bd_rate_akima"] == 0.0 and r["bd_quality_pchip"] == 0.0
    assert all(s["bad_cases"] == 0 for s in result.summary if s["variant"] == "preedit")


def test_eval_shows_vmaf_inflation_when_baseline_is_unsharp(run):
    _, _, result = run
    by = {(r["clip"], r["codec"], r["metric"]): r for r in result.bd if r["variant"] == "unsharp"}
    for clip in ("asl-bird", "park_joy_480x270_50fps"):
        for codec in CODECS:
            vmaf, neg = by[(clip, codec, "vmaf")], by[(clip, codec, "vmaf_neg")]
            # Sharpening "saves" far more bits by VMAF than by NEG, which caps enhancement gain.
            assert vmaf["bd_rate_pchip"] < neg["bd_rate_pchip"] - 15.0, (clip, codec, vmaf, neg)
            assert vmaf["bd_quality_pchip"] > neg["bd_quality_pchip"] + 2.0, (clip, codec, vmaf, neg)


def test_eval_reuses_cache_when_rerun_with_same_config(run):
    cfg, editor, first = run
    cfg2 = ev.EvalConfig(clips=cfg.clips, out_dir=cfg.out_dir / "again", codecs=cfg.codecs, variants=cfg.variants,
                         frames=cfg.frames, max_height=cfg.max_height, cache_dir=cfg.cache_dir, plots=False,
                         crops=False)  # fmt: skip
    again = ev.run_eval(cfg2, editor, progress=False)
    assert all(p["cached"] for p in again.points)
    assert [p["vmaf_neg"] for p in again.points] == [p["vmaf_neg"] for p in first.points]
