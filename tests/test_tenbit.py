"""10-bit and HDR: the 8-bit view / 10-bit edit maths, and `preedit run` keeping 10 bits and the
colour / HDR10 signalling of synthetic HDR10 (PQ) and HLG clips made here with FFmpeg's libx265,
and of the real 10-bit clip (sparks, raw yuv420p10le)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from preedit.cli import main as cli_main
from preedit.client import bitdepth
from preedit.paths import clips_dir

MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
HDR10 = f"colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:master-display={MASTER}:max-cll=1000,400:hdr10=1"
HLG = "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc"
FAST = ["--preset", "ultrafast"]


# -- pure maths ---------------------------------------------------------------------------------
def test_untouched_pixels_stay_bit_identical_at_10_bits_and_edits_scale_by_4():
    rng = np.random.default_rng(1)
    in10 = rng.integers(0, 1024, (64, 96), dtype=np.uint16)
    in8 = bitdepth.to8(in10)
    assert in8.dtype == np.uint8 and int(in8.max()) <= 255
    assert np.array_equal(bitdepth.apply_edit(in10, in8, in8), in10)  # no edit → the source, all 10 bits
    edit8 = in8.copy()
    edit8[10:20, 10:20] = np.clip(in8[10:20, 10:20].astype(int) - 3, 0, 255)
    out = bitdepth.apply_edit(in10, in8, edit8)
    mask = np.zeros_like(in10, bool)
    mask[10:20, 10:20] = True
    assert np.array_equal(out[~mask], in10[~mask])
    expect = np.clip(in10[mask].astype(int) + 4 * (edit8[mask].astype(int) - in8[mask]), 0, 1023)
    assert np.array_equal(out[mask], expect) and not np.array_equal(out[mask], in10[mask])
    assert bitdepth.apply_edit(np.array([1020], np.uint16), np.array([255], np.uint8),
                               np.array([0], np.uint8))[0] == 0  # clamped, no wrap-around


def test_edit_planes10_round_trips_the_8bit_view():
    rng = np.random.default_rng(2)
    planes = (rng.integers(64, 941, (8, 12), dtype=np.uint16), rng.integers(64, 961, (4, 6), dtype=np.uint16),
              rng.integers(64, 961, (4, 6), dtype=np.uint16))
    view = bitdepth.nv12_view(planes)
    assert view.shape == (12, 12) and view.dtype == np.uint8
    for a, b in zip(bitdepth.edit_planes10(planes, view), planes):
        assert np.array_equal(a, b)


def test_hdr10_parameters_for_x265_and_svtav1():
    sig = bitdepth.ColorSignal(primaries=9, transfer=16, matrix=9, color_range=1, master_display=MASTER,
                               max_cll=(1000, 400))
    x = bitdepth.x265_params(sig)
    assert f"master-display={MASTER}" in x and "max-cll=1000,400" in x and "transfer=smpte2084" in x
    s = bitdepth.svtav1_params(sig)
    assert "mastering-display=G(0.26500,0.69000)" in s and "L(1000.0000,0.0050)" in s and "content-light=1000,400" in s
    assert bitdepth.x265_params(bitdepth.ColorSignal()) == ""  # unspecified stays unspecified


# -- preedit run --------------------------------------------------------------------------------
def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def hdr_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("hdr")
    out = {}
    for name, params in (("hdr10", HDR10), ("hlg", HLG)):
        path = root / f"{name}.mp4"
        subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=128x72:rate=25",
                        "-frames:v", "8", "-pix_fmt", "yuv420p10le", "-c:v", "libx265", "-preset", "ultrafast",
                        "-x265-params", f"log-level=error:{params}", str(path)], check=True)
        out[name] = path
    return out


def _decode(path: Path):
    kwargs = {}
    if str(path).endswith(".yuv"):  # headerless: geometry from the name, as the client reads it
        from preedit.client.decode._pyav import parse_raw_name

        g = parse_raw_name(str(path))
        kwargs = dict(format="rawvideo", options={"video_size": f"{g.width}x{g.height}", "pixel_format": g.pix_fmt,
                                                  "framerate": str(g.fps)})
    with av.open(str(path), **kwargs) as c:
        frames = list(c.decode(c.streams.video[0]))
    return frames


def _check_same_signal_and_timing(src: Path, out: Path, n: int = None):
    a, b = _decode(src), _decode(out)
    n = n or len(a)
    assert len(b) == n
    assert b[0].format.name == "yuv420p10le"
    assert [float(f.pts * f.time_base) for f in b] == [float(f.pts * f.time_base) for f in a[:n]]
    want = bitdepth.signal_of(a[0])
    if want.color_range == 0:  # untagged (raw .yuv) is read as limited; HEVC's VUI always states a range
        want = dataclasses.replace(want, color_range=1)
    assert bitdepth.signal_of(b[0]) == want
    return a, b


@pytest.mark.parametrize("name", ["hdr10", "hlg"])
@pytest.mark.parametrize("codec,ext", [("hevc", ".mp4"), ("av1", ".mkv")])
def test_run_keeps_10_bits_and_hdr_signalling(hdr_clips, tmp_path, name, codec, ext):
    src = hdr_clips[name]
    out = tmp_path / f"out{ext}"
    assert cli_main(["run", str(src), "-o", str(out), "--bypass", "--codec", codec,
                     *(FAST if codec == "hevc" else ["--preset", "12"])]) == 0
    _, frames = _check_same_signal_and_timing(src, out)
    sig = bitdepth.signal_of(frames[0])
    assert sig.primaries == 9 and sig.transfer == (16 if name == "hdr10" else 18) and sig.matrix == 9
    if name == "hdr10":
        assert sig.master_display == MASTER and sig.max_cll == (1000, 400)
    else:
        assert sig.master_display is None and sig.max_cll is None


def test_bit_depth_8_asks_for_an_8bit_encode(hdr_clips, tmp_path):
    out = tmp_path / "out8.mp4"
    assert cli_main(["run", str(hdr_clips["hdr10"]), "-o", str(out), "--bypass", "--bit-depth", "8", *FAST]) == 0
    frames = _decode(out)
    assert len(frames) == 8 and frames[0].format.name == "yuv420p"
    assert bitdepth.signal_of(frames[0]).transfer == 16  # still tagged as it came


def test_y4m_output_is_the_10bit_source_bit_for_bit(hdr_clips, tmp_path):
    src = hdr_clips["hlg"]
    out = tmp_path / "out.y4m"
    assert cli_main(["run", str(src), "-o", str(out), "--bypass"]) == 0
    for a, b in zip(_decode(src), _decode(out), strict=True):
        assert b.format.name == "yuv420p10le"
        for pa, pb in zip(bitdepth.planes10_of(a, a.width, a.height), bitdepth.planes10_of(b, b.width, b.height)):
            assert np.array_equal(pa, pb)


def test_real_10bit_clip_stays_10bit_with_exact_frames_and_tags(tmp_path):
    src = clips_dir() / "sparks_480x270_yuv420p10le.yuv"
    if not src.is_file():
        pytest.skip(f"real clip not present: {src}")
    out = tmp_path / "sparks.mp4"
    assert cli_main(["run", str(src), "-o", str(out), "--bypass", *FAST]) == 0
    src_frames, _ = _check_same_signal_and_timing(src, out)
    assert len(src_frames) >= 5


# -- scoring at 10 bits -------------------------------------------------------------------------
def _y4m10(path: Path, frames) -> Path:
    h, w = frames[0][0].shape
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420p10\n".encode())
        for planes in frames:
            fh.write(b"FRAME\n" + b"".join(p.astype("<u2").tobytes() for p in planes))
    return path


def test_score_rates_10bit_clips_at_10_bits(tmp_path):
    from preedit.quality import metrics

    rng = np.random.default_rng(3)
    ref = [(rng.integers(100, 900, (72, 128)).astype(np.uint16), np.full((36, 64), 512, np.uint16),
            np.full((36, 64), 512, np.uint16)) for _ in range(3)]
    dist = [(y + 2, u, v) for y, u, v in ref]  # +2 code values at 10 bits: half an 8-bit step
    r, d = _y4m10(tmp_path / "r.y4m", ref), _y4m10(tmp_path / "d.y4m", dist)
    assert metrics.probe_bit_depth(r) == 10
    ten = metrics.score(d, r)
    eight = metrics.score(d, r, bit_depth=8)
    assert ten.frames == 3
    assert abs(ten.metrics["psnr_y"] - 10 * np.log10(1023 ** 2 / 4)) < 0.3  # MSE 4 on the 10-bit scale
    assert abs(ten.metrics["psnr_y"] - eight.metrics["psnr_y"]) > 1.0  # 8-bit scoring would blur it


# -- preedit eval at 10 bits ----------------------------------------------------------------------
def test_y4m_keeps_10bit_planes_and_refuses_other_depths(tmp_path):
    from preedit.errors import InputError
    from preedit.quality.y4m import parse_header, read_y4m, write_y4m

    rng = np.random.default_rng(4)
    frames = [(rng.integers(0, 1024, (4, 6)).astype(np.uint16), rng.integers(0, 1024, (2, 3)).astype(np.uint16),
               rng.integers(0, 1024, (2, 3)).astype(np.uint16)) for _ in range(2)]
    header = parse_header(b"YUV4MPEG2 W6 H4 F25:1 Ip A1:1 C420p10")
    assert header.bit_depth == 10 and header.frame_bytes() == 6 * 4 * 3
    path = write_y4m(tmp_path / "a.y4m", header, frames)
    back_header, back = read_y4m(path)
    assert back_header.bit_depth == 10 and back[0][0].dtype == np.uint16
    assert all(np.array_equal(a, b) for fa, fb in zip(frames, back) for a, b in zip(fa, fb))
    assert parse_header(b"YUV4MPEG2 W6 H4 C420jpeg").bit_depth == 8
    with pytest.raises(InputError, match="10-bit 4:2:0"):
        parse_header(b"YUV4MPEG2 W6 H4 C420p12")


def test_reference_and_encode_commands_keep_10_bits_when_asked():
    from preedit import codecs
    from preedit.perf.rd import sources

    src = Path("sparks_480x270_yuv420p10le.yuv")
    assert sources.source_bit_depth(src) == 10 and sources.source_bit_depth(Path("a_320x192_12fps.yuv")) == 8
    ten = sources.build_reference_cmd(src, Path("r.y4m"), frames=5, max_height=0, ffmpeg="ffmpeg", bit_depth=10)
    eight = sources.build_reference_cmd(src, Path("r.y4m"), frames=5, max_height=0, ffmpeg="ffmpeg")
    assert "format=yuv420p10le" in ten[ten.index("-vf") + 1]
    assert "format=yuv420p," in eight[eight.index("-vf") + 1] and "sws_dither=none" in eight[eight.index("-vf") + 1]
    for name, fmt in (("libx265", "yuv420p10le"), ("libsvtav1", "yuv420p10le"), ("hevc_nvenc", "p010le")):
        cmd = codecs.ffmpeg_argv(codecs.get_codec(name), Path("i.y4m"), Path("o"), 30, ffmpeg="ffmpeg", bit_depth=10)
        assert cmd[cmd.index("-pix_fmt") + 1] == fmt
    assert "yuv420p" in codecs.ffmpeg_argv(codecs.get_codec("libx265"), Path("i"), Path("o"), 30, ffmpeg="ffmpeg")


SPARKS = "sparks_480x270_yuv420p10le.yuv"


@pytest.fixture(scope="module")
def eval10(tmp_path_factory):
    """`preedit eval` (library entry) on the real 10-bit clip: identity pre-editor, x265, 2 CRFs, 5 frames."""
    from preedit.engines import TorchEngine
    from preedit.network import identity_model
    from preedit.perf.rd import eval as ev

    src = clips_dir() / SPARKS
    if not src.is_file():
        pytest.skip(f"real clip not present: {src}")
    root = tmp_path_factory.mktemp("eval10")
    cfg = ev.EvalConfig(clips=[src], out_dir=root / "out", codecs=("libx265",),
                        variants=("source", "preedit", "8bit"), ladders={"libx265": (27, 37)},
                        presets={"libx265": "ultrafast"}, frames=5, jobs=2, cache_dir=root / "cache",
                        plots=False, crops=False)
    return cfg, ev.run_eval(cfg, TorchEngine(identity_model()), progress=False)


def _raw10(path: Path, frames: int) -> np.ndarray:
    return np.fromfile(path, "<u2")[: frames * 480 * 270 * 3 // 2]


def test_eval_reference_of_a_10bit_clip_is_the_source_at_10_bits(eval10):
    from preedit.quality.y4m import read_y4m

    _, result = eval10
    clip = result.clips[0]
    assert clip.bit_depth == 10 and clip.frames == 5
    header, planes = read_y4m(clip.reference)
    assert header.bit_depth == 10
    flat = np.concatenate([p.ravel() for f in planes for p in f])
    assert np.array_equal(flat, _raw10(clips_dir() / SPARKS, 5))  # every sample, all 10 bits


def test_eval_identity_preedit_equals_the_source_at_10_bits_and_encodes_main10(eval10):
    cfg, result = eval10
    clip = result.clips[0]
    edited = sorted((cfg.cache_dir / "preedited").glob(f"{clip.name}-*.y4m"))
    assert len(edited) == 2  # one per model QP
    for path in edited:  # the pre-edited 10-bit frames are the source's, byte for byte
        assert path.read_bytes() == Path(clip.reference).read_bytes()
    by = {(p["variant"], p["value"]): p for p in result.points}
    for crf in (27.0, 37.0):
        src, pre, eight = by[("source", crf)], by[("preedit", crf)], by[("8bit", crf)]
        assert src["pix_fmt"] == pre["pix_fmt"] == "yuv420p10le" and eight["pix_fmt"] == "yuv420p"
        assert src["score_bits"] == eight["score_bits"] == 10


def test_eval_scores_10bit_clips_at_10_bits(eval10):
    from preedit.quality.metrics import score

    _, result = eval10
    clip = result.clips[0]
    point = next(p for p in result.points if p["variant"] == "source" and p["value"] == 27.0)
    ten = score(point["bitstream"], clip.reference, bit_depth=10)
    eight = score(point["bitstream"], clip.reference, bit_depth=8)
    assert point["psnr_y"] == pytest.approx(ten.metrics["psnr_y"], abs=1e-9)
    assert point["vmaf_neg"] == pytest.approx(ten.metrics["vmaf_neg"], abs=1e-9)
    assert abs(ten.metrics["psnr_y"] - eight.metrics["psnr_y"]) > 0.01  # an 8-bit scoring reads differently


def test_eval_8bit_variant_is_the_source_rounded_like_run_bit_depth_8(eval10, tmp_path):
    """The `8bit` variant's frames are `bitdepth.to8` of the 10-bit reference (no dither)."""
    from preedit.perf.rd.variants import get_variant
    from preedit.quality.ffmpeg import ffmpeg_exe
    from preedit.quality.y4m import read_y4m

    _, result = eval10
    ref = result.clips[0].reference
    out = tmp_path / "v8.y4m"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", ref, "-vf", get_variant("8bit").vf, "-f", "yuv4mpegpipe",
                    str(out)], check=True)
    header, frames = read_y4m(out)
    assert header.bit_depth == 8
    for got, want in zip(frames, read_y4m(ref)[1], strict=True):
        for g, w in zip(got, want):
            assert np.array_equal(g, bitdepth.to8(w))


