"""URL input on the GPU path: PyAV demuxes, NVDEC decodes the compressed packets (issue 18, row 10).

The NVDEC stand-in here is FFmpeg's software decoder fed only what the real `Decode(PacketData)`
gets: the bytes at `bsl_data`/`bsl` and `pts`. It decodes raw H.264 without extradata, so the
packets must be Annex-B with in-band parameter sets, as NVDEC needs; its frames' timestamps are
the packet pts, as NVDEC's are. None of this has run on NVDEC hardware (no GPU here).
"""

from __future__ import annotations

import ctypes
import json
import logging
import subprocess
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from preedit.cli import main as cli_main
from preedit.client import hardware
from preedit.client.decode import ClientNvdecDecoder, PyAvDecoder, make_nvdec_decoder, needs_annexb_filter
from preedit.client.decode._pyav import yuv420p_to_nv12
from preedit.errors import InputError
from preedit.serve import free_port
from synthetic import make_clip, media  # noqa: F401 - fixture
from test_gpu_decoder import _Decoded  # DLPack-carrying stand-in for PyNvVideoCodec's DecodedFrame

FRAMES = 24
START_CODES = (b"\0\0\0\1", b"\0\0\1")


class FakePacketData:
    """PyNvVideoCodec's `PacketData` fields (all zero: an empty packet means end of stream)."""

    def __init__(self):
        self.bsl_data = self.bsl = self.pts = self.dts = self.key = 0


class SoftNvdec:
    """`Decode(PacketData)` through FFmpeg's software decoder, from the raw bytes only."""

    def __init__(self, codec: str):
        self.ctx = av.CodecContext.create(codec, "r")  # no extradata: parameter sets must be in-band
        self.heads, self.pts_in, self.flushed = [], [], False

    def Decode(self, pd):  # noqa: N802
        if not pd.bsl:
            self.flushed = True
            frames = self.ctx.decode(None)
        else:
            data = ctypes.string_at(pd.bsl_data, pd.bsl)
            self.heads.append(data[:4])
            self.pts_in.append(pd.pts)
            packet = av.Packet(data)
            packet.pts = packet.dts = pd.pts  # NVDEC sees only the pts; dts is for FFmpeg's bookkeeping
            frames = self.ctx.decode(packet)
        return [_Decoded(torch.from_numpy(yuv420p_to_nv12(f, f.width, f.height)), f.pts) for f in frames]


class FakeNvc:
    class cudaVideoCodec:  # noqa: N801 - PyNvVideoCodec's name
        H264, HEVC, AV1 = "cudaVideoCodec.H264", "cudaVideoCodec.HEVC", "cudaVideoCodec.AV1"

    PacketData = FakePacketData

    def __init__(self):
        self.decoders = []

    def CreateDecoder(self, **kwargs):  # noqa: N802
        assert kwargs["usedevicememory"] is True
        dec = SoftNvdec(kwargs["codec"].split(".")[-1].lower())
        self.decoders.append(dec)
        return dec


def bframe_clip(path, frames=FRAMES):
    """H.264 with B-frames (decode order != presentation order), 64x48, 25 fps."""
    return make_clip(path, width=64, height=48, frames=frames, fps=25, x264_params="bframes=2:keyint=12")


def cpu_reference(path):
    dec = PyAvDecoder(str(path))
    try:
        return [(f.pts, np.asarray(f.nv12)) for f in dec]
    finally:
        dec.close()


@pytest.fixture
def clips(tmp_path):
    mp4 = bframe_clip(tmp_path / "bf.mp4")
    ts = tmp_path / "bf.ts"
    with av.open(str(mp4)) as src, av.open(str(ts), "w", format="mpegts") as dst:  # stream copy: Annex-B in TS
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    return {"mp4": mp4, "ts": ts}


@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_url_input_reaches_nvdec_as_annexb_packets_with_every_frame_and_its_pts(clips, kind):
    path = clips[kind]
    ref = cpu_reference(path)
    nvc = FakeNvc()
    dec = ClientNvdecDecoder(path.as_uri(), nvc=nvc, ring_size=0)  # file:///...: demuxed by PyAV, not NVDEC
    try:
        info = dec.info
        frames = list(dec)
    finally:
        dec.close()
    soft = nvc.decoders[0]
    assert soft.flushed and len(soft.pts_in) == FRAMES
    assert all(head.startswith(START_CODES) for head in soft.heads)  # AVCC converted (mp4) / passed (ts)
    assert soft.pts_in != sorted(soft.pts_in)  # packets came in decode order (B-frames)
    assert len(frames) == len(ref) == FRAMES
    assert [f.pts for f in frames] == [p for p, _ in ref]  # presentation order, source timestamps
    assert all(np.array_equal(f.nv12.numpy(), pic) for f, (_, pic) in zip(frames, ref))
    assert info.time_base == Fraction(1, 90000 if kind == "ts" else 12800)
    assert info.average_rate == 25 and info.codec_name == "h264" and (info.width, info.height) == (64, 48)


def test_annexb_filter_only_for_length_prefixed_h264_and_hevc():
    avcc = b"\x01\x64\x00\x1f\xff\xe1"
    assert needs_annexb_filter("h264", avcc) and needs_annexb_filter("hevc", avcc)
    assert not needs_annexb_filter("h264", b"\0\0\0\1\x67")  # Annex-B extradata (MPEG-TS)
    assert not needs_annexb_filter("h264", None) and not needs_annexb_filter("av1", b"\x81\x00")


