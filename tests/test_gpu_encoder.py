"""NVENC encoder orchestration on CPU: a fake PyNvVideoCodec whose encoder is real libx265.

The fake keeps NVENC's contract (brief §1.7, PyNvVideoCodec 2.2 docstrings): `Encode(frame,
pic_params)` returns a list of `{data, timestamp, picture_type}` dicts, output is delayed by the
B-frames, and only `EndEncode()` returns the tail. What is checked is our side: explicit
options, timestamps carried through `inputTimeStamp`, the flush, and the muxed result.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from preedit.client.encode import NvencConfig, NvencEncoder, normalize_packets, nvenc_options  # noqa: E402
from preedit.client.interfaces import Frame  # noqa: E402
from preedit.errors import EncodeError, UsageError  # noqa: E402

W, H = 160, 96


class _PicParams:
    inputTimeStamp = 0


class _FakeEncoder:
    def __init__(self, width, height, fmt, cpu_input, opts):
        assert fmt == "NV12" and cpu_input is False
        self.opts = opts
        self.ctx = av.CodecContext.create("libx265", "w")
        self.ctx.width, self.ctx.height, self.ctx.pix_fmt = width, height, "yuv420p"
        self.ctx.time_base, self.ctx.framerate = Fraction(1, 30), 30
        self.ctx.options = {"x265-params": f"bframes={opts['bf']}:b-adapt=0:keyint={opts['gop']}:log-level=none"}
        self.calls = []
        self.ended = False

    def _packets(self, packets):
        return [{"data": bytes(p), "timestamp": int(p.pts), "picture_type": 3 if p.is_keyframe else 1} for p in packets]

    def Encode(self, tensor, params):  # noqa: N802 - PyNvVideoCodec's name
        assert isinstance(tensor, torch.Tensor) and tensor.is_contiguous() and tensor.dtype == torch.uint8
        nv12 = tensor.cpu().numpy()
        yuv = np.concatenate([nv12[:H], nv12[H:, 0::2].reshape(H // 4, W), nv12[H:, 1::2].reshape(H // 4, W)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = params.inputTimeStamp
        self.calls.append(params.inputTimeStamp)
        return self._packets(self.ctx.encode(frame))

    def EndEncode(self):  # noqa: N802
        self.ended = True
        return self._packets(self.ctx.encode(None))

    def GetNumBFrames(self):  # noqa: N802
        return int(self.opts["bf"])


class FakeNvc:
    NV_ENC_PIC_PARAMS = _PicParams

    def __init__(self):
        self.encoders = []

    def CreateEncoder(self, width, height, fmt, cpu_input, **opts):  # noqa: N802
        enc = _FakeEncoder(width, height, fmt, cpu_input, opts)
        self.encoders.append(enc)
        return enc


def _frames(n, tb_pts):
    yy, xx = np.mgrid[0 : H * 3 // 2, 0:W]
    for i in range(n):
        arr = ((xx + yy * 3 + 11 * i) % 200 + 16).astype(np.uint8)
        yield Frame(index=i, pts=tb_pts[i], time_base=Fraction(1, 1000), nv12=torch.from_numpy(arr))


def test_nvenc_options_are_explicit_when_built_from_config():
    opts = nvenc_options(NvencConfig(codec="av1", preset="P5", rc="vbr", cq=30, gop=60, bframes=3),
                         fps=Fraction(30000, 1001), cuda_stream=1234)
    for key in ("codec", "preset", "tuning_info", "rc", "gop", "idrperiod", "bf", "fps", "cq"):
        assert key in opts
    assert opts["preset"] == "P5" and opts["gop"] == opts["idrperiod"] == 60 and opts["bf"] == 3
    assert opts["use_ivf_container"] == 0 and opts["cudastream"] == 1234 and opts["fps"] == 30


def test_nvenc_options_use_integer_bps_when_bitrate_given():
    opts = nvenc_options(NvencConfig(rc="cbr", cq=None, bitrate_kbps=4500), fps=Fraction(25))
    assert opts["bitrate"] == 4_500_000 and opts["maxbitrate"] == 4_500_000 and "cq" not in opts


@pytest.mark.parametrize("kwargs", [{"preset": "p4"}, {"rc": "abr"}, {"rc": "constqp"}, {"codec": "vp9"},
                                    {"cq": 60}, {"rc": "cbr", "cq": None}])
def test_nvenc_config_rejects_invalid_settings(kwargs):
    with pytest.raises(UsageError):
        NvencConfig(**kwargs)


def test_normalize_packets_handles_dicts_bytes_and_int_lists():
    assert normalize_packets([{"data": b"\x01\x02", "timestamp": 5, "picture_type": 3}]) == [(b"\x01\x02", 5, True)]
    assert normalize_packets(b"\x00\x01") == [(b"\x00\x01", None, False)]
    assert normalize_packets([0, 0, 1]) == [(b"\x00\x00\x01", None, False)]
    assert normalize_packets([]) == [] and normalize_packets(None) == []


def test_nvenc_encoder_flushes_delayed_frames_when_finish_calls_endencode(tmp_path):
    nvc = FakeNvc()
    pts = [0, 33, 67, 100, 140, 167, 200, 233, 267, 300]  # ms, slightly variable
    enc = NvencEncoder(tmp_path / "out.mp4", W, H, NvencConfig(bframes=2, gop=5), time_base=Fraction(1, 1000),
                       frame_rate=Fraction(30), nvc=nvc)
    for frame in _frames(len(pts), pts):
        enc.encode(frame)
    before_flush = enc.packets_muxed
    stats = enc.finish()
    fake = nvc.encoders[0]
    assert fake.ended and fake.calls == list(range(len(pts)))
    assert before_flush < len(pts)  # NVENC-style delay: the tail only comes with EndEncode
    assert stats["frames"] == len(pts) and stats["bframes_actual"] == 2
    with av.open(str(tmp_path / "out.mp4")) as c:
        s = c.streams.video[0]
        got = [round(float(f.pts * f.time_base) * 1000) for f in c.decode(s)]
    assert got == pts


def test_nvenc_encoder_refuses_encode_after_finish_and_finish_is_idempotent(tmp_path):
    nvc = FakeNvc()
    enc = NvencEncoder(tmp_path / "o.mkv", W, H, NvencConfig(bframes=0), nvc=nvc)
    frames = list(_frames(2, [0, 1]))
    enc.encode(frames[0])
    first = enc.finish()
    assert enc.finish() == first and first["frames"] == 1
    with pytest.raises(EncodeError):
        enc.encode(frames[1])


def test_nvenc_encoder_rejects_av1_into_ts_and_odd_sizes(tmp_path):
    with pytest.raises(UsageError, match="MPEG-TS"):
        NvencEncoder(tmp_path / "o.ts", W, H, NvencConfig(codec="av1"), nvc=FakeNvc())
    with pytest.raises(UsageError, match="even"):
        NvencEncoder(tmp_path / "o.mp4", W + 1, H, NvencConfig(), nvc=FakeNvc())


def test_nvenc_encoder_raises_encode_error_when_pynvvideocodec_missing(tmp_path, monkeypatch):
    import preedit.client.hardware as caps

    monkeypatch.setattr(caps, "import_nvc", lambda: None)
    with pytest.raises(EncodeError, match="PyNvVideoCodec"):
        NvencEncoder(tmp_path / "o.mp4", W, H)


def test_nvenc_config_from_client_settings_maps_rate_control_and_preset():
    from preedit.client.encode import EncoderSettings, nvenc_config_from_settings

    cfg = nvenc_config_from_settings(EncoderSettings(codec="hevc", crf=30, preset="slow"))
    assert (cfg.rc, cfg.cq, cfg.preset, cfg.codec) == ("vbr", 30, "P5", "hevc")
    cfg = nvenc_config_from_settings(EncoderSettings(codec="av1", crf=63, preset="10"))
    assert cfg.cq == 63 and cfg.preset == "P2"  # NVENC AV1 CQ is 0..63 (FFmpeg nvenc_av1.c), not scaled to 51
    cfg = nvenc_config_from_settings(EncoderSettings(codec="h264", qp=27))
    assert (cfg.rc, cfg.qp) == ("constqp", 27)
    cfg = nvenc_config_from_settings(EncoderSettings(codec="hevc", bitrate_kbps=3000))
    assert (cfg.rc, cfg.bitrate_kbps, cfg.cq) == ("vbr", 3000, None)


def test_client_nvenc_encoder_raises_so_client_falls_back_when_gpu_has_no_nvenc(tmp_path, monkeypatch):
    import preedit.client.hardware as caps
    from preedit.client.encode import ClientNvencEncoder, EncoderSettings
    from preedit.client.interfaces import StreamInfo

    h100 = {"cuda": True, "device": {"name": "NVIDIA H100 80GB HBM3"}, "nvenc": [], "nvdec": ["h264", "hevc"]}
    monkeypatch.setattr(caps, "capabilities", lambda device_id=0, probe=True: h100)
    info = StreamInfo(width=W, height=H, time_base=Fraction(1, 30), average_rate=Fraction(30))
    with pytest.raises(EncodeError, match="H100 80GB HBM3 has no NVENC for hevc"):
        ClientNvencEncoder(tmp_path / "o.mp4", info, EncoderSettings(codec="hevc"))


def test_client_nvenc_encoder_writes_output_bits_with_fake_nvenc(tmp_path):
    from preedit.client.encode import ClientNvencEncoder, EncoderSettings
    from preedit.client.interfaces import StreamInfo

    info = StreamInfo(width=W, height=H, time_base=Fraction(1, 1000), average_rate=Fraction(30))
    enc = ClientNvencEncoder(tmp_path / "o.mkv", info, EncoderSettings(codec="hevc", crf=28), nvc=FakeNvc())
    for frame in _frames(6, [0, 33, 67, 100, 133, 167]):
        enc.encode(frame)
    enc.mux_audio([])
    stats = enc.finish()
    assert stats["frames"] == 6 and stats["output_bits"] > 0 and enc.frames == 6
    assert (enc.first_pts, enc.last_end_pts) == (0, 167 + 33)  # what the pipeline reads for the duration