@pytest.mark.needs_triton
def test_run_identity_model_equals_bypass_at_10_bits_on_the_real_clip(identity_repo, tmp_path):
    src = clips_dir() / SPARKS
    if not src.is_file():
        pytest.skip(f"real clip not present: {src}")
    outs = {}
    for name, flags in (("bypass", ["--bypass"]), ("identity", ["--model-repository", str(identity_repo)])):
        outs[name] = tmp_path / f"{name}.y4m"
        assert cli_main(["run", str(src), "-o", str(outs[name]), *flags]) == 0
    assert outs["identity"].read_bytes() == outs["bypass"].read_bytes()
    frames = _decode(outs["identity"])
    assert len(frames) == 5 and frames[0].format.name == "yuv420p10le"
    flat = np.concatenate([p.ravel() for f in frames for p in bitdepth.planes10_of(f, 480, 270)])
    assert np.array_equal(flat, _raw10(src, 5))


# -- preedit ladder: 10-bit and HDR in every rendition ---------------------------------------------
LADDER = ["--segment-s", "0.64", "--rendition", "144:300", "--rendition", "72:150", "--preset", "ultrafast"]


@pytest.fixture(scope="module")
def ladder_clips(tmp_path_factory):
    """HDR10 and HLG HEVC clips, 256x144, 32 frames (two 16-frame segments per rendition)."""
    root = tmp_path_factory.mktemp("ladder10")
    out = {}
    for name, params in (("hdr10", HDR10), ("hlg", HLG)):
        out[name] = root / f"{name}.mp4"
        subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=256x144:rate=25",
                        "-frames:v", "32", "-pix_fmt", "yuv420p10le", "-c:v", "libx265", "-preset", "ultrafast",
                        "-x265-params", f"log-level=error:{params}", str(out[name])], check=True)
    return out