def test_url_decoder_carries_audio_packets_on_frames_like_the_cpu_decoder(media):
    src = media("flower.mp4")  # 150 frames + AAC
    with av.open(str(src)) as c:
        n_audio = sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
    dec = ClientNvdecDecoder(src.as_uri(), nvc=FakeNvc(), ring_size=0, max_frames=None)
    try:
        frames = list(dec)
        riding = sum(len(f.meta.get("audio", [])) for f in frames)
        rest = dec.take_audio()
    finally:
        dec.close()
    assert len(frames) == 150 and len(dec.audio_streams) == 1
    assert riding + len(rest) == n_audio and riding > 0


def test_make_nvdec_decoder_takes_urls_and_still_refuses_realtime(clips, monkeypatch):
    caps = {"cuda": True, "nvdec": ["h264", "hevc"], "nvenc": [], "video_stages_usable": True}
    monkeypatch.setattr(hardware, "capabilities", lambda device_id=0, probe=True: caps)
    monkeypatch.setattr(hardware, "import_nvc", FakeNvc)
    dec = make_nvdec_decoder(clips["ts"].as_uri(), open_timeout_s=5)
    try:
        assert isinstance(dec, ClientNvdecDecoder) and len(list(dec)) == FRAMES
    finally:
        dec.close()
    with pytest.raises(InputError, match="real-time"):
        make_nvdec_decoder(clips["ts"].as_uri(), realtime=True)
    with pytest.raises(InputError, match="does not decode h264"):
        monkeypatch.setattr(hardware, "capabilities", lambda device_id=0, probe=True: dict(caps, nvdec=["av1"]))
        make_nvdec_decoder(clips["mp4"].as_uri())


def _fake_gpu(monkeypatch):
    caps = {"cuda": True, "device": {"name": "FakeGPU"}, "nvdec": ["h264", "hevc"], "nvenc": [],
            "video_stages_usable": True, "reasons": []}
    monkeypatch.setattr(hardware, "capabilities", lambda device_id=0, probe=True: caps)
    nvc = FakeNvc()
    monkeypatch.setattr(hardware, "import_nvc", lambda: nvc)
    return nvc


def test_run_decodes_url_input_on_nvdec_with_frames_and_timestamps_kept(clips, tmp_path, monkeypatch, capsys):
    nvc = _fake_gpu(monkeypatch)
    out, summary = tmp_path / "out.mp4", tmp_path / "s.json"
    code = cli_main(["run", clips["mp4"].as_uri(), "-o", str(out), "--device", "cuda", "--bypass",
                     "--codec", "h264", "--preset", "ultrafast", "--summary-json", str(summary)])
    assert code == 0, capsys.readouterr().err
    stages = json.loads(summary.read_text())["stage_devices"]
    assert stages["decode"] == "cuda" and stages["encode"] == "cpu"
    assert nvc.decoders and len(nvc.decoders[0].pts_in) == FRAMES
    with av.open(str(clips["mp4"])) as a, av.open(str(out)) as b:
        src = sorted(float(f.pts * f.time_base) for f in a.decode(video=0))
        got = sorted(float(f.pts * f.time_base) for f in b.decode(video=0))
    assert len(got) == len(src) == FRAMES
    assert np.allclose(np.array(got) - got[0], np.array(src) - src[0], atol=1e-3)


def test_run_on_nvdec_ends_cleanly_when_live_udp_source_goes_silent(media, monkeypatch, caplog, tmp_path, capsys):
    import imageio_ffmpeg

    nvc = _fake_gpu(monkeypatch)
    port = free_port()
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-re", "-i", str(media("flower.mp4")), "-an",
           "-t", "1.5", "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    procs = []
    timer = threading.Timer(1.0, lambda: procs.append(subprocess.Popen(cmd)))  # once the receiver listens
    timer.start()
    try:
        with caplog.at_level(logging.WARNING):
            code = cli_main(["run", f"udp://127.0.0.1:{port}", "-o", str(tmp_path / "live.ts"), "--device", "cuda",
                             "--bypass", "--read-timeout-s", "3", "--codec", "h264", "--preset", "ultrafast"])
    finally:
        timer.join()
        for p in procs:
            p.wait(timeout=30)
    assert code == 0, capsys.readouterr().err
    assert "treating the silence as end of stream" in caplog.text and "GPU fallback: decode" not in caplog.text
    soft = nvc.decoders[0]
    assert soft.flushed and len(soft.pts_in) >= 20  # ~1.5 s at 25 fps; UDP may drop on a loaded machine
    assert all(head.startswith(START_CODES) for head in soft.heads)
    with av.open(str(tmp_path / "live.ts")) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 20


def test_gpu_check_url_step_passes_with_fake_nvdec_on_mkv_and_ts(clips, tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gpu_check_url_nvdec",
                                                  Path(__file__).resolve().parents[1] / "deploy/gpu_check_url_nvdec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _fake_gpu(monkeypatch)
    mkv = tmp_path / "bf.mkv"
    with av.open(str(clips["mp4"])) as a, av.open(str(mkv), "w") as b:  # Matroska: AVCC, the filter path
        out = b.add_stream_from_template(a.streams.video[0])
        for packet in a.demux(a.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                b.mux(packet)
    assert script.main([str(mkv), "--frames", "30"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r["ok"] and r["frames_nvdec"] == FRAMES == r["bit_exact_frames"] for r in rows)
