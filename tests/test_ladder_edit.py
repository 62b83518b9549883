"""The pre-edited ladder (issue 19): renditions batched into the server's requests, and the model's
QP hint following the QP each rendition's encoder reports.

- `preedit.codecs.reported_qp` reads the frame QP libx264 / libx265 / libsvtav1 attach to packets;
- `QpFollower`: a CRF hint never moves; a bitrate hint moves to the CRF-equivalent of the reported
  QPs, and a lower target gets a coarser hint;
- `preedit ladder` through the embedded Triton with the shipped model: two rungs of one height share
  each request (a row per rendition, each with its own hint), every size of a batch goes in one
  `run_many` call, every rendition decodes to the source's frame count, the hints follow the rate.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from preedit import codecs
from preedit.cli import main as cli_main
from preedit.client import ladder as ladder_mod
from preedit.client.encode import EncoderSettings, QpFollower, encoder_options, model_qp
from preedit.client.interfaces import StreamInfo
from synthetic import _picture, make_clip


def _frames(n=24, width=192, height=112):
    rng = np.random.default_rng(1)
    return [av.VideoFrame.from_ndarray(_picture(i, width, height, rng), format="rgb24").reformat(format="yuv420p")
            for i in range(n)]


def _encode(settings: EncoderSettings, frames, follower=None):
    lib, opts, bit_rate = encoder_options(settings)
    ctx = av.CodecContext.create(lib, "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 25), 25
    if bit_rate:
        ctx.bit_rate = bit_rate
    ctx.options = opts
    ctx.open()
    packets = []
    for i, f in enumerate(frames):
        f.pts = i
        packets += ctx.encode(f)
    packets += ctx.encode(None)
    if follower is not None:
        follower.observe(packets)
    return packets


@pytest.mark.parametrize("family", ["h264", "hevc", "av1"])
def test_every_encoder_reports_a_frame_qp_with_each_packet(family):
    crf = {"h264": 30, "hevc": 30, "av1": 45}[family]
    packets = _encode(EncoderSettings(codec=family, crf=crf, preset="8" if family == "av1" else "veryfast"), _frames(12))
    qps = [codecs.reported_qp(p) for p in packets]
    assert len(qps) == 12 and all(q is not None and 0 < q <= codecs.MAX_QUANTIZER[family] for q in qps)
    assert codecs.reported_qp(av.Packet(b"\0\0\0\1")) is None  # a packet without the statistics


def test_crf_hint_is_fixed_and_bitrate_hint_follows_the_reported_qp():
    frames = _frames()
    info = StreamInfo(192, 112, Fraction(1, 25), Fraction(25))
    crf = QpFollower(EncoderSettings(codec="hevc", crf=30, preset="veryfast"), info)
    _encode(EncoderSettings(codec="hevc", crf=30, preset="veryfast"), frames, crf)
    assert crf.advance(24) == model_qp(EncoderSettings(codec="hevc", crf=30), info) == 30 and crf.history == []
    hints = {}
    for kbps in (60, 600):
        settings = EncoderSettings(codec="hevc", bitrate_kbps=kbps, preset="veryfast")
        f = QpFollower(settings, info)
        start = f.qp
        packets = _encode(settings, frames, f)
        mean = float(np.mean([codecs.reported_qp(p) for p in packets]))
        hints[kbps] = f.advance(24)
        assert hints[kbps] == pytest.approx(codecs.followed_model_qp("hevc", mean)) and f.history == [(24, hints[kbps])]
        assert hints[kbps] != start  # the bits-per-pixel estimate is replaced by what the encoder did
    assert hints[60] > hints[600] + 3  # a tenth of the rate: a much coarser encode, a much stronger hint


def test_ladder_batches_renditions_per_size_and_follows_each_encoders_qp(tmp_path, monkeypatch, caplog):
    src = make_clip(tmp_path / "src.mp4", width=320, height=240, frames=100, fps=25)
    calls = []
    real = ladder_mod.run_many

    def spy(engine, jobs):
        calls.append([(nv12.shape, sorted(set(np.round(np.ravel(qp), 3)))) for nv12, qp in jobs])
        return real(engine, jobs)

    monkeypatch.setattr(ladder_mod, "run_many", spy)
    out = tmp_path / "out"
    caplog.set_level("INFO", logger="preedit.client.ladder")
    rungs = ["240:500", "240:120", "120:100"]
    argv = ["ladder", str(src), "-o", str(out), "--codec", "h264", "--preset", "veryfast", "--segment-s", "1",
            "--batch", "4"] + [a for r in rungs for a in ("--rendition", r)]
    assert cli_main(argv) == 0
    assert len(calls) == 25  # 100 frames in batches of 4: one call per batch, both sizes in it
    for jobs in calls:
        assert [shape for shape, _ in jobs] == [(8, 360, 320), (4, 180, 160)]  # 4 frames × 2 rungs of 240p; 4 × 1
    assert all(len(jobs[0][1]) == 2 for jobs in calls[-5:])  # the two 240p rungs carry hints of their own
    master = (out / "master.m3u8").read_text()
    assert "240p_500k/index.m3u8" in master and "240p_120k/index.m3u8" in master and "120p/index.m3u8" in master
    for name in ("240p_500k", "240p_120k", "120p"):
        with av.open(str(out / name / "index.m3u8")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 100
    hints = {}
    for rec in caplog.records:
        if "model QP hint per segment" in rec.getMessage():
            name, values = rec.getMessage().split(": model QP hint per segment ")
            hints[name] = [float(v) for v in values.split()]
    assert set(hints) == {"240p_500k", "240p_120k", "120p"} and all(len(v) >= 3 for v in hints.values())
    assert np.mean(hints["240p_120k"][1:]) > np.mean(hints["240p_500k"][1:])  # less rate, coarser encode


def test_ladder_rejects_a_rung_given_twice_and_a_bad_batch(tmp_path, capsys):
    src = make_clip(tmp_path / "src.mp4", width=160, height=120, frames=10, fps=25)
    base = ["ladder", str(src), "-o", str(tmp_path / "o"), "--bypass"]
    assert cli_main(base + ["--rendition", "120:100", "--rendition", "120:100"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert cli_main(base + ["--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err


def test_pre_edited_10bit_ladder_keeps_10_bits_and_every_frame(tmp_path, monkeypatch):
    calls = []
    real = ladder_mod.run_many
    monkeypatch.setattr(ladder_mod, "run_many", lambda e, jobs: calls.append([j[0].shape for j in jobs]) or real(e, jobs))
    src = make_clip(tmp_path / "src10.mkv", width=256, height=144, frames=30, fps=25, pix_fmt="yuv420p10le",
                    codec="libx265")
    out = tmp_path / "out"
    assert cli_main(["ladder", str(src), "-o", str(out), "--codec", "hevc", "--preset", "ultrafast", "--segment-s", "1",
                     "--batch", "4", "--rendition", "144:200", "--rendition", "72:80"]) == 0  # 30 = 7 batches of 4 + 2
    for name in ("144p", "72p"):
        with av.open(str(out / name / "index.m3u8")) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == 30 and {f.format.name for f in frames} == {"yuv420p10le"}
    # the model saw the 8-bit NV12 view of each 10-bit frame, in 8 batches (the last one of 2 frames)
    assert len(calls) == 8 and calls[0] == [(4, 216, 256), (4, 108, 128)] and calls[-1] == [(2, 216, 256), (2, 108, 128)]