def _ladder(src: Path, out: Path, *flags: str) -> dict:
    assert cli_main(["ladder", str(src), "-o", str(out), "--codec", "hevc", *LADDER, *flags]) == 0
    master = (out / "master.m3u8").read_text()
    rows = re.findall(r'RESOLUTION=\d+x(\d+),CODECS="([^"]+)",FRAME-RATE=[\d.]+,VIDEO-RANGE=(\w+)', master)
    return {h: (c, r) for h, c, r in rows}  # height -> (CODECS, VIDEO-RANGE)


def _rendition_frames(out: Path, height: int):
    with av.open(str(out / f"{height}p" / "index.m3u8")) as c:
        return list(c.decode(c.streams.video[0]))


def test_ladder_keeps_10_bits_and_hdr10_in_every_rendition(ladder_clips, tmp_path):
    src = ladder_clips["hdr10"]
    master = _ladder(src, tmp_path / "out", "--bypass")
    want = bitdepth.signal_of(_decode(src)[0])
    assert want.master_display == MASTER and want.max_cll == (1000, 400) and want.transfer == 16
    times = [float(f.pts * f.time_base) for f in _decode(src)]
    assert set(master) == {"144", "72"}
    for height in (144, 72):
        frames = _rendition_frames(tmp_path / "out", height)
        assert len(frames) == 32 and {f.format.name for f in frames} == {"yuv420p10le"} and frames[0].height == height
        got = [float(f.pts * f.time_base) for f in frames]  # (the HLS muxer starts every ladder at +2 frames,
        assert [t - got[0] for t in got] == pytest.approx([t - times[0] for t in times])  # 8-bit too: not ours)
        assert bitdepth.signal_of(frames[0]) == want  # primaries, transfer, matrix, range, mastering display, CLL
        codecs_value, video_range = master[str(height)]
        assert re.fullmatch(r"hvc1\.2\.4\.L\d+(\.[0-9A-F]{1,2})*", codecs_value) and video_range == "PQ"
        assert b"hvc1" in (tmp_path / "out" / f"{height}p" / "init.mp4").read_bytes()  # the sample entry CODECS names


