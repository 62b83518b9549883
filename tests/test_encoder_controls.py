"""Encoder controls (issue 19 item 3): --keyint, --maxrate/--bufsize, --tune, pass-through encoder params.

Real encodes (`--bypass`, no server) on synthetic clips; bad values go through the CLI (exit 2, the
option named in the one error line).
"""

from __future__ import annotations

import av
import pytest

from preedit import codecs
from preedit.cli import main as cli_main
from preedit.client.encode import EncoderSettings, model_qp
from preedit.client.interfaces import StreamInfo
from synthetic import media  # noqa: F401 - fixture


def _run(capsys, *args):
    code = cli_main(["run", *map(str, args)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("preedit run: error:")]


@pytest.mark.parametrize("args, text", [
    (["--codec", "hevc", "--x265-params", "bogus=1"], "--x265-params"),
    (["--codec", "hevc", "--x265-params", "aq-mode=zz"], "--x265-params"),
    (["--codec", "h264", "--x264-params", "nonsense=3"], "--x264-params"),
    (["--codec", "av1", "--svtav1-params", "bogus=1"], "--svtav1-params"),
    (["--codec", "hevc", "--x264-params", "ref=2"], "--x264-params"),
    (["--codec", "h264", "--tune", "psnrx"], "--tune"),
    (["--codec", "h264", "--keyint", "0"], "--keyint"),
    (["--codec", "h264", "--bufsize", "100"], "--bufsize"),
    (["--codec", "h264", "--qp", "30", "--maxrate", "100"], "--maxrate"),
])
def test_run_exits_2_naming_the_option_when_encoder_control_is_bad(capsys, tmp_path, media, args, text):
    code, errors = _run(capsys, media("truncatable.mkv"), "-o", tmp_path / "o.mp4", "--bypass", *args)
    assert code == 2
    assert len(errors) == 1 and text in errors[0], errors
    assert not (tmp_path / "o.mp4").exists()


def test_run_keyint_bounds_every_gop_when_keyint_is_given(capsys, tmp_path, media):
    out = tmp_path / "k.mp4"
    code, errors = _run(capsys, media("truncatable.mkv"), "-o", out, "--bypass", "--codec", "h264",
                        "--preset", "ultrafast", "--keyint", "12", "--x264-params", "scenecut=0")
    assert code == 0, errors
    with av.open(str(out)) as c:
        keys = [i for i, p in enumerate(p for p in c.demux(c.streams.video[0]) if p.size) if p.is_keyframe]
    assert keys == list(range(0, 60, 12))


def test_run_maxrate_caps_the_rate_when_crf_alone_would_exceed_it(capsys, tmp_path, media):
    sizes = {}
    for name, extra in (("free", []), ("capped", ["--maxrate", "60", "--bufsize", "60"])):
        out = tmp_path / f"{name}.mp4"
        code, errors = _run(capsys, media("truncatable.mkv"), "-o", out, "--bypass", "--codec", "h264",
                            "--preset", "ultrafast", "--crf", "10", *extra)
        assert code == 0, errors
        with av.open(str(out)) as c:
            sizes[name] = sum(p.size for p in c.demux(c.streams.video[0]))
    # 60 frames at 25 fps = 2.4 s; a 60 kbit/s cap allows ~18 kB plus one buffer (7.5 kB).
    assert sizes["capped"] < 0.5 * sizes["free"]
    assert sizes["capped"] * 8 / 2.4 < 1.6 * 60_000


def test_control_options_put_gop_vbv_and_params_in_the_encoders_vocabulary():
    base = codecs.pyav_options("hevc", crf=28)
    o = codecs.control_options("hevc", base, keyint=50, maxrate_kbps=3000, bufsize_kbps=6000, tune="grain",
                               params="aq-mode=3", closed_gop=True)
    assert (o["g"], o["maxrate"], o["bufsize"], o["tune"]) == ("50", "3000000", "6000000", "grain")
    assert o["x265-params"] == "log-level=error:keyint=50:min-keyint=50:scenecut=0:no-open-gop=1:aq-mode=3"
    a = codecs.control_options("av1", codecs.pyav_options("av1", crf=35), tune="1", keyint=48, closed_gop=True)
    assert a["svtav1-params"] == "tune=1:keyint=48:irefresh-type=2:scd=0"
    assert codecs.control_options("h264", {"preset": "fast"}) == {"preset": "fast"}


def test_av1_bitrate_with_a_cap_encodes_every_frame_when_run(capsys, tmp_path, media):  # noqa: F811
    # SVT-AV1 refuses maxrate outside CRF (avcodec_open2 returned 22 at the first frame): the cap
    # goes to its VBR overshoot-pct instead, so `--bitrate --maxrate` (what ladders use) works for AV1.
    from preedit.client.encode._pyav import encoder_options

    _lib, opts, _ = encoder_options(EncoderSettings(codec="av1", bitrate_kbps=200, maxrate_kbps=220))
    assert "maxrate" not in opts and "overshoot-pct=10" in opts["svtav1-params"]
    src, out = media("flower.mp4"), tmp_path / "capped.mkv"
    code, errors = _run(capsys, src, "-o", out, "--bypass", "--codec", "av1", "--preset", "12",
                        "--bitrate", "200", "--maxrate", "220", "--bufsize", "400")
    assert (code, errors) == (0, [])
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert sum(1 for _ in b.decode(video=0)) == sum(1 for _ in a.decode(video=0))


def test_bitrate_qp_hint_follows_rate_and_resolution_when_bitrate_is_given():
    def hint(kbps, w, h):
        info = StreamInfo(width=w, height=h, time_base=None, average_rate=30, color_range="limited")
        return model_qp(EncoderSettings(codec="hevc", bitrate_kbps=kbps), info)

    assert model_qp(EncoderSettings(codec="hevc", bitrate_kbps=3000)) is None  # no stream yet
    assert hint(4000, 1920, 1080) == pytest.approx(28.0, abs=0.5)
    assert hint(1000, 1920, 1080) > hint(4000, 1920, 1080) + 8  # a quarter of the rate: ~+10 QP
    assert hint(1000, 640, 360) < hint(1000, 1920, 1080)  # same rate, fewer pixels: finer QP


def test_run_does_not_claim_srt_and_fails_in_one_line_when_given_srt(capsys, tmp_path):
    # PyAV's bundled FFmpeg has no SRT protocol (ProtocolNotFoundError): --help must not offer it.
    with pytest.raises(SystemExit):
        cli_main(["run", "--help"])
    assert "srt://" not in capsys.readouterr().out.replace("no srt://", "")
    code, errors = _run(capsys, "srt://127.0.0.1:9", "-o", tmp_path / "o.mp4", "--bypass")
    assert code == 3 and len(errors) == 1 and "Protocol not found" in errors[0]
