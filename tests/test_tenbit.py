"""10-bit and HDR: the 8-bit view / 10-bit edit maths, and `preedit run` keeping 10 bits and the
colour / HDR10 signalling of synthetic HDR10 (PQ) and HLG clips made here with FFmpeg's libx265,
and of the real 10-bit clip (sparks, raw yuv420p10le)."""

from __future__ import annotations

import dataclasses
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