def test_ladder_bit_depth_8_gives_8bit_renditions_still_tagged_hlg(ladder_clips, tmp_path):
    src = ladder_clips["hlg"]
    master = _ladder(src, tmp_path / "out", "--bypass", "--bit-depth", "8")
    for height in (144, 72):
        frames = _rendition_frames(tmp_path / "out", height)
        assert len(frames) == 32 and frames[0].format.name == "yuv420p"
        sig = bitdepth.signal_of(frames[0])
        assert (sig.primaries, sig.transfer, sig.matrix, sig.color_range) == (9, 18, 9, 1)
        assert re.fullmatch(r"hvc1\.1\.6\.L\d+(\.[0-9A-F]{1,2})*", master[str(height)][0])
        assert master[str(height)][1] == "HLG"


@pytest.mark.needs_triton
def test_ladder_identity_model_equals_bypass_at_10_bits(ladder_clips, identity_repo, tmp_path, monkeypatch):
    from preedit.client import ladder
    from preedit.serve import ServerConfig, TritonServer

    def single_threaded(settings):  # x265 rate control with threads depends on timing (seen: runs differ)
        lib, opts, bit_rate = real(settings)
        return lib, {**opts, "x265-params": opts["x265-params"] + ":frame-threads=1:pools=none"}, bit_rate

    real = ladder.encoder_options
    monkeypatch.setattr(ladder, "encoder_options", single_threaded)
    src = ladder_clips["hdr10"]
    _ladder(src, tmp_path / "bypass", "--bypass")
    server = TritonServer(ServerConfig(model_repository=identity_repo, http_port=0, grpc_port=0,
                                       models=("preedit",))).start()
    try:
        server.wait_model_ready("preedit")
        _ladder(src, tmp_path / "edited", "--url", server.grpc_url)
    finally:
        server.stop()
    for height in (144, 72):
        a, b = _rendition_frames(tmp_path / "bypass", height), _rendition_frames(tmp_path / "edited", height)
        assert len(a) == len(b) == 32 and b[0].format.name == "yuv420p10le"
        for fa, fb in zip(a, b):
            for pa, pb in zip(bitdepth.planes10_of(fa, fa.width, fa.height), bitdepth.planes10_of(fb, fb.width, fb.height)):
                assert np.array_equal(pa, pb)


