"""`preedit ladder --format both` (HLS + DASH over the same fMP4 segments) on a synthetic 10 s clip with
audio: frames, aligned keyframes, segment lengths, RFC 8216 playlist rules, rate against target, the
DASH MPD's representations / bandwidths / timeline, and FFmpeg playing the MPD. `--bypass` (the
encode/packaging path; the pre-edit step is the shared Triton engine seam)."""

from __future__ import annotations

import io
import math
import re
import subprocess
import xml.etree.ElementTree as ET

import av
import pytest

from preedit.cli import main as cli_main
from preedit.client.ladder import read_media_playlist
from preedit.quality.ffmpeg import ffmpeg_exe
from procs import sigterm_when
from synthetic import make_clip

FPS, FRAMES, SEG = 25, 250, 2.0
RUNGS = [(360, 800), (240, 400), (180, 250)]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    # The source's own key frames (every 12 frames) must not leak into the renditions' closed GOPs.
    src = make_clip(root / "src.mp4", width=640, height=360, frames=FRAMES, fps=FPS, audio=True, gop=12)
    out = root / "out"
    args = ["ladder", str(src), "-o", str(out), "--codec", "h264", "--preset", "veryfast", "--bypass",
            "--segment-s", str(SEG), "--format", "both"]
    for h, k in RUNGS:
        args += ["--rendition", f"{h}:{k}"]
    assert cli_main(args) == 0
    return out


def _video(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.pts * v.time_base, f.key_frame) for f in c.decode(v)]
    return frames


def test_ladder_renditions_decode_to_input_frame_count_with_aligned_keyframes(ladder):
    keys = {}
    for h, _ in RUNGS:
        frames = _video(ladder / f"{h}p" / "index.m3u8")
        assert len(frames) == FRAMES, h
        keys[h] = [t for t, k in frames if k]
    first = keys[RUNGS[0][0]]
    assert len(first) == math.ceil(FRAMES / (SEG * FPS))
    assert all(keys[h] == first for h, _ in RUNGS)


def test_ladder_segments_last_segment_s_within_one_frame_except_last(ladder):
    for h, _ in RUNGS:
        segs = read_media_playlist(ladder / f"{h}p" / "index.m3u8")
        assert sum(d for d, _ in segs) == pytest.approx(FRAMES / FPS, abs=1 / FPS)
        assert all(abs(d - SEG) <= 1 / FPS + 1e-6 for d, _ in segs[:-1])


def test_ladder_playlists_follow_rfc8216_rules(ladder):
    master = (ladder / "master.m3u8").read_text().splitlines()
    assert master[0] == "#EXTM3U" and any(re.fullmatch(r"#EXT-X-VERSION:\d+", x) for x in master)
    infs = [x for x in master if x.startswith("#EXT-X-STREAM-INF:")]
    assert len(infs) == len(RUNGS)
    for line in infs:
        for attr in ("BANDWIDTH=", "AVERAGE-BANDWIDTH=", "RESOLUTION=", "FRAME-RATE=25.000"):
            assert attr in line
        assert re.search(r'CODECS="avc1\.[0-9A-F]{6},mp4a\.40\.2"', line), line
    for sub in [f"{h}p" for h, _ in RUNGS] + ["audio"]:
        text = (ladder / sub / "index.m3u8").read_text()
        target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
        assert re.search(r"#EXT-X-VERSION:\d+", text) and "#EXT-X-ENDLIST" in text
        assert all(round(float(d)) <= target for d in re.findall(r"#EXTINF:([\d.]+),", text))


def test_ladder_rate_within_10pct_of_target_and_peak_within_bandwidth(ladder):
    master = (ladder / "master.m3u8").read_text()
    bws = [int(b) for b in re.findall(r"[^-]BANDWIDTH=(\d+)", master)]
    for (h, kbps), bw in zip(RUNGS, bws):
        segs = read_media_playlist(ladder / f"{h}p" / "index.m3u8")
        avg = sum(b for _, b in segs) * 8 / sum(d for d, _ in segs)
        assert avg == pytest.approx(kbps * 1000, rel=0.10), (h, avg)
        assert max(b * 8 / d for d, b in segs) <= bw


MPD = "{urn:mpeg:dash:schema:mpd:2011}"


