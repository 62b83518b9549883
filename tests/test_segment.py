"""`preedit run --segment I/N`, `preedit join` and `--workers` on synthetic clips made here (PyAV:
H.264 with a fixed GOP and B-frames, AAC audio), so nothing needs ../shared.

Segment runs use `--bypass` (real decoder, encoder and muxers, no server); the Kubernetes Job's own
command line runs against a real Triton in test_k8s.py.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from preedit.cli import main as cli_main
from preedit.client.segment import SourceIndex, plan_segments
from preedit.errors import UsageError

FAST = ["--codec", "h264", "--preset", "ultrafast", "--bypass"]


def make_clip(path: Path, frames: int = 48, gop: int = 6, fps: int = 24, size=(96, 64), audio: bool = True,
              intra_only: bool = False) -> Path:
    """A moving-gradient clip with a key frame every `gop` frames (B-frames inside), plus a sine."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps, options={
            "preset": "ultrafast", "g": "1" if intra_only else str(gop), "keyint_min": "1" if intra_only else str(gop),
            "sc_threshold": "0", "bf": "0" if intra_only else "2", "tune": "zerolatency" if intra_only else "film"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = None
        if audio:
            a = out.add_stream("aac", rate=48000)
            a.layout = "stereo"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = ((xx * 3 + yy * 2 + i * 7) % 256).astype(np.uint8)
            rgb = np.stack([img, np.roll(img, i, 1), 255 - img], -1)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        if a is not None:
            n = 1024
            t0 = 0
            total = int(48000 * frames / fps)
            while t0 < total:
                t = (np.arange(n) + t0) / 48000
                s = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, t0, Fraction(1, 48000)
                for p in a.encode(af):
                    out.mux(p)
                t0 += n
            for p in a.encode(None):
                out.mux(p)
    return path


def facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [float(f.pts * f.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        first = next(p for p in c.demux(c.streams.video[0]) if p.size)
    with av.open(str(path)) as c:
        audio = [(p.pts, p.size) for p in c.demux(*c.streams.audio) if p.size] if c.streams.audio else []
    return {"pts": pts, "audio": audio, "first_key": first.is_keyframe}


def ffmpeg_clean(path: Path) -> bool:
    import subprocess

    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True)
    return proc.returncode == 0 and not proc.stderr.strip()


@pytest.fixture(scope="module")
def title(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("title") / "title.mp4")


# -- planning (pure) ------------------------------------------------------------------------------


def _index(n: int, gop: int, step: int = 10) -> SourceIndex:
    pts = tuple(range(0, n * step, step))
    return SourceIndex(pts, tuple(pts[::gop]), Fraction(1, 240), step)


def test_boundaries_are_the_key_frames_nearest_equal_durations():
    segs = plan_segments(_index(100, 10), 3)  # key frames every 10 frames; thirds at 33.3 / 66.7 frames
    assert [(s.start_pts, s.end_pts) for s in segs] == [(None, 300), (300, 700), (700, None)]
    assert [s.frames for s in segs] == [30, 40, 30] and sum(s.frames for s in segs) == 100
    assert [s.seek_pts for s in segs] == [None, 300, 700]


def test_intra_only_sources_split_at_exact_frame_ranges():
    segs = plan_segments(_index(10, 1), 3)
    assert [s.frames for s in segs] == [3, 3, 4]
    assert [s.start_pts for s in segs] == [None, 30, 60]


def test_too_few_gops_is_a_usage_error():
    with pytest.raises(UsageError, match="at most 2 segments"):
        plan_segments(_index(20, 10), 3)
    assert len(plan_segments(_index(20, 10), 2)) == 2


def test_bad_segment_spec_exits_2(capsys, title, tmp_path):
    with pytest.raises(SystemExit) as exc:  # argparse: usage line, exit 2
        cli_main(["run", str(title), "-o", str(tmp_path / "s.mp4"), "--segment", "3/3", *FAST])
    assert exc.value.code == 2 and "0 <= I < N" in capsys.readouterr().err


# -- segment runs and join ------------------------------------------------------------------------


def run_segments(src: Path, out_dir: Path, n: int, ext: str = ".mp4") -> list:
    parts = []
    for i in range(n):
        part = out_dir / f"part{i}{ext}"
        assert cli_main(["run", str(src), "-o", str(part), "--segment", f"{i}/{n}", *FAST]) == 0
        parts.append(part)
    return parts


def test_three_segments_join_to_the_title_frames_timestamps_and_audio(tmp_path, title):
    parts = run_segments(title, tmp_path, 3)
    src = facts(title)
    seen = []
    for part in parts:
        f = facts(part)
        assert f["first_key"] and f["audio"] == []  # each segment opens on a key frame, video only
        seen += f["pts"]
    assert seen == src["pts"]  # exactly the title's frames, each once, at its source timestamp
    out = tmp_path / "joined.mp4"
    assert cli_main(["join", *map(str, reversed(parts)), "-o", str(out)]) == 0  # order from the manifests
    j = facts(out)
    assert j["pts"] == src["pts"] and all(b > a for a, b in zip(j["pts"], j["pts"][1:]))
    assert len(j["audio"]) == len(src["audio"]) and j["audio"][0][1] == src["audio"][0][1]
    assert ffmpeg_clean(out)


def test_join_refuses_an_incomplete_or_doubled_set(capsys, tmp_path, title):
    parts = run_segments(title, tmp_path, 3, ext=".mkv")
    assert cli_main(["join", str(parts[0]), str(parts[2]), "-o", str(tmp_path / "j.mkv")]) == 3
    assert "segments 1/3 missing" in capsys.readouterr().err
    assert cli_main(["join", str(parts[0]), str(parts[1]), str(parts[1]), "-o", str(tmp_path / "j.mkv")]) == 3
    assert "given twice" in capsys.readouterr().err
    Path(str(parts[1]) + ".segment.json").unlink()  # as after a segment run that did not finish
    assert cli_main(["join", *map(str, parts), "-o", str(tmp_path / "j.mkv")]) == 3
    assert "manifest missing" in capsys.readouterr().err


def test_intra_only_source_segments_hold_exact_frame_ranges(tmp_path):
    src = make_clip(tmp_path / "intra.mp4", frames=10, audio=False, intra_only=True)
    parts = run_segments(src, tmp_path, 3)
    assert [len(facts(p)["pts"]) for p in parts] == [3, 3, 4]
    out = tmp_path / "j.mp4"
    assert cli_main(["join", *map(str, parts), "-o", str(out)]) == 0
    assert facts(out)["pts"] == facts(src)["pts"]


def test_workers_split_run_and_join_in_one_command(tmp_path, title):
    out = tmp_path / "w.mp4"
    assert cli_main(["run", str(title), "-o", str(out), "--workers", "2", *FAST]) == 0
    f, src = facts(out), facts(title)
    assert f["pts"] == src["pts"] and len(f["audio"]) == len(src["audio"])
    assert [p.name for p in tmp_path.iterdir()] == ["w.mp4"]  # parts folder removed after the join


# -- cuts on the output's closed-GOP grid (--keyint K --closed-gop) -------------------------------


def test_closed_gop_boundaries_are_multiples_of_keyint_not_source_key_frames():
    segs = plan_segments(_index(100, 7), 3, gop=10)  # source key frames every 7; output GOP 10
    assert [(s.start_pts, s.end_pts) for s in segs] == [(None, 300), (300, 700), (700, None)]
    assert [s.frames for s in segs] == [30, 40, 30]
    assert [s.seek_pts for s in segs] == [None, 280, 700]  # decode from the source key frame at/before
    with pytest.raises(UsageError, match="3 GOPs of --keyint 40"):
        plan_segments(_index(100, 7), 4, gop=40)


def key_frames(path: Path) -> list:
    """Presentation indices of the key-frame packets of the video stream."""
    import av

    with av.open(str(path)) as c:
        pk = [(int(p.pts), bool(p.is_keyframe)) for p in c.demux(c.streams.video[0]) if p.size]
    order = {pts: i for i, pts in enumerate(sorted(p for p, _ in pk))}
    return sorted(order[p] for p, k in pk if k)


@pytest.fixture(scope="module")
def grid_title(tmp_path_factory) -> Path:
    from synthetic import make_clip as synthetic_clip

    return synthetic_clip(tmp_path_factory.mktemp("grid") / "title.mp4", width=128, height=96, frames=44,
                          audio=True)


GOP = ["--codec", "hevc", "--preset", "ultrafast", "--bypass", "--crf", "30", "--keyint", "8", "--closed-gop"]


def test_closed_gop_segments_join_to_the_key_frames_of_one_run(tmp_path, grid_title, capsys):
    single = tmp_path / "single.mp4"
    assert cli_main(["run", str(grid_title), "-o", str(single), *GOP]) == 0
    assert key_frames(single) == [0, 8, 16, 24, 32, 40]  # an IDR every 8 frames, nothing else
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}.mp4")
        assert cli_main(["run", str(grid_title), "-o", str(parts[-1]), "--segment", f"{i}/3", *GOP]) == 0
    src = facts(grid_title)
    sizes = [len(facts(p)["pts"]) for p in parts]
    assert sizes == [16, 16, 12] and all(key_frames(p)[0] == 0 for p in parts)  # cuts at frames 16, 32
    joined = tmp_path / "joined.mp4"
    assert cli_main(["join", *map(str, parts), "-o", str(joined)]) == 0
    j = facts(joined)
    assert key_frames(joined) == key_frames(single)  # no extra IDR at a cut
    assert j["pts"] == src["pts"] == facts(single)["pts"]  # frame count and timestamps exact
    assert len(j["audio"]) == len(src["audio"]) and ffmpeg_clean(joined)
    # --workers forwards the GOP options to its segment processes
    workers = tmp_path / "w.mp4"
    assert cli_main(["run", str(grid_title), "-o", str(workers), "--workers", "2", *GOP]) == 0
    assert key_frames(workers) == key_frames(single) and facts(workers)["pts"] == src["pts"]
    # a segment cut on another grid does not join with these
    other = tmp_path / "other.mp4"
    assert cli_main(["run", str(grid_title), "-o", str(other), "--segment", "1/3", *GOP[:-3], "--keyint", "4",
                     "--closed-gop"]) == 0
    capsys.readouterr()
    assert cli_main(["join", str(parts[0]), str(other), str(parts[2]), "-o", str(tmp_path / "x.mp4")]) == 3
    assert "closed-GOP grids" in capsys.readouterr().err


def test_closed_gop_needs_keyint(tmp_path, grid_title, capsys):
    assert cli_main(["run", str(grid_title), "-o", str(tmp_path / "s.mp4"), *GOP[:-3], "--closed-gop"]) == 2
    assert "--closed-gop needs --keyint" in capsys.readouterr().err