def test_hls_codecs_strings_read_main10_and_av1_10bit_headers(tmp_path):
    """CODECS from the encoders' own headers: x265 Main10 hvcC, SVT-AV1 10-bit av1C (+ HDR10 colour fields)."""
    from preedit.client.ladder import _box_payload, codecs_string

    sig = bitdepth.ColorSignal(primaries=9, transfer=16, matrix=9, color_range=1, master_display=MASTER,
                               max_cll=(1000, 400))
    got = {}
    for lib, fam, box in (("libx265", "hevc", b"hvcC"), ("libsvtav1", "av1", b"av1C")):
        path = tmp_path / f"{fam}.mp4"
        fmt = bitdepth.output_format(fam, 10, sig)
        with av.open(str(path), "w") as out:
            st = out.add_stream(lib, rate=25, options=fmt.encoder_options(
                {"preset": "ultrafast", "x265-params": "log-level=error"} if fam == "hevc" else {"preset": "12"}))
            st.width, st.height, st.pix_fmt = 64, 64, fmt.pix_fmt
            planes = (np.full((64, 64), 400, np.uint16), np.full((32, 32), 512, np.uint16), np.full((32, 32), 512, np.uint16))
            for i in range(8):  # (libx265 in PyAV fails its flush now and then after 1-2 frames)
                frame = bitdepth.frame10_of(planes)
                frame.pts = i
                for p in st.encode(frame):
                    out.mux(p)
            for p in st.encode():
                out.mux(p)
        got[fam] = codecs_string(fam, _box_payload(path.read_bytes(), box), sig)
    assert re.fullmatch(r"hvc1\.2\.4\.L\d+(\.[0-9A-F]{1,2})*", got["hevc"]), got
    assert re.fullmatch(r"av01\.0\.\d\dM\.10\.0\.110\.09\.16\.09\.0", got["av1"]), got
    sdr = bitdepth.ColorSignal(primaries=1, transfer=1, matrix=1, color_range=1)
    av1c_8bit = bytes([0x81, 0x08, 0x0C, 0x00])  # profile 0, level 8, main tier, 8-bit, 4:2:0
    assert codecs_string("av1", av1c_8bit, sdr) == "av01.0.08M.08"  # BT.709 SDR: the short form
    hvcc_high = bytes([1, 0x21, 0x40, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 123])  # Main, High tier, level 4.1
    assert codecs_string("hevc", hvcc_high) == "hvc1.1.2.H123.90"


