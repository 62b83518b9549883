"""Tests of the training stage: config, data bank, losses, trainer (+ resume), proxy-check."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from preedit.color import nv12_split
from preedit.network import PreEditorNet, load_checkpoint
from preedit.training.config import TrainConfig
from preedit.training.data import BankConfig, build_bank, sample_batch
from preedit.training.losses import LossConfig, Losses
from preedit.training.proxy import CodecProxy
from synthetic import make_clip, media  # noqa: F401,E402 - fixture


def _synthetic_bank(s: int = 3, t: int = 2, size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, size=(s, 1, size // 8, size // 8)).repeat(8, 2).repeat(8, 3)
    noise = rng.normal(0.0, 12.0, size=(s, t, size, size))
    y = np.clip(np.repeat(base, t, axis=1) + noise, 0, 255).astype(np.uint8)
    uv = np.full((s, t, size // 2, size), 128, np.uint8)
    return np.concatenate([y, uv], axis=2)


def test_train_config_rejects_overlap_when_clip_is_both_trained_and_held_out():
    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(train_sources=["a.mp4"], heldout=["a.mp4"])


def test_train_config_warns_when_yaml_has_unknown_keys():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = TrainConfig.from_dict({"steps": 3, "bogus": 1, "loss": {"rate_weight": 2.0}})
    assert cfg.steps == 3 and cfg.loss.rate_weight == 2.0
    assert any("bogus" in str(w.message) for w in caught)


def test_default_config_names_held_out_clips_when_loaded():
    from preedit.training.cli import DEFAULT_CONFIG
    from preedit.training.config import load_yaml

    cfg = TrainConfig.from_dict(load_yaml(str(DEFAULT_CONFIG)))
    assert len(cfg.heldout) >= 4
    assert not set(cfg.heldout) & set(cfg.train_sources)


def test_sample_batch_returns_float_nv12_when_cropping_and_flipping():
    bank = torch.from_numpy(_synthetic_bank(size=320))
    batch = sample_batch(bank, 3, 256, torch.Generator().manual_seed(0), "cpu")
    assert batch.shape == (3, 2, 384, 256) and batch.dtype == torch.float32
    _, u, v = nv12_split(batch)
    assert torch.all(u == 128) and torch.all(v == 128), "chroma interleave survives the flip"


def test_build_bank_cuts_sequences_when_reading_a_clip(tmp_path):
    path = make_clip(tmp_path / "src.mp4", width=320, height=256, frames=8)
    bank, used = build_bank([path], BankConfig(window=256, seq_len=2, seqs_per_source=2, max_frames=4), cache=tmp_path)
    assert bank.shape == (2, 2, 384, 256) and bank.dtype == np.uint8
    assert used == ["src.mp4"]
    y, _, _ = nv12_split(bank)
    assert 0 < y.mean() < 255
    again, _ = build_bank([path], BankConfig(window=256, seq_len=2, seqs_per_source=2, max_frames=4), cache=tmp_path)
    assert np.array_equal(bank, again), "second call reads the cache"


def test_losses_are_exactly_baseline_when_network_is_identity_at_init():
    bank = torch.from_numpy(_synthetic_bank(s=2, t=2))
    batch = bank.float()
    net = PreEditorNet()
    qp = torch.tensor([30.0, 40.0])
    edited = net(batch.reshape(4, 384, 256), qp.repeat_interleave(2).unsqueeze(1)).reshape(batch.shape)
    assert torch.equal(edited, batch), "untrained network is an exact identity"
    proxy = CodecProxy()
    dec = proxy(edited, qp, source=batch, block_size=8)
    plain = proxy(batch, qp, source=batch, block_size=8)
    cfg = LossConfig()
    terms = Losses(cfg)(batch, dec.recon, plain.recon, dec.bits, plain.bits)
    assert terms.logs["rate"] == pytest.approx(1.0, rel=1e-4) and terms.logs["fid"] == pytest.approx(1.0, rel=1e-4)
    expected = cfg.rate_weight + cfg.fidelity_weight + cfg.chroma_weight + cfg.vmaf_weight
    assert float(terms.total) == pytest.approx(expected, rel=1e-4)


def test_losses_skip_lpips_with_message_when_weights_are_not_local(caplog):
    with caplog.at_level("WARNING"):
        losses = Losses(LossConfig(vmaf_weight=0.0, lpips_weight=1.0, lpips_weights="/nonexistent/lpips.pt"))
    assert losses.lpips is None
    assert "LPIPS loss skipped" in caplog.text


def test_train_main_trains_saves_and_resumes_when_run_twice(tmp_path):
    from preedit.training.cli import main

    bank_path = tmp_path / "bank.npz"
    np.savez(bank_path, bank=_synthetic_bank(s=2, t=2, size=256), names=json.dumps(["synthetic"]))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("bank: {window: 256}\nbatch_size: 1\nckpt_every: 1\nlr: 0.01\nloss: {vmaf_weight: 0.0}\n")
    out = tmp_path / "run"
    common = ["--config", str(cfg), "--out", str(out), "--bank", str(bank_path), "--no-validate", "--device", "cpu"]
    assert main(common + ["--steps", "2"]) == 0
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["step"] == 2
    assert main(common + ["--steps", "3", "--resume"]) == 0
    second = torch.load(out / "last.pt", weights_only=False)
    assert second["step"] == 3
    net, extra = load_checkpoint(out / "model.pt")
    assert extra["step"] == 3 and extra["train_config"]["steps"] == 3
    changed = any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), PreEditorNet().state_dict().values()))
    assert changed, "training moved the weights away from the identity init"


def test_fit_rate_scales_recovers_known_scales_when_samples_are_exact():
    from preedit.training.proxy_check import fit_rate_scales

    samples = [{"units_intra": a, "units_inter": b, "real_bits": 3.0 * a + 0.5 * b} for a, b in [(10, 5), (20, 1), (7, 30), (1, 2)]]
    scales = fit_rate_scales(samples)
    assert scales["intra"] == pytest.approx(3.0) and scales["inter"] == pytest.approx(0.5)


def test_encoder_options_lists_valid_choices_when_encoder_unknown():
    from preedit.errors import EncodeError
    from preedit.training.encoders import encoder_options

    assert encoder_options("libx265", 32)["x265-params"].startswith("qp=32")
    assert "qp=40" in encoder_options("libsvtav1", 40)["svtav1-params"]
    with pytest.raises(EncodeError, match="valid"):
        encoder_options("libvpx", 30)


def test_proxy_check_ranks_like_x265_when_run_on_a_clip(media, capsys):  # noqa: F811
    from preedit.training.proxy_check import main

    path = media("flower.mp4")
    assert main(["--clips", str(path), "--qps", "22", "30", "38", "46", "--frames", "2", "--max-size", "128", "--encoders", "libx265"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("libx265"))
    rho_rate, rho_dist = map(float, row.split()[1:3])
    assert rho_rate >= 0.9 and rho_dist >= 0.9


def test_validate_gives_zero_bd_rate_when_editor_is_identity(media):  # noqa: F811
    from preedit.network import identity_model
    from preedit.training.validate import format_report, torch_editor, validate

    path = media("flower.mp4")
    report = validate({"identity": torch_editor(identity_model())}, [path], 3, [26, 34, 42], "libx265", preset="ultrafast", max_size=128)
    bd = report["clips"]["flower.mp4"]["bd_identity"]
    assert bd["vmaf_neg"] == pytest.approx(0.0, abs=1e-6) and bd["psnr_y"] == pytest.approx(0.0, abs=1e-6)
    plain = report["clips"]["flower.mp4"]["plain"]
    assert plain[0]["kbits"] > plain[-1]["kbits"], "higher QP spends fewer bits"
    assert "| flower.mp4 | identity |" in format_report(report)


def test_train_main_rejects_set_when_not_key_value(tmp_path):
    from preedit.errors import UsageError
    from preedit.training.cli import main

    with pytest.raises(UsageError, match="KEY=VALUE"):
        main(["--out", str(tmp_path), "--set", "loss.rate_weight"])


def test_real_codec_forward_uses_real_pixels_when_keeping_proxy_gradient():
    from preedit.training.trainer import real_codec_forward

    frames = torch.from_numpy(_synthetic_bank(s=1, t=2, size=64)).float().requires_grad_(True)
    proxy_recon = frames * 1.0
    out, bits = real_codec_forward(frames, proxy_recon, torch.tensor([30.0]), "hevc", "ultrafast")
    assert bits.shape == (1,) and bits[0] > 0, "the real encoder's bits per sequence come back"
    assert not torch.equal(out.detach(), frames.detach()), "forward values come from the real decode"
    assert out.detach().eq(out.detach().round()).all()
    out.sum().backward()
    assert torch.allclose(frames.grad, torch.ones_like(frames)), "gradient is the proxy's (identity here)"


def test_rate_value_sets_the_rate_term_but_keeps_the_proxy_gradient_direction():
    from preedit.training.losses import LossConfig, Losses

    torch.manual_seed(0)
    src = torch.rand(1, 1, 264, 176) * 255
    bits = torch.tensor([[200.0]], requires_grad=True)
    plain = torch.tensor([[100.0]])
    losses = Losses(LossConfig(vmaf_weight=0.0, fidelity_weight=0.0, chroma_weight=0.0))
    proxy_only = losses(src, src, src, bits, plain)
    assert proxy_only.logs["rate"] == pytest.approx(2.0)
    real = losses(src, src, src, bits, plain, rate_value=3.0)
    assert real.logs["rate"] == pytest.approx(3.0) and real.logs["rate_proxy"] == pytest.approx(2.0)
    real.total.backward()
    assert bits.grad.item() == pytest.approx(3.0 / 2.0 / 100.0, rel=1e-4), "gradient is the proxy's, scaled by real/proxy"
