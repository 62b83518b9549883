import numpy as np
import pytest
import torch

from preedit import color


def _planes(h=6, w=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (h, w), dtype=np.uint8), rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8),
            rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8))


def test_nv12_pack_split_roundtrips_when_numpy():
    y, u, v = _planes()
    nv12 = color.nv12_pack(y, u, v)
    assert nv12.shape == (9, 8)
    # interleaving: second plane row 0 is u0 v0 u1 v1 ...
    assert nv12[6, 0] == u[0, 0] and nv12[6, 1] == v[0, 0] and nv12[6, 2] == u[0, 1]
    y2, u2, v2 = color.nv12_split(nv12)
    assert np.array_equal(y2, y) and np.array_equal(u2, u) and np.array_equal(v2, v)


def test_nv12_pack_split_roundtrips_when_torch_batched():
    y, u, v = (torch.from_numpy(np.stack([p, p])) for p in _planes(4, 6, seed=1))
    nv12 = color.nv12_pack(y, u, v)
    assert tuple(nv12.shape) == (2, 6, 6)
    y2, u2, v2 = color.nv12_split(nv12)
    assert torch.equal(y2, y) and torch.equal(u2, u) and torch.equal(v2, v)


def test_nv12_split_rejects_when_rows_not_multiple_of_three():
    with pytest.raises(ValueError, match="H\\*3/2"):
        color.nv12_split(np.zeros((7, 8), np.uint8))


def test_range_conversion_maps_endpoints():
    full = np.array([0, 255, 128], np.uint8)
    assert list(color.full_to_limited_luma(full)) == [16, 235, 126]
    assert list(color.full_to_limited_chroma(full)) == [16, 240, 128]
    assert list(color.limited_to_full_luma(np.array([16, 235], np.uint8))) == [0, 255]
    assert list(color.limited_to_full_chroma(np.array([16, 240, 128], np.uint8))) == [0, 255, 128]


def test_range_conversion_roundtrip_error_is_at_most_one():
    x = np.arange(256, dtype=np.uint8)
    back = color.limited_to_full_luma(color.full_to_limited_luma(x))
    assert np.abs(back.astype(int) - x).max() <= 1


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("rng_name", ["limited", "full"])
def test_yuv_rgb_roundtrip_when_matrix_and_range(matrix, rng_name):
    rgb = np.random.default_rng(2).random((3, 4, 4)).astype(np.float32)
    y, u, v = color.rgb_to_yuv(rgb, matrix, rng_name)
    back = color.yuv_to_rgb(y, u, v, matrix, rng_name)
    assert np.allclose(back, rgb, atol=1e-5)


def test_yuv_to_rgb_white_and_black_when_limited():
    rgb = color.yuv_to_rgb(np.array([[235.0, 16.0]]), np.array([[128.0, 128.0]]), np.array([[128.0, 128.0]]))
    assert np.allclose(rgb[:, 0, 0], 1.0) and np.allclose(rgb[:, 0, 1], 0.0)


def test_bt601_and_bt709_differ_for_saturated_red():
    red = np.zeros((3, 1, 1), np.float32)
    red[0] = 1.0
    assert not np.isclose(color.rgb_to_yuv(red, "bt601")[0], color.rgb_to_yuv(red, "bt709")[0]).all()


def test_unknown_matrix_lists_valid_choices():
    with pytest.raises(ValueError, match="bt601"):
        color.yuv_to_rgb(np.zeros(1), np.zeros(1), np.zeros(1), matrix="bt2020")


@pytest.mark.parametrize("strided", [False, True])
def test_uv_interleave_into_matches_nv12_pack_when_planes_have_row_padding(strided):
    _, u, v = _planes(8, 12, seed=2)
    if strided:  # FFmpeg planes: rows padded to the line size, cropped views
        u = np.pad(u, ((0, 0), (0, 10)))[:, :6]
        v = np.pad(v, ((0, 0), (0, 10)))[:, :6]
    nv12 = np.zeros((12, 12), np.uint8)
    color.interleave_uv_into(u, v, nv12[8:])
    expected = color.nv12_pack(np.zeros((8, 12), np.uint8), np.ascontiguousarray(u), np.ascontiguousarray(v))
    assert np.array_equal(nv12, expected)
    u2 = np.pad(np.zeros_like(u), ((0, 0), (0, 4)))[:, :6]  # a padded destination, as an AVFrame plane
    v2 = np.zeros_like(v)
    color.deinterleave_uv_into(nv12[8:], u2, v2)
    assert np.array_equal(u2, u) and np.array_equal(v2, v)


def test_uv_interleave_into_matches_when_fallback_path_is_taken(monkeypatch):
    _, u, v = _planes(4, 8, seed=3)
    fast = np.empty((2, 8), np.uint8)
    color.interleave_uv_into(u, v, fast)
    monkeypatch.setattr(color, "_LITTLE_ENDIAN", False)  # the strided copies of a big-endian host
    slow = np.empty((2, 8), np.uint8)
    color.interleave_uv_into(u, v, slow)
    u2, v2 = np.empty_like(u), np.empty_like(v)
    color.deinterleave_uv_into(slow, u2, v2)
    assert np.array_equal(fast, slow) and np.array_equal(u2, u) and np.array_equal(v2, v)
