"""Unit tests of the differentiable codec proxy (training/proxy)."""

from __future__ import annotations

import math

import pytest
import torch

from preedit.training.proxy import (
    CodecProxy,
    ProxyConfig,
    av1_q_to_hevc_qp,
    av1_qindex,
    av1_qstep,
    block_dct,
    block_idct,
    clip_ste,
    deadzone_quantize,
    dct_matrix,
    hevc_chroma_qp,
    hevc_qstep,
    round_ste,
    to_codec_pixels,
)
from preedit.training.proxy._predict import motion_compensate, motion_search


def _textured_sequence(b: int = 1, t: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random texture in NV12 code values [B, T, H*3/2, W]; frame t is frame 0 shifted by t px."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 1, h + 2 * t, w + 2 * t + 8, generator=g) * 160 + 40
    base = torch.nn.functional.avg_pool2d(base, 3, 1, 1)
    frames = []
    for ti in range(t):
        y = base[:, 0, t : t + h, ti : ti + w]
        uv = torch.full((b, h // 2, w), 128.0) + (y[:, ::2, :] - 128.0) * 0.1
        frames.append(torch.cat([y, uv], dim=1))
    return torch.stack(frames, dim=1)


def test_dct_matrix_is_orthonormal_when_built_for_every_block_size():
    for n in (4, 8, 16, 32):
        d = dct_matrix(n)
        assert torch.allclose(d @ d.T, torch.eye(n), atol=1e-5)


def test_block_dct_round_trips_when_inverted():
    x = torch.rand(2, 64, 96) * 255
    for n in (4, 8, 16, 32):
        assert torch.allclose(block_idct(block_dct(x, n)), x, atol=1e-3)


def test_hevc_qstep_matches_hm_anchors_when_qp_given():
    assert hevc_qstep(4) == pytest.approx(1.0)
    assert hevc_qstep(22) == pytest.approx(8.0)
    assert hevc_qstep(32) == pytest.approx(25.4, rel=1e-3)
    assert hevc_chroma_qp(25) == 25 and hevc_chroma_qp(40) == 36 and hevc_chroma_qp(50) == 44


def test_av1_mapping_matches_anchors_when_qindex_given():
    assert av1_qindex(20) == 80 and av1_qindex(63) == 255
    assert av1_qstep(0) == pytest.approx(0.5)
    assert av1_qstep(80) == pytest.approx(87 / 8)
    assert av1_q_to_hevc_qp(63) == pytest.approx(51.0)
    with pytest.raises(ValueError):
        av1_qindex(64)


def test_deadzone_quantize_uses_rounding_offset_when_forward():
    c = torch.tensor([0.6, 0.7, -0.7, 1.5, 2.2])
    levels = deadzone_quantize(c, 1.0, 1.0 / 3.0)
    assert levels.tolist() == [0.0, 1.0, -1.0, 1.0, 2.0]
    inter = deadzone_quantize(c, 1.0, 1.0 / 6.0)
    assert inter.tolist() == [0.0, 0.0, -0.0, 1.0, 2.0]


def test_ste_gradients_are_nonzero_when_through_quantization_and_clipping():
    x = (torch.linspace(-20.0, 280.0, 64)).requires_grad_(True)
    y = deadzone_quantize(clip_ste(x), 10.0, 1.0 / 3.0)
    y.sum().backward()
    assert (x.grad != 0).all(), "every input, inside or outside [0, 255], must get a gradient"
    inside = (x.detach() >= 0) & (x.detach() <= 255)
    assert torch.allclose(x.grad[inside], torch.full_like(x.grad[inside], 0.1))
    assert torch.allclose(x.grad[~inside], torch.full_like(x.grad[~inside], 0.1e-3))
    r = torch.tensor([0.4, 1.6], requires_grad=True)
    round_ste(r).sum().backward()
    assert r.grad.tolist() == [1.0, 1.0]


def test_proxy_gradient_reaches_every_frame_when_rate_and_distortion_backpropagate():
    x = _textured_sequence(t=3).requires_grad_(True)
    out = CodecProxy()(x, torch.tensor([32.0]), block_size=8)
    (out.bits.sum() + ((out.recon - x.detach()) ** 2).mean()).backward()
    per_frame = x.grad.abs().sum((0, 2, 3))
    assert (per_frame > 0).all()


def test_proxy_reconstructs_almost_exactly_when_qstep_is_very_fine():
    x = torch.round(_textured_sequence(t=2))
    for codec in ("hevc", "av1"):
        out = CodecProxy(ProxyConfig(codec=codec))(x, torch.tensor([-8.0]), block_size=8)  # Δ ≈ 0.25
        assert (out.recon - x).abs().max() <= 1.0
        assert ((out.recon - x) ** 2).mean() < 0.05


def test_proxy_rate_decreases_when_qp_grows():
    x = _textured_sequence(t=2, seed=3)
    proxy = CodecProxy()
    bits = [float(proxy(x, torch.tensor([qp]), block_size=8).bits.sum()) for qp in (17.0, 27.0, 37.0, 47.0)]
    assert all(a > b for a, b in zip(bits, bits[1:])), bits


def test_proxy_prefers_inter_when_next_frame_is_a_shift():
    x = _textured_sequence(t=2, seed=1)
    out = CodecProxy(ProxyConfig(search_radius=4))(x, torch.tensor([37.0]), block_size=8)
    assert float(out.inter_fraction[0, 1]) > 0.5
    assert float(out.bits[0, 1]) < float(out.bits[0, 0])


def test_motion_search_finds_shift_when_frame_is_translated():
    ref = torch.rand(1, 64, 64) * 255
    cur = torch.roll(ref, shifts=(2, -3), dims=(1, 2))
    mv = motion_search(cur, ref, 16, 4)
    inner = mv[0, 1:-1, 1:-1].reshape(-1, 2)
    assert (inner == torch.tensor([-2, 3])).all()
    pred = motion_compensate(ref, mv, 16)
    assert torch.allclose(pred[0, 16:48, 16:48], cur[0, 16:48, 16:48])


def test_to_codec_pixels_rounds_and_clips_when_forward():
    x = torch.tensor([-3.2, 0.4, 127.5, 254.6, 300.0])
    assert to_codec_pixels(x).tolist() == [0.0, 0.0, 128.0, 255.0, 255.0]


def test_proxy_config_rejects_unknown_codec_when_built():
    with pytest.raises(ValueError, match="valid"):
        ProxyConfig(codec="vp9")
    with pytest.raises(ValueError, match="valid"):
        ProxyConfig(block_sizes=(6,))


def test_proxy_handles_sizes_not_multiple_of_64_when_padding():
    x = _textured_sequence(t=1, h=48, w=80)
    out = CodecProxy()(x, torch.tensor([30.0]), block_size=32)
    assert out.recon.shape == x.shape
    assert math.isfinite(float(out.bits.sum()))
