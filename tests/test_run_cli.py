"""`preedit run` bad-input handling through the CLI: one-line message, exit code, playable output.

These run the real decoder and encoder (`--bypass`, no server) on synthetic clips (tests/synthetic.py)
and on damaged copies made in tmp_path; server faults are in test_run_triton.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from preedit.cli import main as cli_main
from preedit.serve import free_port
from synthetic import media  # noqa: F401 - fixture

FAST = ["--codec", "h264", "--preset", "ultrafast"]


def run_cli(capsys, *args):
    code = cli_main(["run", *map(str, args)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("preedit run: error:")]
    return code, errors, err


def decoded(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        return frames, v


def test_run_exits_3_with_one_line_when_input_is_missing(capsys, tmp_path):
    code, errors, err = run_cli(capsys, tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4", "--bypass")
    assert code == 3 and errors == [f"preedit run: error: input not found: {tmp_path / 'nope.mp4'}"]
    assert "Traceback" not in err


def test_run_exits_3_when_input_is_not_a_video(capsys, tmp_path):
    bad = tmp_path / "readme.mkv"
    bad.write_bytes(b"plain text, not a container\n" * 100)
    code, errors, err = run_cli(capsys, bad, "-o", tmp_path / "o.mp4", "--bypass")
    assert code == 3 and len(errors) == 1 and "as video" in errors[0] and "Traceback" not in err


@pytest.mark.parametrize("name, expect", [("flower.mp4", " of 150 frames"),
                                          ("truncatable.mkv", "input ended early at")])
def test_run_exits_4_and_finalises_output_when_input_is_truncated(capsys, tmp_path, media, name, expect):
    src = tmp_path / name
    data = media(name).read_bytes()
    src.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "partial.mp4"
    code, errors, err = run_cli(capsys, src, "-o", out, "--bypass", *FAST)
    assert code == 4 and len(errors) == 1 and expect in errors[0] and "partial output finalised" in errors[0]
    frames, _ = decoded(out)  # trailer written: the partial output opens and decodes
    assert len(frames) > 10 and f"({len(frames)} frames)" in errors[0]


def test_run_crops_odd_size_when_input_is_641x359(capsys, caplog, tmp_path):
    from test_client_codec import _write_clip

    src = _write_clip(tmp_path / "odd.mp4", 641, 359, n=4, codec="libx264", pix_fmt="yuv444p")
    out = tmp_path / "o.mp4"
    code, errors, err = run_cli(capsys, src, "-o", out, "--bypass", *FAST)
    assert code == 0 and not errors and "cropped to 640x358" in caplog.text
    frames, _ = decoded(out)
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (640, 358)


def test_run_keeps_full_range_tag_when_input_is_yuvj420p(capsys, tmp_path, media):
    out = tmp_path / "o.mkv"
    code, errors, _ = run_cli(capsys, media("fullrange.mkv"), "-o", out, "--bypass", "--max-frames", "12", *FAST)
    assert code == 0 and not errors
    frames, v = decoded(out)
    assert len(frames) == 12 and int(frames[0].color_range) == 2  # AVCOL_RANGE_JPEG: full range kept
    y = frames[0].to_ndarray()[: frames[0].height]
    assert y.min() < 16 or y.max() > 235  # values use the full range again


def test_run_encodes_8bit_with_warning_when_input_is_10bit_and_codec_is_h264(capsys, caplog, tmp_path, media):
    out = tmp_path / "o.mp4"  # (hevc / av1 keep 10 bits: tests/test_tenbit.py)
    code, errors, err = run_cli(capsys, media("sparks_96x64_yuv420p10le.yuv"), "-o", out, "--bypass", *FAST)
    assert code == 0 and not errors and "libx264 here encodes 8-bit only" in caplog.text
    frames, _ = decoded(out)
    assert len(frames) == 5 and frames[0].format.name == "yuv420p"


def test_run_carries_vfr_timestamps_when_input_is_vfr(capsys, tmp_path, media):
    src = media("vfr.mp4")
    out = tmp_path / "o.mkv"
    code, errors, _ = run_cli(capsys, src, "-o", out, "--bypass", *FAST)
    assert code == 0 and not errors
    ref, _ = decoded(src)
    got, _ = decoded(out)
    assert len(got) == len(ref) == 63
    t0r, t0g = float(ref[0].pts * ref[0].time_base), float(got[0].pts * got[0].time_base)
    for r, g in zip(ref, got):  # Matroska stores ms: equal to the millisecond
        assert abs((float(r.pts * r.time_base) - t0r) - (float(g.pts * g.time_base) - t0g)) <= 0.0011


@pytest.mark.parametrize("args, code, text", [
    (["--crf", "20", "--qp", "30"], 2, "at most one of --crf, --qp, --bitrate"),
    (["--codec", "av1", "-o", "x.ts"], 2, "cannot write av1 to .ts"),
    (["-o", "x.avi"], 2, "unknown output extension '.avi'"),
    (["--latency-budget-ms", "-1"], 2, "--latency-budget-ms must be positive"),
])
def test_run_exits_2_when_options_are_invalid(capsys, tmp_path, media, args, code, text):
    argv = [media("flower.mp4")] + (args if "-o" in args else args + ["-o", tmp_path / "o.mp4"])
    argv = [str(tmp_path / a) if a in ("x.ts", "x.avi") else a for a in argv]
    got, errors, _ = run_cli(capsys, *argv)
    assert got == code and len(errors) == 1 and text in errors[0]


def test_run_exits_5_when_server_is_unreachable(capsys, tmp_path, media):
    port = free_port()
    code, errors, err = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "o.mp4", "--url", f"127.0.0.1:{port}",
                                "--connect-timeout-s", "1", *FAST)
    assert code == 5 and len(errors) == 1 and f"cannot reach Triton at 127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in err


def test_run_exits_6_when_model_is_not_in_repository(capsys, tmp_path, media):
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text('name: "other"\n')
    code, errors, _ = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "o.mp4", "--model-repository", repo,
                              "--model", "missing")
    assert code == 6 and errors == [f"preedit run: error: model 'missing' not in {repo}; models there: other"]


def test_run_exits_4_when_frame_size_changes_mid_stream(capsys, tmp_path):
    from test_client_codec import _write_clip

    a = _write_clip(tmp_path / "a.ts", 64, 48, n=6)
    b = _write_clip(tmp_path / "b.ts", 96, 64, n=6)
    joined = tmp_path / "joined.ts"  # MPEG-TS concatenates byte-wise: a new SPS switches the size
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    out = tmp_path / "o.mp4"
    code, errors, _ = run_cli(capsys, joined, "-o", out, "--bypass", *FAST)
    assert code == 4 and len(errors) == 1 and "frame size changed mid-stream from 64x48 to 96x64" in errors[0]
    frames, _ = decoded(out)
    assert len(frames) == 6


def test_run_looks_for_int8_model_when_deterministic(capsys, tmp_path, media):
    repo = tmp_path / "repo"
    (repo / "preedit").mkdir(parents=True)
    (repo / "preedit" / "config.pbtxt").write_text('name: "preedit"\n')
    code, errors, _ = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "o.mp4", "--model-repository", repo,
                              "--deterministic")
    assert code == 6 and "model 'preedit_int8' not in" in errors[0] and "models there: preedit" in errors[0]


def test_run_finalises_output_when_interrupted(tmp_path):
    from synthetic import make_clip

    # 20 s at --realtime: the output passes the muxer's I/O buffer (the size checked below) long
    # before the end, so the signal always lands mid-run.
    src = make_clip(tmp_path / "long.mp4", width=640, height=480, frames=500)
    out = tmp_path / "o.mp4"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "preedit", "run", str(src), "-o", str(out),
                             "--bypass", "--realtime", *FAST], stderr=subprocess.PIPE, text=True, env=env,
                            # a shell's background job inherits SIGINT ignored; Ctrl-C is what is tested
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    # Encoded frames in the file (mdat past the header): a condition, not a timer; a --realtime
    # 6 s clip is then still far from its end.
    while time.monotonic() < deadline and proc.poll() is None and not (out.exists() and out.stat().st_size > 40_000):
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before the signal"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "preedit run: interrupted" in err
    frames, _ = decoded(out)
    assert 0 < len(frames) < 500  # a playable file of what was encoded before the signal


def test_run_ends_cleanly_when_live_udp_source_goes_silent(capsys, caplog, tmp_path, media):
    import imageio_ffmpeg

    port = free_port()
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-re", "-i", str(media("flower.mp4")), "-an",
           "-t", "1.5", "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    procs = []
    # Start sending once the receiver listens (UDP drops what nobody reads, the first key frame too).
    timer = threading.Timer(1.0, lambda: procs.append(subprocess.Popen(cmd)))
    timer.start()
    try:
        out = tmp_path / "live.ts"
        code, errors, _ = run_cli(capsys, f"udp://127.0.0.1:{port}", "-o", out, "--bypass", "--read-timeout-s", "3",
                                  *FAST)
    finally:
        timer.join()
        for p in procs:
            p.wait(timeout=30)
    assert code == 0 and not errors and "treating the silence as end of stream" in caplog.text, errors
    frames, _ = decoded(out)
    assert len(frames) >= 30  # ~1.5 s at 29.97 fps (UDP may drop a packet on a loaded machine)


def _audio_packets(path):
    import av

    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]


def test_run_copies_audio_packets_unchanged_when_input_has_audio(capsys, tmp_path, media):
    src, out = media("flower.mp4"), tmp_path / "o.mkv"
    code, errors, _ = run_cli(capsys, src, "-o", out, "--bypass", *FAST)
    assert code == 0 and not errors
    ref, got = _audio_packets(src), _audio_packets(out)
    assert len(got) == len(ref) > 100
    assert [p[0] for p in got] == [p[0] for p in ref]  # same bytes, same order


def test_run_writes_one_output_per_input_when_several_inputs_share_a_folder(capsys, tmp_path, media):
    outdir = tmp_path / "outs"
    code, errors, _ = run_cli(capsys, media("sar2.mp4"), media("joy_64x48_50fps.y4m"), "-o",
                              f"{outdir}/", "--bypass", "--max-frames", "10", *FAST)
    assert code == 0 and not errors
    sar, _ = decoded(outdir / "sar2.preedit.mp4")
    joy, stream = decoded(outdir / "joy_64x48_50fps.preedit.mp4")
    assert len(sar) == 10 and len(joy) == 10 and stream.average_rate == 50
    import av

    with av.open(str(outdir / "sar2.preedit.mp4")) as c:
        assert c.streams.video[0].sample_aspect_ratio == 2  # SAR 2:1 carried through
