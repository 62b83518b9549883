"""The model's QP scale across codecs (`preedit.qp`) and its calibration tool (`preedit qp-calibrate`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preedit import qp as qpmap


def test_packaged_av1_map_rises_and_names_its_training_clips():
    data = json.loads(qpmap.AV1_QUALITY_MAP_PATH.read_text())
    import yaml

    from preedit.training.cli import DEFAULT_CONFIG

    heldout = set(yaml.safe_load(DEFAULT_CONFIG.read_text())["heldout"])
    assert data["clips"] and not heldout & set(data["clips"]), "fitted on training clips only"
    for mode in ("crf", "qp"):
        q, model = np.array(data["table"][mode]).T
        assert np.all(np.diff(q) > 0) and np.all(np.diff(model) > 0)


@pytest.mark.parametrize("mode", ["crf", "qp"])
def test_av1_is_finer_than_x265_at_equal_step_in_the_useful_range(mode):
    for q in (28, 36, 44, 51, 57):
        assert qpmap.av1_model_qp(q, mode) < qpmap.av1_q_to_hevc_qp(q) - 2.0, q


def test_inverse_map_round_trips_and_clamps():
    for q in (5, 20, 33.5, 51, 62):
        assert qpmap.av1_quantizer_for_model_qp(qpmap.av1_model_qp(q, "qp"), "qp") == pytest.approx(q, abs=1e-6)
    assert qpmap.av1_quantizer_for_model_qp(200.0) == 63.0 and qpmap.av1_quantizer_for_model_qp(-50.0) == 0.0
    assert qpmap.model_qp("hevc", 30) == 30.0 and qpmap.model_qp("h264", 25.5) == 25.5


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="0..63"):
        qpmap.av1_model_qp(64)
    with pytest.raises(ValueError, match="rate-control mode"):
        qpmap.av1_model_qp(30, "vbr")


def test_av1_proxy_codes_at_the_step_of_the_equal_quality_quantizer():
    import torch

    from preedit.training.proxy import CodecProxy, ProxyConfig

    proxy = CodecProxy(ProxyConfig(codec="av1"))
    step_qp = proxy.step_qp(torch.tensor([qpmap.av1_model_qp(36, "qp"), 30.0]))
    assert float(step_qp[0]) == pytest.approx(qpmap.av1_q_to_hevc_qp(36), abs=1e-4)
    assert float(step_qp[1]) > 30.0 + 2.0, "AV1 codes a coarser step than x265 for the same quality"
    assert float(CodecProxy(ProxyConfig(codec="hevc")).step_qp(torch.tensor([30.0]))[0]) == 30.0
    # and the proxy's output depends on it: AV1 at model QP 30 codes fewer bits than at model QP 20
    frames = torch.rand(1, 1, 96, 64) * 255
    bits = [float(proxy(frames, torch.tensor([q]), block_size=8).bits.sum()) for q in (20.0, 30.0)]
    assert bits[1] < bits[0]


def test_equal_quality_qp_interpolates_and_extends_the_x265_curve():
    from preedit.training.qp_calibration import equal_quality_qp

    qps, psnr = [20, 30, 40], [44.0, 38.0, 32.0]
    assert equal_quality_qp(qps, psnr, 41.0) == pytest.approx(25.0)
    assert equal_quality_qp(qps, psnr, 29.0) == pytest.approx(45.0), "extended past the coarse end"
    assert equal_quality_qp(qps, psnr, 47.0) == pytest.approx(15.0), "extended past the fine end"


def test_qp_calibrate_refuses_held_out_clips(tmp_path):
    from preedit.cli import main

    assert main(["qp-calibrate", "--clips", "flower.mp4", "--out", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()