# -- NVENC: 10-bit / HDR output goes to the CPU encoder (P010 not wired) -----------------------------
def test_nvenc_refuses_10bit_and_hdr_output_so_the_run_falls_back_to_the_cpu_encoder(tmp_path, monkeypatch):
    from fractions import Fraction

    from preedit.client import backends
    from preedit.client.backends import Backends, plan_backends
    from preedit.client.encode import ClientNvencEncoder, EncoderSettings
    from preedit.client.encode._pyav import PyAvEncoder
    from preedit.client.interfaces import Frame, StreamInfo
    from preedit.errors import EncodeError
    from test_gpu_encoder import FakeNvc  # a fake PyNvVideoCodec (real libx265 behind NVENC's contract)
    from test_gpu_encoder import _frames as _nvenc_frames

    hdr = bitdepth.ColorSignal(primaries=9, transfer=16, matrix=9, color_range=1, master_display=MASTER)
    sdr = bitdepth.ColorSignal(primaries=1, transfer=1, matrix=1, color_range=1)
    ten = StreamInfo(width=160, height=96, time_base=Fraction(1, 25), average_rate=Fraction(25), bit_depth=10, signal=sdr)
    with pytest.raises(EncodeError, match="10-bit output"):
        ClientNvencEncoder(tmp_path / "a.mp4", ten, EncoderSettings(codec="hevc"), nvc=FakeNvc())
    hdr8 = dataclasses.replace(ten, signal=hdr)
    with pytest.raises(EncodeError, match="HDR input"):
        ClientNvencEncoder(tmp_path / "b.mp4", hdr8, EncoderSettings(codec="hevc", bit_depth=8), nvc=FakeNvc())
    ok = ClientNvencEncoder(tmp_path / "c.mkv", ten, EncoderSettings(codec="hevc", bit_depth=8), nvc=FakeNvc())
    for frame in _nvenc_frames(8, [40 * i for i in range(8)]):  # 8-bit asked for an SDR 10-bit source: NVENC
        ok.encode(frame)  # encodes the 8-bit view
    assert ok.finish()["frames"] == 8

    # through the client's back-end seam: the GPU encoder refuses, the CPU one encodes Main10
    fake_gpu = lambda path, info, settings, **kw: ClientNvencEncoder(path, info, settings, nvc=FakeNvc())  # noqa: E731
    monkeypatch.setitem(backends.IMPLEMENTATIONS, "encode", (backends.IMPLEMENTATIONS["encode"][0], fake_gpu))
    chosen = Backends("cuda", plan_backends("cuda", {"cuda": True, "nvdec": ["hevc"], "nvenc": ["hevc"]},
                                            output_codec="hevc"))
    assert chosen.plan.encode == "cuda"
    enc = chosen.make_encoder(str(tmp_path / "d.mp4"), ten, EncoderSettings(codec="hevc", preset="ultrafast"))
    assert isinstance(enc, PyAvEncoder) and chosen.stage_devices["encode"] == "cpu"
    rng = np.random.default_rng(5)
    for i in range(8):  # (libx265 in PyAV fails its flush now and then after 1-2 frames)
        planes = (rng.integers(64, 940, (96, 160)).astype(np.uint16), np.full((48, 80), 512, np.uint16),
                  np.full((48, 80), 512, np.uint16))
        enc.encode(Frame(index=i, pts=i, time_base=Fraction(1, 25), nv12=bitdepth.nv12_view(planes),
                         meta={"yuv10": planes}))
    assert enc.finish()["frames"] == 8
    assert _decode(tmp_path / "d.mp4")[0].format.name == "yuv420p10le"


