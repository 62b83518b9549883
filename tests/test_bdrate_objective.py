"""Tests of the round-3 training pipeline: BD-rate objective, κ fit, frame-type rate calibration,
data sampling (stratified starts, group caps, photos), the three-scale network and exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from preedit.color import nv12_pack, nv12_split
from preedit.network import NetConfig, PreEditorNet, PreEditorUNet, macs_per_frame
from preedit.training.data import BankConfig, cap_groups, downscale2, photo_sequence, source_group, stratified_starts
from preedit.training.kappa import KappaTable, kappa_from_curves
from preedit.training.objective import BDRateObjective, FrameTypeCalibration, GuardConfig, psnr_per_seq


def _seq(b=2, t=2, size=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(40, 210, size=(b, t, size // 8, size // 8)).repeat(8, 2).repeat(8, 3).astype(np.float32)
    y = y + rng.normal(0, 6, size=y.shape)
    uv = np.full((b, t, size // 2, size), 128.0, np.float32)
    return torch.from_numpy(np.clip(np.concatenate([y, uv], axis=2), 0, 255).round().astype(np.float32))


# -- κ ------------------------------------------------------------------------------------------


def test_kappa_from_curves_recovers_slope_when_log_rate_is_linear_in_quality():
    q = np.array([[95.0, 90.0, 82.0, 70.0], [90.0, 85.0, 77.0, 60.0]])
    lr = 3.0 + 0.07 * q  # ln R = a + 0.07 Q  → every point prices a quality point at 0.07
    k = kappa_from_curves([22, 27, 32, 37], lr, q)
    np.testing.assert_allclose(k, 0.07, rtol=1e-9)


def test_kappa_from_curves_gives_nan_when_curve_is_flat_or_not_monotone():
    q = np.array([[90.0, 90.0, 90.0], [90.0, 95.0, 80.0]])
    lr = np.array([[10.0, 9.0, 8.0], [10.0, 9.0, 8.0]])
    k = kappa_from_curves([22, 27, 32], lr, q)
    assert np.isnan(k[0]).all()
    assert np.isnan(k[1, 0]), "quality rose while bits fell: not a price"


def test_kappa_table_interpolates_and_holds_ends_when_queried_outside():
    t = KappaTable({"hevc": {"qp": [22, 32], "kappa": [0.1, 0.05]}})
    np.testing.assert_allclose(t("hevc", [10, 22, 27, 32, 51]), [0.1, 0.1, 0.075, 0.05, 0.05])
    np.testing.assert_allclose(t("av1", 27), 0.075)  # unknown family falls back to hevc


def test_kappa_table_rejects_non_positive_kappa():
    with pytest.raises(ValueError, match="kappa"):
        KappaTable({"hevc": {"qp": [22, 32], "kappa": [0.1, -0.01]}})


def test_shipped_kappa_table_is_positive_and_covers_the_training_qps():
    t = KappaTable.load("training/records/kappa.json")
    for fam in ("hevc", "av1"):
        qps = t.tables[fam]["qp"]
        assert qps[0] <= 22 and qps[-1] >= 42, f"{fam}: fitted QPs {qps}"
        assert all(k > 0 for k in t.tables[fam]["kappa"])


# -- objective ----------------------------------------------------------------------------------


def test_objective_is_zero_when_edit_is_identity():
    src = _seq()
    obj = BDRateObjective(KappaTable.default())
    lr = torch.log(torch.tensor([1e5, 2e5]))
    terms = obj(src, src.clone().requires_grad_(), src, lr, lr, torch.tensor([22.0, 40.0]), "hevc")
    assert abs(float(terms.total)) < 1e-6
    assert terms.logs["d_psnr"] == pytest.approx(0.0, abs=1e-6)


def test_objective_is_mean_of_per_sequence_log_rate_when_quality_unchanged():
    src = _seq()
    obj = BDRateObjective(KappaTable.default())
    lr0 = torch.log(torch.tensor([1e5, 4e5]))
    lr = lr0 + torch.log(torch.tensor([0.9, 1.2]))  # −10 % and +20 %: a ratio of sums would weigh the second 4x
    terms = obj(src, src.clone(), src, lr, lr0, torch.tensor([22.0, 40.0]), "hevc")
    assert float(terms.total) == pytest.approx((math.log(0.9) + math.log(1.2)) / 2, abs=1e-6)


def test_objective_prices_quality_loss_with_kappa_of_each_sequence_qp():
    src = _seq(b=1)
    worse = src.clone()
    worse[:, :, :256] = torch.clamp(worse[:, :, :256] + torch.randn(worse[:, :, :256].shape, generator=torch.Generator().manual_seed(1)) * 6, 0, 255).round()
    lr = torch.log(torch.tensor([1e5]))
    no_guard = GuardConfig(psnr_weight=0.0, gap_weight=0.0, uv_weight=0.0)
    costs = {}
    for qp in (22.0, 42.0):
        terms = BDRateObjective(KappaTable.default(), no_guard)(src, worse, src, lr, lr, torch.tensor([qp]), "hevc")
        d_neg = terms.logs["vmaf_neg_plain"] - terms.logs["vmaf_neg"]
        assert d_neg > 0.5
        costs[qp] = float(terms.total)
        assert costs[qp] == pytest.approx(float(KappaTable.default()("hevc", qp)) * d_neg, rel=1e-4)
    assert costs[22.0] > 3 * costs[42.0], "a quality point is dearer at low QP, as the encoder prices it"


def test_psnr_guard_is_zero_inside_margin_and_linear_beyond():
    src = _seq(b=1)
    lr = torch.log(torch.tensor([1e5]))
    g = GuardConfig(psnr_weight=1.0, psnr_margin=0.2, gap_weight=0.0, uv_weight=0.0, mse_floor=1e-4)
    dec = src.clone()
    dec[:, :, :256] += 1.0  # MSE 1 vs the lossless plain: a large PSNR loss
    terms = BDRateObjective(KappaTable.default(), g)(src, dec, src, lr, lr, torch.tensor([32.0]), "hevc")
    assert terms.logs["guard"] == pytest.approx(max(0.0, terms.logs["d_psnr"] - 0.2), rel=1e-5)
    assert terms.logs["d_psnr"] > 0.2


def test_psnr_guard_saturates_when_plain_encode_is_near_lossless():
    src = _seq(b=1)
    lr = torch.log(torch.tensor([1e5]))
    dec = src.clone()
    dec[:, :, :256] += 0.5 * torch.sign(torch.randn(dec[:, :, :256].shape, generator=torch.Generator().manual_seed(0)))  # MSE 0.25
    terms = BDRateObjective(KappaTable.default(), GuardConfig(gap_weight=0.0))(src, dec, src, lr, lr, torch.tensor([32.0]), "hevc")
    assert terms.logs["d_psnr"] == pytest.approx(10 * math.log10(1.25), abs=1e-3), "lossless vs MSE 0.25 is < 1 dB with the floor"


def test_psnr_per_seq_matches_definition():
    a = torch.zeros(1, 2, 4, 4)
    b = torch.full((1, 2, 4, 4), 2.0)
    assert float(psnr_per_seq(a, b)) == pytest.approx(10 * math.log10(255.0**2 / 4.0), rel=1e-4)


# -- frame-type calibration ---------------------------------------------------------------------


def test_frame_type_calibration_tracks_real_bits_per_unit_for_intra_and_inter():
    cal = FrameTypeCalibration({"hevc": {"intra": 1.0, "inter": 1.0}}, momentum=0.5)
    units = torch.tensor([[100.0, 10.0, 10.0]])
    for _ in range(30):
        cal.update("hevc", units, [[500, 30, 50]])  # 5 bits/unit intra, 4 bits/unit inter
    a_i, a_p = cal.scales("hevc")
    assert a_i == pytest.approx(5.0, rel=1e-6) and a_p == pytest.approx(4.0, rel=1e-6)
    assert float(cal.bits("hevc", units)[0]) == pytest.approx(500 + 80, rel=1e-6)
    state = json.loads(json.dumps(cal.state()))
    other = FrameTypeCalibration({"hevc": {"intra": 1.0, "inter": 1.0}})
    other.load(state)
    assert other.scales("hevc") == pytest.approx((a_i, a_p))


# -- data ---------------------------------------------------------------------------------------


def test_stratified_starts_cover_the_whole_clip_when_clip_is_long():
    starts = stratified_starts(1000, 8, 10, np.random.default_rng(0))
    assert len(starts) == 10 and min(starts) >= 0 and max(starts) <= 992
    bins = np.floor(np.array(starts) / (993 / 10)).astype(int)
    assert sorted(bins) == list(range(10)), f"one start per tenth of the clip, got {starts}"


def test_stratified_starts_stay_valid_when_clip_is_shorter_than_sequence():
    assert stratified_starts(5, 8, 3, np.random.default_rng(0)) == [0, 0, 0]


def test_cap_groups_keeps_no_group_above_fraction():
    groups = ["asl"] * 80 + ["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10
    keep = cap_groups(groups, 0.25, np.random.default_rng(0))
    kept = [groups[i] for i in keep]
    assert kept.count("asl") <= 0.25 * len(kept)
    assert all(kept.count(g) == 10 for g in "abcd"), "small groups are untouched"


def test_source_group_joins_pattern_matches_and_photo_folders(tmp_path):
    pats = ("asl-*", "/usr/share/wallpapers/*")
    assert source_group(tmp_path / "asl-book.mkv", pats) == source_group(tmp_path / "asl-milk.mkv", pats) == "asl-*"
    assert source_group(tmp_path / "flower.mp4", pats) == "flower.mp4"
    assert source_group("/usr/share/wallpapers/Kay/contents/images/5120x2880.png", pats) == "/usr/share/wallpapers/*"


def test_photo_sequence_pans_by_its_velocity_when_zoom_is_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, size=(400, 600)).astype(np.uint8)
    u = rng.integers(0, 256, size=(200, 300)).astype(np.uint8)
    photo = nv12_pack(y, u, u.copy())
    cfg = BankConfig(window=128, seq_len=4, photo_height_range=(128, 128), photo_max_shift=0.0, photo_max_zoom=0.0)
    seq = photo_sequence(photo, cfg, np.random.default_rng(1))
    assert seq.shape == (4, 192, 128)
    assert all(np.array_equal(seq[0], s) for s in seq[1:]), "no motion asked, none made"
    cfg = BankConfig(window=128, seq_len=4, photo_height_range=(128, 128), photo_max_shift=3.0, photo_max_zoom=0.0)
    seq = photo_sequence(photo, cfg, np.random.default_rng(2))
    ys = [nv12_split(s)[0].astype(np.float32) for s in seq]
    assert not np.array_equal(ys[0], ys[1]), "a pan moves the content"


def test_downscale2_halves_every_plane():
    nv12 = nv12_pack(np.full((8, 12), 10, np.uint8), np.full((4, 6), 20, np.uint8), np.full((4, 6), 30, np.uint8))
    y, u, v = nv12_split(downscale2(nv12))
    assert y.shape == (4, 6) and (y == 10).all() and (u == 20).all() and (v == 30).all()


def test_bank_config_rejects_group_fraction_out_of_range():
    with pytest.raises(ValueError, match="max_group_fraction"):
        BankConfig(max_group_fraction=0.0)


# -- network ------------------------------------------------------------------------------------


UNET = NetConfig(arch="unet", channels=16, depth=2, full_channels=4, half_channels=8)


@pytest.mark.parametrize("h,w", [(64, 64), (70, 98), (2, 2)])
def test_unet_is_exact_identity_at_init_when_any_even_size(h, w):
    net = PreEditorNet(UNET).eval()
    assert isinstance(net, PreEditorUNet)
    x = torch.randint(0, 256, (2, h * 3 // 2, w)).float()
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([[22.0], [40.0]])), x)


def test_unet_edit_has_full_resolution_detail_and_depends_on_qp_when_weights_are_nonzero():
    net = PreEditorNet(UNET)
    with torch.no_grad():  # stand-in for trained weights: the zero-initialised layers get values
        gen = torch.Generator().manual_seed(0)
        for layer in (net.out_y, net.out_uv, net.film.out):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.3)
    x = _seq(b=1, t=1, size=64)[:, 0]
    with torch.no_grad():
        d22 = net(x, torch.tensor([[22.0]])) - x
        d45 = net(x, torch.tensor([[45.0]])) - x
    dy = d22[0, :64]
    # the shipped 1/4-resolution net ends in a 4x4 transposed conv of a 1/4 map: within one 4x4 cell
    # its edit is a fixed kernel times one value; here full-resolution layers see every pixel
    cells = dy.reshape(16, 4, 16, 4).permute(0, 2, 1, 3).reshape(256, 16)
    ratio = cells / (cells[:, :1] + 1e-6)
    assert float(ratio.std(dim=0).mean()) > 0.05, "edit is not one pattern per 4x4 cell"
    assert not torch.allclose(d22, d45), "FiLM makes the edit depend on QP"


def test_unet_cost_is_within_the_issue_budget_when_counted_at_1080p():
    macs = macs_per_frame(PreEditorNet(UNET).eval(), 1080, 1920)
    print(f"unet {UNET}: {2 * macs / 1e9:.2f} GFLOP per 1080p frame")
    assert 2 * macs <= 4e9


def test_old_checkpoints_load_as_quarter_arch():
    cfg = NetConfig.from_dict({"channels": 16, "depth": 2, "max_delta": 16.0})
    assert cfg.arch == "quarter" and type(PreEditorNet(cfg)) is PreEditorNet


# -- resume -------------------------------------------------------------------------------------


def _tiny_cfg(tmp_path, steps):
    from preedit.training.config import TrainConfig

    return TrainConfig.from_dict({
        "objective": "bdrate", "kappa_table": "", "net": {"arch": "unet", "channels": 4, "depth": 1, "full_channels": 2, "half_channels": 4},
        "bank": {"window": 256}, "batch_size": 1, "steps": steps, "ckpt_every": 1, "lr": 0.01, "grain_prob": 0.5,
        "out_dir": str(tmp_path), "device": "cpu", "codecs": ["hevc"], "proxy": {"block_sizes": [8]},
    })


def test_resume_continues_exactly_when_restarted_from_a_checkpoint(tmp_path):
    from preedit.training.trainer import Trainer

    rng = np.random.default_rng(0)
    y = rng.integers(20, 230, size=(2, 2, 32, 32)).repeat(8, 2).repeat(8, 3).astype(np.uint8)
    bank = np.concatenate([y, np.full((2, 2, 128, 256), 128, np.uint8)], axis=2)
    straight = Trainer(_tiny_cfg(tmp_path / "a", 3), bank=bank)
    for _ in range(3):
        straight.train_step()
    first = Trainer(_tiny_cfg(tmp_path / "b", 3), bank=bank)
    for _ in range(2):
        first.train_step()
    first.save(tmp_path / "b" / "last.pt")
    again = Trainer(_tiny_cfg(tmp_path / "c", 3), bank=bank)
    again.resume(tmp_path / "b" / "last.pt")
    assert again.step == 2
    again.train_step()
    for (k, a), b in zip(straight.net.state_dict().items(), again.net.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"


# -- alpha(QP) ----------------------------------------------------------------------------------


def test_edit_strength_scales_the_edit_per_qp_when_table_is_set():
    from dataclasses import replace

    net = PreEditorNet(UNET)
    with torch.no_grad():
        net.out_y.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    scaled = PreEditorNet(replace(UNET, alpha_qps=(22.0, 42.0), alpha_values=(0.0, 2.0)))
    scaled.load_state_dict(net.state_dict())
    x = _seq(b=1, t=1, size=64)[:, 0]
    with torch.no_grad():
        for qp, a in ((10.0, 0.0), (22.0, 0.0), (32.0, 1.0), (42.0, 2.0), (50.0, 2.0)):
            q = torch.tensor([[qp]])
            torch.testing.assert_close(scaled(x, q) - x, a * (net(x, q) - x), atol=1e-4, rtol=1e-5)


def test_netconfig_rejects_alpha_on_the_int8_exportable_arch():
    with pytest.raises(ValueError, match="alpha"):
        NetConfig(alpha_qps=(22.0,), alpha_values=(1.0,))


def test_alpha_checkpoint_round_trips_its_table(tmp_path):
    from preedit.network import load_checkpoint, save_checkpoint
    from preedit.training.alpha import with_alpha

    save_checkpoint(PreEditorNet(UNET), tmp_path / "m.pt", step=1)
    with_alpha(tmp_path / "m.pt", {"qp": [22.0, 42.0], "alpha": [1.25, 0.75], "clips": ["a"], "frames": 8, "height": 360}, tmp_path / "a.pt")
    net, extra = load_checkpoint(tmp_path / "a.pt")
    assert net.config.alpha_values == (1.25, 0.75) and extra["alpha_calibration"]["qp"] == [22.0, 42.0]


def test_resume_cli_rejects_a_deploy_checkpoint_with_one_line(tmp_path):
    from preedit.errors import UsageError
    from preedit.network import save_checkpoint
    from preedit.training.cli import _checkpoint_config

    save_checkpoint(PreEditorNet(UNET), tmp_path / "model.pt", step=1)
    with pytest.raises(UsageError, match="not a trainer checkpoint"):
        _checkpoint_config(tmp_path / "model.pt")
    with pytest.raises(UsageError, match="not found"):
        _checkpoint_config(tmp_path / "missing.pt")


def test_directional_log_rate_has_the_real_value_and_pushes_the_edit_by_the_real_slope():
    from preedit.training.objective import directional_log_rate

    torch.manual_seed(0)
    src = torch.rand(2, 3, 24, 16) * 255
    delta = torch.randn(2, 3, 24, 16)
    real_lr, real_lr0 = torch.tensor([10.05, 9.90]), torch.tensor([10.0, 10.0])  # seq 0 costs bits, seq 1 saves
    for b in range(2):
        d = delta.clone().requires_grad_(True)
        lr = directional_log_rate(src + d, src, real_lr, real_lr0)
        assert torch.allclose(lr.detach(), real_lr)
        lr[b].backward()
        g = d.grad[b]
        slope = float(real_lr[b] - real_lr0[b])
        # the gradient is along the edit itself, slope / |δ|² per unit of δ: descending it scales the
        # edit down where the real encoder charged for it (slope > 0) and up where it saved bits
        assert torch.allclose(g, slope * delta[b] / (delta[b] ** 2).sum(), rtol=1e-4, atol=1e-9)
        assert float((g * delta[b]).sum()) == pytest.approx(slope, rel=1e-4)
        assert d.grad[1 - b].abs().max() == 0  # one sequence's rate moves only its own edit


def test_config_rejects_an_unknown_rate_gradient(tmp_path):
    from preedit.training.config import TrainConfig

    with pytest.raises(ValueError, match="rate_gradient"):
        TrainConfig.from_dict({"rate_gradient": "guess", "out_dir": str(tmp_path)})


def test_rate_growth_guard_charges_only_a_stream_that_grows_beyond_its_margin():
    src = _seq(b=2)
    lr0 = torch.log(torch.tensor([1e5, 1e5]))
    lr = lr0 + torch.tensor([0.05, -0.05])  # sequence 0 grows 5 %, sequence 1 shrinks
    g = GuardConfig(psnr_weight=0.0, gap_weight=0.0, uv_weight=0.0, rate_growth_weight=2.0, rate_growth_margin=0.01)
    terms = BDRateObjective(KappaTable.default(), g)(src, src, src, lr, lr0, torch.tensor([32.0, 32.0]), "hevc")
    assert terms.logs["guard"] == pytest.approx(2.0 * (0.05 - 0.01) / 2, rel=1e-4)  # mean over the 2 sequences
    off = BDRateObjective(KappaTable.default(), GuardConfig(psnr_weight=0.0, gap_weight=0.0, uv_weight=0.0))(
        src, src, src, lr, lr0, torch.tensor([32.0, 32.0]), "hevc")
    assert off.logs["guard"] == 0.0
