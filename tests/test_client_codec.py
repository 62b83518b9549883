"""Client decoder/encoder/back-end selection: pure option building and real PyAV round trips."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest

from preedit.client import backends
from preedit.client.decode import PyAvDecoder, parse_raw_name
from preedit.client.encode import EncoderSettings, PyAvEncoder, container_for, encoder_options, model_qp
from preedit.client.interfaces import Frame, StreamInfo
from preedit.client.run import resolve_outputs
from preedit.client.stats import RunStats, percentile_ms
from preedit.errors import InputError, UsageError


def _write_clip(path, width, height, n=6, pix_fmt="yuv420p", codec="libx264", pts_step=None, color_range=1):
    """A small synthetic clip (moving gradient); pts_step lists per-frame pts steps in ms (VFR)."""
    import av

    with av.open(str(path), "w") as oc:
        s = oc.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        s.codec_context.time_base = Fraction(1, 1000)
        s.codec_context.color_range = color_range
        pts = 0
        for i in range(n):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (np.arange(width)[None, :] * 3 + i * 10) % 256
            rgb[..., 1] = (np.arange(height)[:, None] * 2) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = pts
            frame.time_base = Fraction(1, 1000)
            pts += pts_step[i % len(pts_step)] if pts_step else 40
            for p in s.encode(frame):
                oc.mux(p)
        for p in s.encode(None):
            oc.mux(p)
    return path


def _decode_all(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.pts, f.width, f.height, f.format.name, int(f.color_range or 0), float(f.pts * f.time_base))
                  for f in c.decode(v)]
        return frames, v


# -- pure option building ---------------------------------------------------------------------
def test_encoder_options_uses_x265_params_when_hevc_gets_qp():
    lib, opts, rate = encoder_options(EncoderSettings(codec="hevc", qp=30, preset="fast"))
    assert lib == "libx265" and rate is None
    assert "qp=30" in opts["x265-params"].split(":") and opts["preset"] == "fast" and "crf" not in opts


def test_encoder_options_sets_bit_rate_and_no_crf_when_bitrate_given():
    lib, opts, rate = encoder_options(EncoderSettings(codec="av1", bitrate_kbps=800))
    assert lib == "libsvtav1" and rate == 800_000 and "crf" not in opts and opts["preset"] == "8"


def test_encoder_options_defaults_crf_when_no_rate_control_given():
    assert encoder_options(EncoderSettings(codec="h264"))[1]["crf"] == "23"


@pytest.mark.parametrize("kwargs, match", [
    (dict(codec="vp9"), "valid: hevc, av1, h264"),
    (dict(crf=20, qp=30), "at most one"),
    (dict(codec="h264", crf=60), r"0\.\.51"),
    (dict(codec="av1", preset="medium"), "valid: 0, 1"),
    (dict(bitrate_kbps=-5), "positive"),
])
def test_encoder_settings_rejects_bad_values_when_constructed(kwargs, match):
    with pytest.raises(UsageError, match=match):
        EncoderSettings(**kwargs)


def test_container_for_rejects_av1_in_ts_and_unknown_extension_when_asked():
    assert container_for("x.mkv", "av1") == "matroska"
    with pytest.raises(UsageError, match="MPEG-TS"):
        container_for("x.ts", "av1")
    with pytest.raises(UsageError, match=r"valid: \.mp4, \.mkv, \.ts, \.y4m"):
        container_for("x.avi", "hevc")


def test_model_qp_maps_av1_crf_to_hevc_scale_when_crf_given():
    assert model_qp(EncoderSettings(codec="hevc", qp=27)) == 27.0
    from preedit.qp import av1_model_qp

    assert model_qp(EncoderSettings(codec="av1", crf=63)) == pytest.approx(av1_model_qp(63, "crf"))
    assert model_qp(EncoderSettings(codec="av1", qp=20)) == pytest.approx(av1_model_qp(20, "qp")), "--qp uses the fixed-QP map"
    assert model_qp(EncoderSettings(codec="av1", crf=36)) < 33.0, "SVT-AV1 CRF 36 is finer than x265 QP 33 (its equal step)"
    assert model_qp(EncoderSettings(codec="h264", bitrate_kbps=500)) is None


def test_parse_raw_name_reads_geometry_when_name_carries_it():
    g = parse_raw_name("CiscoVT2people_320x192_12fps.yuv")
    assert (g.width, g.height, g.fps, g.pix_fmt) == (320, 192, 12, "yuv420p")
    g = parse_raw_name("sparks_480x270_yuv420p10le.yuv")
    assert (g.width, g.height, g.fps, g.pix_fmt) == (480, 270, 25, "yuv420p10le")
    assert parse_raw_name("clip.yuv") is None


def test_resolve_outputs_names_files_in_folder_when_several_inputs(tmp_path):
    outs = resolve_outputs(["a/x.mp4", "b/x.mp4"], [str(tmp_path)], "hevc")
    assert outs == [str(tmp_path / "x_0.preedit.mp4"), str(tmp_path / "x_1.preedit.mp4")]
    with pytest.raises(UsageError, match="2 inputs need 2 outputs"):
        resolve_outputs(["a.mp4", "b.mp4"], ["o1.mp4", "o2.mp4", "o3.mp4"], "hevc")


def test_percentile_ms_matches_numpy_when_samples_given():
    samples = [0.001 * i for i in range(1, 101)]
    assert percentile_ms(samples, 50) == pytest.approx(np.percentile(samples, 50) * 1e3)
    assert percentile_ms([], 99) is None
    stats = RunStats(frames_encoded=10, wall_s=2.0, output_bits=8000, media_duration_s=1.0)
    assert stats.summary()["fps"] == 5.0 and stats.summary()["output_bitrate_kbps"] == 8.0


# -- back-end selection -----------------------------------------------------------------------
_NO_CUDA = {"cuda": False, "reasons": ["no CUDA device visible to torch"]}
_H100 = {"cuda": True, "device": {"name": "NVIDIA H100"}, "video_stages_usable": True,
         "nvdec": ["h264", "hevc"], "nvenc": []}


def test_select_backends_falls_back_to_cpu_when_auto_and_no_gpu(caplog):
    with caplog.at_level(logging.INFO, logger="preedit.client.backends"):
        chosen = backends.select_backends("auto", output_codec="hevc", caps=_NO_CUDA)
    assert chosen.device == "cpu" and "using the CPU pipeline" in caplog.text
    assert chosen.stage_devices == {"decode": "cpu", "preedit": "cpu", "encode": "cpu"}
    with pytest.raises(UsageError, match="valid here: cpu, auto"):
        backends.select_backends("cuda", caps=_NO_CUDA)
    with pytest.raises(UsageError, match="valid: cpu, cuda, auto"):
        backends.select_backends("tpu")


def _fake_stages(monkeypatch, gpu_decoder):
    monkeypatch.setitem(backends.IMPLEMENTATIONS, "decode", (lambda src, **kw: ("cpu-decoder", src), gpu_decoder))
    monkeypatch.setitem(backends.IMPLEMENTATIONS, "encode",
                        (lambda *a, **kw: "cpu-encoder", lambda *a, **kw: pytest.fail("planned on CPU")))


def test_select_backends_plans_encode_on_cpu_when_gpu_has_no_nvenc(monkeypatch, caplog):
    _fake_stages(monkeypatch, lambda src, **kw: ("gpu-decoder", src))
    with caplog.at_level(logging.WARNING, logger="preedit.client.backends"):
        chosen = backends.select_backends("cuda", output_codec="hevc", caps=_H100)
    assert "encode on CPU: NVIDIA H100 cannot NVENC-encode hevc" in caplog.text
    assert chosen.make_decoder("x.mp4") == ("gpu-decoder", "x.mp4")
    assert chosen.make_encoder("o.mp4", None, None) == "cpu-encoder"
    assert chosen.stage_devices["decode"] == "cuda" and chosen.stage_devices["encode"] == "cpu"


def _nvdec_refuses(src, **kw):
    raise InputError("the NVDEC decoder reads local files; live URLs use the CPU decoder")


def test_select_backends_falls_back_per_stage_when_gpu_stage_refuses(monkeypatch, caplog):
    _fake_stages(monkeypatch, _nvdec_refuses)
    chosen = backends.select_backends("cuda", output_codec="hevc", caps=_H100)
    with caplog.at_level(logging.WARNING, logger="preedit.client.backends"):
        assert chosen.make_decoder("udp://x") == ("cpu-decoder", "udp://x")
    assert "GPU fallback: decode on CPU" in caplog.text and chosen.stage_devices["decode"] == "cpu"
    strict = backends.select_backends("cuda", output_codec="h264",
                                      caps=dict(_H100, nvenc=["h264"]), strict=True)
    with pytest.raises(UsageError, match="fallback disabled"):
        strict.make_decoder("udp://x")


# -- real PyAV round trips --------------------------------------------------------------------
def _info(w, h, rng="limited", rate=Fraction(25)):
    return StreamInfo(width=w, height=h, time_base=Fraction(1, 1000), average_rate=rate, color_range=rng)


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts"])
def test_encoder_keeps_vfr_timestamps_and_count_when_muxing(tmp_path, ext):
    pts = [0, 40, 80, 100, 180, 200, 260, 300, 333, 400]
    out = tmp_path / f"o{ext}"
    enc = PyAvEncoder(str(out), _info(64, 48), EncoderSettings(codec="h264", preset="ultrafast"))
    for i, p in enumerate(pts):
        enc.encode(Frame(index=i, pts=p, time_base=Fraction(1, 1000), nv12=np.full((72, 64), 60 + i, np.uint8)))
    result = enc.finish()
    frames, _ = _decode_all(out)
    assert len(frames) == len(pts) and result["frames"] == len(pts) and result["output_bits"] > 0
    times = [f[5] for f in frames]
    offset = times[0]  # MPEG-TS adds a start offset; spacing must match the source exactly
    assert [round((t - offset) * 1000) for t in times] == pts


def test_encoder_writes_full_range_y4m_when_source_is_full_range(tmp_path):
    out = tmp_path / "o.y4m"
    enc = PyAvEncoder(str(out), _info(32, 16, rng="full"), EncoderSettings())
    nv12 = np.full((24, 32), 128, np.uint8)
    nv12[:16] = 235  # limited-range white → full-range 255 on output
    enc.encode(Frame(index=0, pts=0, time_base=Fraction(1, 1000), nv12=nv12))
    enc.finish()
    header = out.read_bytes()[:120]
    assert b"XCOLORRANGE=FULL" in header and b"W32 H16" in header
    import av

    with av.open(str(out)) as c:
        y = next(c.decode(video=0)).to_ndarray()[:16]
    assert int(y.min()) == 255


def test_nv12_to_frame_fills_the_given_frame_again_when_sizes_match():
    from preedit.client.encode import nv12_to_frame

    a = np.random.default_rng(0).integers(16, 236, (24, 32), dtype=np.uint8)
    b = 255 - a
    first = nv12_to_frame(a, False)
    again = nv12_to_frame(b, False, into=first)
    fresh = nv12_to_frame(b, False)
    assert again is first
    assert all(np.array_equal(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width],
                              np.frombuffer(q, np.uint8).reshape(q.height, q.line_size)[:, :q.width])
               for p, q in zip(again.planes, fresh.planes))
    assert nv12_to_frame(np.zeros((48, 32), np.uint8), False, into=first) is not first  # other size: new frame


def test_encoder_output_unchanged_when_frame_is_reused(tmp_path, monkeypatch):
    """The encoder fills one AVFrame again for every picture; the bitstream is the one a fresh
    frame per picture gives (x264 takes its copy in encode)."""
    from preedit.client.encode import _pyav

    rng = np.random.default_rng(1)
    pictures = [rng.integers(16, 236, (72, 64), dtype=np.uint8) for _ in range(12)]

    def encode(path):
        enc = PyAvEncoder(str(path), _info(64, 48), EncoderSettings(codec="h264", preset="ultrafast"))
        for i, nv12 in enumerate(pictures):
            enc.encode(Frame(index=i, pts=40 * i, time_base=Fraction(1, 1000), nv12=nv12))
        enc.finish()
        return path.read_bytes()

    reused = encode(tmp_path / "reused.mp4")
    real = _pyav.nv12_to_frame
    monkeypatch.setattr(_pyav, "nv12_to_frame", lambda nv12, full, into=None: real(nv12, full))
    assert encode(tmp_path / "fresh.mp4") == reused


def test_decoder_thread_type_adds_frame_threads_only_on_larger_machines():
    from preedit.client.decode import decoder_thread_type
    from preedit.client.decode._pyav import FRAME_THREADS_MIN_CORES

    assert decoder_thread_type(2) == "SLICE"
    assert decoder_thread_type(FRAME_THREADS_MIN_CORES - 1) == "SLICE"
    assert decoder_thread_type(FRAME_THREADS_MIN_CORES) == "AUTO"


def test_decoder_crops_odd_size_and_warns_when_input_is_641x359(tmp_path, caplog):
    src = _write_clip(tmp_path / "odd.mkv", 641, 359, n=3, codec="libx264", pix_fmt="yuv444p")
    with caplog.at_level(logging.WARNING):
        dec = PyAvDecoder(str(src))
        frames = list(dec)
    dec.close()
    assert (dec.info.width, dec.info.height) == (640, 358)
    assert len(frames) == 3 and frames[0].nv12.shape == (358 * 3 // 2, 640)
    assert "cropped to 640x358" in caplog.text and "yuv444p converted" in caplog.text


def test_decoder_converts_full_range_to_limited_when_input_is_yuvj(tmp_path):
    src = _write_clip(tmp_path / "full.mp4", 64, 48, n=2, pix_fmt="yuvj420p", color_range=2)
    dec = PyAvDecoder(str(src))
    frames = list(dec)
    dec.close()
    assert dec.info.color_range == "full"
    y = frames[0].nv12[:48]
    assert y.min() >= 16 and y.max() <= 235


def test_decoder_raises_input_error_when_file_is_not_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="cannot open .*notes.mp4 as video"):
        PyAvDecoder(str(bad))
    with pytest.raises(InputError, match="input not found"):
        PyAvDecoder(str(tmp_path / "missing.mp4"))