# -- Triton contract: the deterministic model stays bit-exact on the 8-bit view of 10-bit input ------
def test_int8_model_is_bit_exact_across_backends_on_the_8bit_view_of_the_10bit_clip():
    from preedit.engines import OrtEngine
    from preedit.export.int8.compare import run_frames
    from preedit.export.int8.reference import reference_forward
    from preedit.export.int8.write import load_int_model
    from preedit.paths import model_repository

    src = clips_dir() / SPARKS
    if not src.is_file():
        pytest.skip(f"real clip not present: {src}")
    model_dir = model_repository() / "preedit_int8"
    raw = _raw10(src, 2).reshape(2, -1)
    views = []
    for f in raw:  # what the served model receives for a 10-bit frame (contract.json notes)
        y, u, v = f[: 480 * 270].reshape(270, 480), f[480 * 270: 480 * 270 * 5 // 4], f[480 * 270 * 5 // 4:]
        views.append(bitdepth.nv12_view((y, u.reshape(135, 240), v.reshape(135, 240))))
    model = load_int_model(model_dir)
    served = run_frames(OrtEngine((model_dir / "1" / "model.onnx").read_bytes(), threads=1), views, [27.0, 37.0])
    integer = run_frames(lambda x, q: reference_forward(model, x, q), views, [27.0, 37.0])
    for a, b, view in zip(served, integer, views):
        assert a.dtype == np.uint8 and np.array_equal(a, b)  # ONNX Runtime == the integer reference, bit for bit
        assert not np.array_equal(a, view)  # the model edits this content (not a vacuous comparison)
