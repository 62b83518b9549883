"""Issue 19, live: `preedit run -o udp://127.0.0.1:P` (MPEG-TS datagrams as frames are encoded) read back
frame by frame by PyAV in another process, and `-o DIR/live.m3u8` (a sliding-window HLS playlist whose
media sequence grows while old segments are deleted, closed with EXT-X-ENDLIST however the run ends)."""

from __future__ import annotations

import errno
import json
import re
import socket
import subprocess
import sys
import time

import av
import pytest

from preedit.cli import main as cli_main
from preedit.client.encode import container_for
from preedit.errors import UsageError
from procs import sigterm_when
from synthetic import make_clip
from test_run_triton import repo  # noqa: F401 - fixture (identity model through the real Triton)

FAST = ["--codec", "h264", "--preset", "ultrafast"]

# Reader in its own process: binds the port at open, then decodes until 5 s of silence after the first
# packet (the sender is done by then), flushes the decoder and prints the frame timestamps.
READER = r"""
import av, json, sys
c = av.open(sys.argv[1], format="mpegts", timeout=(180, 5))
v = c.streams.video[0]
pts = []
try:
    for pkt in c.demux(v):
        pts += [f.pts for f in pkt.decode()]
except av.error.FFmpegError:
    pass  # the silence after the last datagram
pts += [f.pts for f in v.codec_context.decode(None)]
print(json.dumps({"pts": pts, "size": [v.codec_context.width, v.codec_context.height]}))
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


@pytest.mark.needs_triton
def test_run_udp_output_every_frame_read_back_by_pyav_in_another_process(repo, tmp_path):  # noqa: F811
    frames = 50
    src = make_clip(tmp_path / "src.mp4", width=160, height=96, frames=frames, fps=25)
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        src_pts = [float(p.pts * v.time_base) for p in c.demux(v) if p.size]
    port = _free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    reader = subprocess.Popen([sys.executable, "-c", READER, f"{url}?buffer_size=4194304"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _bound(port) and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _bound(port), "the reader never bound its port"
        # Real path: embedded Triton with the identity model, frames through the shm ring, paced.
        assert cli_main(["run", str(src), "-o", url, "--model-repository", str(repo), "--realtime", *FAST]) == 0
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    got = json.loads(out)
    assert got["size"] == [160, 96]
    assert len(got["pts"]) == frames, err
    tb = 1 / 90000  # MPEG-TS clock; the muxer adds a constant offset, the spacing is the source's
    rel = sorted((p - min(got["pts"])) * tb for p in got["pts"])
    assert rel == pytest.approx([t - src_pts[0] for t in sorted(src_pts)], abs=1e-4)


def _playlist(path):
    text = path.read_text()
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    segs = [x for x in text.splitlines() if x and not x.startswith("#")]
    return text, seq, segs


def test_run_live_hls_window_slides_deletes_old_segments_and_ends_with_endlist(tmp_path):
    frames, fps = 250, 25  # 10 s, 1 s segments, a window of 3
    src = make_clip(tmp_path / "src.mp4", width=160, height=96, frames=frames, fps=fps, audio=True)
    out = tmp_path / "www"
    out.mkdir()
    playlist = out / "live.m3u8"
    assert cli_main(["run", str(src), "-o", str(playlist), "--bypass", "--hls-time", "1",
                     "--hls-list-size", "3", *FAST]) == 0
    text, seq, segs = _playlist(playlist)
    assert len(segs) == 3 and seq == 10 - 3, text  # slid: 10 segments made, the last 3 listed
    assert segs == [f"live_{n:05d}.m4s" for n in range(seq, seq + 3)]
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
    assert all(round(float(d)) <= target for d in re.findall(r"#EXTINF:([\d.]+),", text))
    on_disk = sorted(p.name for p in out.glob("live_0*.m4s"))
    assert "live_00000.m4s" not in on_disk and len(on_disk) <= 3 + 1  # the muxer keeps one spare
    with av.open(str(playlist)) as c:  # what the window lists plays: 3 s of frames, with audio
        assert c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 3 * fps


def test_run_live_hls_interrupted_still_ends_with_endlist(tmp_path):
    src = make_clip(tmp_path / "src.mp4", width=160, height=96, frames=250, fps=25)
    playlist = tmp_path / "live.m3u8"
    code, err = sigterm_when(["run", str(src), "-o", str(playlist), "--bypass", "--realtime", "--hls-time", "1",
                              "--hls-list-size", "3", *FAST],  # signalled once the window has slid
                             ready=lambda: playlist.exists() and "#EXT-X-MEDIA-SEQUENCE:1" in playlist.read_text())
    assert code == 143 and "Traceback" not in err, err
    text, seq, segs = _playlist(playlist)
    assert seq >= 1 and 1 <= len(segs) <= 3 and text.rstrip().endswith("#EXT-X-ENDLIST"), text
    with av.open(str(playlist)) as c:
        assert sum(1 for _ in c.decode(video=0)) > 0


@pytest.mark.parametrize("url, codec, why", [
    ("srt://127.0.0.1:9000", "h264", "SRT is not available"),
    ("udp://127.0.0.1", "h264", "needs a port"),
    ("udp://127.0.0.1:9000", "av1", "MPEG-TS muxer cannot carry AV1"),
])
def test_network_output_refusals_are_one_line(url, codec, why):
    with pytest.raises(UsageError, match=why):
        container_for(url, codec)
    assert container_for("udp://127.0.0.1:9000", "hevc") == "mpegts"
