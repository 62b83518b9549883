"""NVDEC decoder orchestration on CPU with a fake PyNvVideoCodec whose frames are borrowed.

The fake decoder writes every decoded picture into one pool buffer that the next `Decode()`
overwrites, as the real helper does (brief §1.5). The frames our decoder yields must survive that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preedit.client.decode import DeviceRing, NvdecDecoder, full_to_limited_
from preedit.color import nv12_full_to_limited

H, W = 8, 12


class _Packet:
    def __init__(self, pts):
        self.pts = pts


class _Decoded:
    def __init__(self, buf, ts):
        self.buf, self.timestamp = buf, ts

    def __dlpack__(self, stream=None):
        return self.buf.__dlpack__()

    def __dlpack_device__(self):
        return self.buf.__dlpack_device__()


class FakeDemuxer:
    def __init__(self, n, full_range=False, codec="H264", bit_depth=8):
        self.n, self.full_range, self.codec, self.depth = n, full_range, codec, bit_depth

    def BitDepth(self):  # noqa: N802
        return self.depth

    def __iter__(self):
        return iter([_Packet(100 * i) for i in range(self.n)])

    def GetNvCodecId(self):  # noqa: N802
        return f"cudaVideoCodec.{self.codec}"

    def Width(self):  # noqa: N802
        return W

    def Height(self):  # noqa: N802
        return H

    def FrameRate(self):  # noqa: N802
        return 25.0

    def ColorRange(self):  # noqa: N802
        return "JPEG" if self.full_range else "MPEG"


class FakeDecoder:
    """Two-frame delay (like a DPB); frames returned by one call live in a pool reused by the next."""

    def __init__(self):
        self.pool = [torch.zeros(H * 3 // 2, W, dtype=torch.uint8) for _ in range(4)]
        self.pending = []

    def Decode(self, packet):  # noqa: N802
        self.pending.append(packet.pts)
        out = []
        while len(self.pending) > 2 or (packet.pts == 100 * (FakeNvc.N - 1) and self.pending):
            pts = self.pending.pop(0)
            buf = self.pool[len(out)]
            buf.fill_(pts // 100 + 1)  # slot k is overwritten by the next call's k-th frame
            out.append(_Decoded(buf, pts))
        return out


class FakeNvc:
    N = 6

    def __init__(self, full_range=False, codec="H264", bit_depth=8):
        self.full_range, self.codec, self.bit_depth = full_range, codec, bit_depth

    def CreateDemuxer(self, filename):  # noqa: N802
        return FakeDemuxer(self.N, self.full_range, self.codec, self.bit_depth)

    def CreateDecoder(self, **kwargs):  # noqa: N802
        assert kwargs["usedevicememory"] is True
        return FakeDecoder()


@pytest.fixture
def dummy_file(tmp_path):
    path = tmp_path / "in.mp4"
    path.write_bytes(b"\0")
    return path


def test_decoder_yields_owned_frames_when_pool_is_overwritten(dummy_file):
    dec = NvdecDecoder(dummy_file, nvc=FakeNvc(), ring_size=8)
    frames = list(dec)
    assert [f.index for f in frames] == list(range(FakeNvc.N))
    assert [f.pts for f in frames] == [100 * i for i in range(FakeNvc.N)]
    # each kept frame still holds its own picture although the pool now holds the last one
    assert [int(f.nv12[0, 0]) for f in frames] == [i + 1 for i in range(FakeNvc.N)]
    assert dec.info.width == W and dec.info.height == H


def test_decoder_ring_reuses_buffers_round_robin(dummy_file):
    dec = NvdecDecoder(dummy_file, nvc=FakeNvc(), ring_size=2)
    ptrs = [f.nv12.data_ptr() for f in dec]
    assert len(set(ptrs)) == 2 and ptrs[0] == ptrs[2]


def test_decoder_converts_full_range_to_limited_like_cpu_path(dummy_file):
    dec = NvdecDecoder(dummy_file, nvc=FakeNvc(full_range=True))
    assert dec.color_range == "full"
    first = next(iter(dec))
    expected = nv12_full_to_limited(np.full((H * 3 // 2, W), 1, np.uint8))
    assert np.array_equal(first.nv12.cpu().numpy(), np.asarray(expected))


def test_full_to_limited_maps_extremes():
    t = torch.tensor([[0, 255], [0, 255], [128, 255]], dtype=torch.uint8)
    full_to_limited_(t, 2)
    assert t[:2].tolist() == [[16, 235], [16, 235]] and t[2].tolist() == [128, 240]


def test_device_ring_needs_two_buffers():
    with pytest.raises(ValueError):
        DeviceRing(lambda: torch.empty(1), 1)


def test_decoder_raises_input_error_when_file_missing(tmp_path):
    from preedit.errors import InputError

    with pytest.raises(InputError):
        NvdecDecoder(tmp_path / "missing.mp4", nvc=FakeNvc())


def test_decoder_allocates_fresh_frames_when_ring_size_is_zero(dummy_file):
    frames = list(NvdecDecoder(dummy_file, nvc=FakeNvc(), ring_size=0))
    assert len({f.nv12.data_ptr() for f in frames}) == len(frames)
    assert [int(f.nv12[0, 0]) for f in frames] == [i + 1 for i in range(FakeNvc.N)]


def test_client_decoder_refuses_realtime_so_the_cpu_decoder_takes_it():
    from preedit.client.decode import make_nvdec_decoder
    from preedit.errors import InputError

    # URLs are NVDEC input now (PyAV demuxes them: tests/test_gpu_url_nvdec.py)
    with pytest.raises(InputError, match="real-time"):
        make_nvdec_decoder("in.mp4", realtime=True)


def test_client_decoder_refuses_10_bit_and_codecs_nvdec_lacks(dummy_file):
    from preedit.client.decode import ClientNvdecDecoder
    from preedit.errors import InputError

    with pytest.raises(InputError, match="10-bit"):
        ClientNvdecDecoder(dummy_file, nvc=FakeNvc(bit_depth=10))
    with pytest.raises(InputError, match="does not decode av1"):
        ClientNvdecDecoder(dummy_file, nvc=FakeNvc(codec="AV1"), nvdec_codecs=["h264", "hevc"])
    dec = ClientNvdecDecoder(dummy_file, nvc=FakeNvc(), nvdec_codecs=["h264", "hevc"], max_frames=3)
    frames = list(dec)
    assert len(frames) == 3 and all("decode_ns" in f.meta for f in frames)
    assert dec.info.codec_name == "h264" and dec.take_audio() == []
