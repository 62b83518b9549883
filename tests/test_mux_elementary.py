"""Muxing raw NVENC-style elementary streams (Annex-B HEVC, OBU AV1) with source timestamps.

The streams are real: libx265 (with B-frames) and libsvtav1 through PyAV, taken apart into
raw packets in decode order exactly as NVENC hands them out, then muxed by our code.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from preedit.client.encode import EsSpool, decode_timestamps, mux_elementary  # noqa: E402
from preedit.errors import EncodeError  # noqa: E402
from synthetic import media  # noqa: F401,E402 - fixture

W, H, N = 160, 96, 12
TB = Fraction(1, 30000)
# Variable frame rate on purpose: gaps of 1001 ticks with a wobble.
SRC_PTS = [1001 * i + (i % 3) * 200 for i in range(N)]


def _frames():
    yy, xx = np.mgrid[0 : H * 3 // 2, 0:W]
    for i in range(N):
        yield ((xx * 2 + yy + 9 * i) % 200 + 16).astype(np.uint8)


def raw_packets(codec: str):
    """[(bytes, frame_index, keyframe)] in decode order, as an NVENC session would return them."""
    name = {"hevc": "libx265", "av1": "libsvtav1"}[codec]
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 30), 30
    if codec == "hevc":
        ctx.options = {"x265-params": "bframes=3:b-adapt=0:keyint=8:log-level=none"}
    else:
        ctx.options = {"preset": "12", "svtav1-params": "keyint=8"}
    out = []
    for i, arr in enumerate(_frames()):
        frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
        frame.pts = i
        out += [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    out += [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in ctx.encode(None)]
    return out


@pytest.fixture(scope="module")
def hevc_packets():
    return raw_packets("hevc")


@pytest.fixture(scope="module")
def av1_packets():
    logging.getLogger("libav").setLevel(logging.ERROR)
    return raw_packets("av1")


def _spool(packets):
    spool = EsSpool()
    for data, idx, key in packets:
        spool.add(data, idx, key)
    return spool


def _read_pts_seconds(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * f.time_base) for f in c.decode(s)]


def test_decode_timestamps_are_monotonic_and_not_after_pts_when_bframes_reorder():
    pts = [0, 4, 2, 1, 3, 8, 6, 5, 7]
    dts = decode_timestamps(pts)
    assert all(b > a for a, b in zip(dts, dts[1:]))
    assert all(d <= p for d, p in zip(dts, pts))
    assert dts[2:] == sorted(pts)[: len(pts) - 2]  # reorder depth 2


def test_decode_timestamps_equal_pts_when_no_reordering():
    pts = [0, 1001, 2002, 3400]
    assert decode_timestamps(pts) == pts


def test_decode_timestamps_raise_when_two_packets_share_a_pts():
    with pytest.raises(EncodeError):
        decode_timestamps([0, 1, 1])


def test_hevc_packets_leave_the_encoder_out_of_order_when_bframes_are_on(hevc_packets):
    order = [idx for _, idx, _ in hevc_packets]
    assert sorted(order) == list(range(N)) and order != sorted(order)
    assert hevc_packets[0][0][:4] == b"\x00\x00\x00\x01"  # Annex-B start code


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])
def test_mux_hevc_keeps_source_timestamps_when_stream_has_bframes(hevc_packets, tmp_path, suffix):
    spool = _spool(hevc_packets)
    try:
        out = tmp_path / f"out{suffix}"
        stats = mux_elementary(spool, "hevc", out, width=W, height=H, time_base=TB, frame_pts=SRC_PTS)
    finally:
        spool.close()
    assert stats["frames"] == N
    got = _read_pts_seconds(out)
    want = [float(p * TB) for p in SRC_PTS]
    assert len(got) == N
    # Containers may shift the start (MPEG-TS) and round to their tick (Matroska: 1 ms).
    rel_got = [g - got[0] for g in got]
    rel_want = [w - want[0] for w in want]
    assert max(abs(a - b) for a, b in zip(rel_got, rel_want)) <= 0.0011


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_mux_av1_obus_keep_source_timestamps(av1_packets, tmp_path, suffix):
    spool = _spool(av1_packets)
    try:
        out = tmp_path / f"out{suffix}"
        mux_elementary(spool, "av1", out, width=W, height=H, time_base=TB, frame_pts=SRC_PTS)
    finally:
        spool.close()
    got = _read_pts_seconds(out)
    assert len(got) == N
    want = [float(p * TB) for p in SRC_PTS]
    assert max(abs((g - got[0]) - (w - want[0])) for g, w in zip(got, want)) <= 0.0011


def test_mux_refuses_av1_in_mpegts_when_asked(av1_packets, tmp_path):
    spool = _spool(av1_packets[:2])
    try:
        with pytest.raises(EncodeError, match="MPEG-TS"):
            mux_elementary(spool, "av1", tmp_path / "x.ts", width=W, height=H, time_base=TB, frame_pts=SRC_PTS)
    finally:
        spool.close()


def test_mux_copies_audio_from_source_when_source_has_audio(hevc_packets, tmp_path, media):  # noqa: F811
    src = media("flower.mp4")  # synthetic, with AAC audio
    with av.open(str(src)) as c:
        n_audio = sum(1 for p in c.demux(c.streams.audio[0]) if p.dts is not None)
    spool = _spool(hevc_packets)
    try:
        out = tmp_path / "with_audio.mkv"
        stats = mux_elementary(spool, "hevc", out, width=W, height=H, time_base=TB, frame_pts=SRC_PTS, audio_from=src)
    finally:
        spool.close()
    assert stats["audio_streams"] == 1
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
        assert sum(1 for p in c.demux(c.streams.audio[0]) if p.dts is not None) == n_audio


def test_mux_rejects_unknown_container_suffix(hevc_packets, tmp_path):
    spool = _spool(hevc_packets[:1])
    try:
        with pytest.raises(EncodeError, match="valid"):
            mux_elementary(spool, "hevc", tmp_path / "x.avi", width=W, height=H, time_base=TB, frame_pts=SRC_PTS)
    finally:
        spool.close()