def _mpd(ladder):
    root = ET.parse(ladder / "manifest.mpd").getroot()
    assert root.tag == f"{MPD}MPD" and root.get("type") == "static"
    sets = {a.get("contentType"): a for a in root.iter(f"{MPD}AdaptationSet")}
    return root, sets


def test_dash_manifest_has_the_renditions_with_measured_bandwidth_and_segment_timeline(ladder):
    root, sets = _mpd(ladder)
    assert set(sets) == {"video", "audio"}
    reps = sets["video"].findall(f"{MPD}Representation")
    assert [(int(r.get("height")), r.get("id")) for r in reps] == [(h, f"{h}p") for h, _ in RUNGS]
    assert root.get("mediaPresentationDuration") == f"PT{FRAMES / FPS:.3f}S"
    for rep, (h, kbps) in zip(reps, RUNGS):
        assert int(rep.get("width")) == 2 * round(640 * h / 360 / 2)
        assert re.fullmatch(r"avc1\.[0-9A-F]{6}", rep.get("codecs"))
        tmpl = rep.find(f"{MPD}SegmentTemplate")
        scale = int(tmpl.get("timescale"))
        durs = [int(s.get("d")) / scale for s in tmpl.iter(f"{MPD}S")]
        assert sum(durs) == pytest.approx(FRAMES / FPS, abs=1 / FPS)
        assert all(abs(d - SEG) <= 1 / FPS + 1e-6 for d in durs[:-1])
        files = [ladder / tmpl.get("media").replace("$Number%05d$", f"{n:05d}") for n in range(len(durs))]
        sizes = [f.stat().st_size for f in files]
        assert not (ladder / tmpl.get("media").replace("$Number%05d$", f"{len(durs):05d}")).exists()
        assert max(b * 8 / d for b, d in zip(sizes, durs)) <= int(rep.get("bandwidth"))
        assert sum(sizes) * 8 / sum(durs) == pytest.approx(kbps * 1000, rel=0.10)
        blob = (ladder / tmpl.get("initialization")).read_bytes() + b"".join(f.read_bytes() for f in files)
        with av.open(io.BytesIO(blob)) as c:  # init + segments, as a DASH client appends them
            assert sum(1 for _ in c.decode(video=0)) == FRAMES


def test_dash_manifest_plays_in_ffmpeg(ladder):
    mpd = str((ladder / "manifest.mpd").resolve())  # FFmpeg's DASH demuxer wants an absolute path
    for i in range(len(RUNGS)):
        run = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", mpd, "-map", f"0:v:{i}", "-map", "0:a",
                              "-f", "null", "-"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert int(re.findall(r"frame=\s*(\d+)", run.stderr)[-1]) == FRAMES


def test_ladder_stopped_by_sigterm_still_leaves_a_playable_ladder(tmp_path):
    src = make_clip(tmp_path / "long.mp4", width=160, height=96, frames=300, fps=FPS, audio=True)  # 12 s, 6 segments
    out = tmp_path / "out"
    code, err = sigterm_when(["ladder", str(src), "-o", str(out), "--bypass", "--codec", "h264", "--preset", "veryfast",
                              "--rendition", "96:200", "--rendition", "48:100", "--format", "both"],
                             ready=lambda: (out / "48p" / "seg_00001.m4s").exists())  # two segments cut
    assert code == 143 and "Traceback" not in err, err
    assert "#EXT-X-STREAM-INF" in (out / "master.m3u8").read_text()
    assert (out / "manifest.mpd").is_file()
    for sub in ("96p", "48p", "audio"):
        assert (out / sub / "index.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")
    with av.open(str(out / "96p" / "index.m3u8")) as c:
        assert 0 < sum(1 for _ in c.decode(video=0)) < 300


def _first_pts(path, kind):
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        return float(next(c.decode(s)).pts * s.time_base)


def test_ladder_audio_stays_in_sync_with_the_video_renditions(ladder):
    # The fMP4 muxer delays the video by the encoder's reorder depth; the audio gets the same delay.
    src = ladder.parent / "src.mp4"
    source_offset = _first_pts(src, "video") - _first_pts(src, "audio")
    audio = _first_pts(ladder / "audio" / "index.m3u8", "audio")
    for h, _ in RUNGS:
        offset = _first_pts(ladder / f"{h}p" / "index.m3u8", "video") - audio
        assert abs(offset - source_offset) <= 1024 / 48000 + 1e-3, (h, offset, source_offset)  # one AAC frame
