"""Issue 18 rows 1-6 and 10: NVENC options, caps probe, PyNvVideoCodec version, live muxing.

Fake PyNvVideoCodec modules model what the review found in its sources: the option parser reads
`fps` with stoi (den 1) and `aq` as the strength; a `colorspace` key tags the VUI full range;
2.0.x returns bare bytes. x265 stands in for NVENC's bitstream so the container is real.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from preedit.client.encode._nvenc import NvencConfig, NvencEncoder, nvenc_options  # noqa: E402
from preedit.client.interfaces import Frame  # noqa: E402
from preedit.errors import EncodeError  # noqa: E402

W, H = 128, 64


class _Params:
    inputTimeStamp = 0


class _Reconf:
    frameRateNum, frameRateDen = 30, 1


class _FakeEncoder:
    def __init__(self, opts, bare_bytes):
        self.opts, self.bare = opts, bare_bytes
        self.rate = Fraction(int(str(opts["fps"]).split("/")[0]), 1)  # stoi(): "30000/1001" -> 30000
        self.ctx = av.CodecContext.create("libx265", "w")
        self.ctx.width, self.ctx.height, self.ctx.pix_fmt = W, H, "yuv420p"
        self.ctx.time_base, self.ctx.framerate = Fraction(1, 30), 30
        rng = "full" if "colorspace" in opts else "limited"  # PyNvVideoCodec's VUI setup
        self.ctx.options = {"x265-params": f"bframes={opts['bf']}:b-adapt=0:keyint={opts['gop']}:range={rng}:log-level=none"}

    def _out(self, packets):
        if self.bare:
            return b"".join(bytes(p) for p in packets)
        return [{"data": bytes(p), "timestamp": int(p.pts), "picture_type": 3 if p.is_keyframe else 1} for p in packets]

    def Encode(self, t, params):  # noqa: N802
        nv12 = t.cpu().numpy()
        yuv = np.concatenate([nv12[:H], nv12[H:, 0::2].reshape(H // 4, W), nv12[H:, 1::2].reshape(H // 4, W)])
        f = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        f.pts = params.inputTimeStamp
        return self._out(self.ctx.encode(f))

    def EndEncode(self):  # noqa: N802
        return self._out(self.ctx.encode(None))

    def GetEncodeReconfigureParams(self):  # noqa: N802
        return _Reconf()

    def Reconfigure(self, p):  # noqa: N802
        self.rate = Fraction(p.frameRateNum, p.frameRateDen)


class FakeNvc:
    NV_ENC_PIC_PARAMS = _Params

    def __init__(self, version="2.1.0", bare_bytes=False):
        self.__version__, self.bare, self.encoders = version, bare_bytes, []

    def CreateEncoder(self, w, h, fmt, cpu, **opts):  # noqa: N802
        self.encoders.append(_FakeEncoder(opts, self.bare))
        return self.encoders[-1]


def _frames(n, step=33):
    yy, xx = np.mgrid[0 : H * 3 // 2, 0:W]
    for i in range(n):
        arr = ((xx * 2 + yy + 7 * i) % 200 + 16).astype(np.uint8)
        yield Frame(index=i, pts=i * step, time_base=Fraction(1, 1000), nv12=torch.from_numpy(arr))


def _encode(path, n=8, nvc=None, **cfg):
    nvc = nvc or FakeNvc()
    enc = NvencEncoder(path, W, H, NvencConfig(gop=30, **cfg), time_base=Fraction(1, 1000),
                       frame_rate=cfg.pop("rate", Fraction(30)), nvc=nvc)
    for f in _frames(n):
        enc.encode(f)
    return enc, nvc


def test_row1_output_is_tagged_limited_range_when_nv12_is_limited(tmp_path):
    enc, _ = _encode(tmp_path / "o.mkv")
    enc.finish()
    with av.open(str(tmp_path / "o.mkv")) as c:
        frame = next(c.decode(video=0))
    assert frame.color_range != 2  # 2 = AVCOL_RANGE_JPEG (full)
    assert "colorspace" not in nvenc_options(NvencConfig(), fps=Fraction(30))


def test_row2_av1_qp_goes_to_nvenc_on_the_qindex_scale():
    from preedit.client.encode import EncoderSettings
    from preedit.client.encode._nvenc import nvenc_config_from_settings
    from preedit.qp import av1_qindex

    cfg = nvenc_config_from_settings(EncoderSettings(codec="av1", qp=40))
    assert cfg.qp == round(av1_qindex(40)) == 160
    assert nvenc_options(cfg, fps=Fraction(30))["constqp"] == "160,160,160"
    assert nvenc_config_from_settings(EncoderSettings(codec="hevc", qp=40)).qp == 40


def test_row3_aq_sends_automatic_strength_unless_a_strength_is_given():
    assert nvenc_options(NvencConfig(aq=True), fps=Fraction(30))["aq"] == "0"
    assert nvenc_options(NvencConfig(aq=True, aq_strength=8), fps=Fraction(30))["aq"] == "8"
    assert "aq" not in nvenc_options(NvencConfig(), fps=Fraction(30))


def test_row4_fractional_frame_rate_reaches_the_encoder_exactly(tmp_path):
    nvc = FakeNvc()
    enc = NvencEncoder(tmp_path / "o.mkv", W, H, NvencConfig(), time_base=Fraction(1, 1000),
                       frame_rate=Fraction(30000, 1001), nvc=nvc)
    assert nvc.encoders[0].rate == Fraction(30000, 1001) and enc.exact_frame_rate
    enc.finish()


def test_row5_nvenc_probe_uses_the_requested_gpu():
    from preedit.client.hardware import probe_nvenc

    class Nvc:
        calls = []

        def GetEncoderCaps(self, codec, gpu_id=0):  # noqa: N802 - no docstring, like a pybind overload
            self.calls.append(gpu_id)
            return {"num_encoder_engines": 1 if gpu_id == 1 else 0}

    nvc = Nvc()
    assert set(probe_nvenc(nvc, 1)) == {"h264", "hevc", "av1"} & set(probe_nvenc(nvc, 1))
    assert set(nvc.calls) == {1}

    class NoIndex:
        def GetEncoderCaps(self, codec):  # noqa: N802
            return {"num_encoder_engines": 1}

    assert probe_nvenc(NoIndex(), 1) is None  # cannot address GPU 1: the table is used
    assert probe_nvenc(NoIndex(), 0)


def test_row6_pynvvideocodec_2_0_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(EncodeError, match=r"2\.0\.3 .*bare bytes.*>=2\.1"):
        NvencEncoder(tmp_path / "o.mkv", W, H, NvencConfig(), nvc=FakeNvc("2.0.3", bare_bytes=True))
    # a module that claims 2.1 but answers bare bytes is caught at the first packet
    with pytest.raises(EncodeError, match="bare bytes"):
        enc, _ = _encode(tmp_path / "p.mkv", nvc=FakeNvc("2.1.0", bare_bytes=True))
        enc.finish()


def test_row6_dict_packets_with_bframes_keep_order_and_keyframes(tmp_path):
    enc, _ = _encode(tmp_path / "o.mkv", n=12, bframes=2)
    enc.finish()
    with av.open(str(tmp_path / "o.mkv")) as c:
        pkts = [p for p in c.demux(video=0) if p.size]
    with av.open(str(tmp_path / "o.mkv")) as c:
        got = [round(float(f.pts * f.time_base) * 1000) for f in c.decode(video=0)]
    assert got == [i * 33 for i in range(12)]
    assert pkts[0].is_keyframe and sum(p.is_keyframe for p in pkts) == 1  # gop 30: one IDR


def test_row10_nvenc_output_is_muxed_while_encoding_and_playable_if_the_run_dies(tmp_path):
    out = tmp_path / "live.ts"
    enc, _ = _encode(out, n=40, bframes=0)
    assert enc.packets_muxed > 0 and out.stat().st_size > 0  # before finish(): live output
    del enc  # the run dies without finish(): what was muxed is still a playable stream
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) > 0
