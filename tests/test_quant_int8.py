"""Static int8 quantization: integer maths, scheme checks, serialisation, quality vs float."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preedit.errors import UsageError
from preedit.export.int8.frames import load_frames
from preedit.export.int8.reference import IntModel, reference_forward, round_shift
from preedit.export.int8.quantize import (QuantScheme, activation_qparams, all_schemes, float_trace, perturbed_net,
                                     quantize)
from preedit.network import NV12PreEditor


@pytest.fixture(scope="module")
def net():
    return perturbed_net(seed=3)


@pytest.fixture(scope="module")
def calib(request):
    from preedit.paths import clips_dir

    path = clips_dir() / "CiscoVT2people_320x192_12fps.yuv"
    if not path.is_file():
        pytest.skip(f"shared clip {path.name} not found")
    return load_frames(path, 2, start=5)


def test_round_shift_matches_float_round_half_even_when_exponent_varies():
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << 23), 1 << 23, size=20000)
    x[:8] = [5, -5, 6, -6, 7, -7, 12, -12]  # exact ties at exp=-1 and -2
    for exp in (-12, -7, -2, -1, 0, 3):
        want = np.round(x.astype(np.float64) * 2.0 ** exp)  # NumPy rounds half to even
        np.testing.assert_array_equal(round_shift(x, exp), want.astype(np.int64))


def test_quant_scheme_lists_valid_choices_when_observer_unknown():
    with pytest.raises(UsageError, match="minmax, moving_average, histogram, percentile"):
        QuantScheme(observer="kl")


def test_all_schemes_cover_grid_when_two_calib_sizes():
    schemes = all_schemes((2, 8))
    assert len(schemes) == 4 * 2 * 3 * 2
    assert len({s.name for s in schemes}) == len(schemes)


def test_activation_qparams_gives_even_zero_point_when_affine_even():
    for zp in range(0, 256, 7):
        s, z, e = activation_qparams(0.013, zp, "affine_even")
        assert z % 2 == 0 and s == 2.0 ** e and s >= 0.013
    assert activation_qparams(0.013, 3, "symmetric")[1] == 128


def test_float_trace_equals_network_when_perturbed(net):
    x = torch.from_numpy(np.random.default_rng(1).integers(16, 236, size=(1, 54, 40)).astype(np.float32))
    qp = torch.full((1, 1), 27.0)
    with torch.no_grad():
        torch.testing.assert_close(float_trace(net, x, qp)["out"], net(x, qp), rtol=0, atol=0)


def test_int_model_check_raises_when_accumulator_exceeds_fp32_exact_range(net, calib):
    model = quantize(net, calib, QuantScheme(calib_frames=2))
    model.check()
    model.up.bias = model.up.bias.astype(np.int64) + (1 << 24)
    with pytest.raises(ValueError, match="2\\^24"):
        model.check()


def test_int_model_roundtrips_when_serialised(net, calib):
    model = quantize(net, calib, QuantScheme(calib_frames=2, observer="percentile"))
    again = IntModel.from_npz_bytes(model.to_npz_bytes())
    assert again.content_hash() == model.content_hash()
    assert again.scheme == model.scheme
    np.testing.assert_array_equal(reference_forward(again, calib[0][None]), reference_forward(model, calib[0][None]))


def test_int8_output_tracks_float_when_quantized_per_channel(net, calib):
    model = quantize(net, calib, QuantScheme(calib_frames=2))
    frame = calib[1][None]
    qp = np.array([[37.0]], dtype=np.float32)
    with torch.no_grad():
        want = NV12PreEditor(net)(torch.from_numpy(frame), torch.from_numpy(qp)).numpy().astype(np.int16)
    got = reference_forward(model, frame, qp).astype(np.int16)
    edit = np.abs(want - frame).mean()
    err = np.abs(got - want)
    assert edit > 1.0, "the test network should edit the frame"
    assert err.max() <= 2 and err.mean() < 0.1 * edit


def test_quant_scheme_parses_name_when_round_tripped():
    s = QuantScheme(observer="histogram", weight_granularity="per_tensor", activation_symmetry="symmetric",
                    calib_frames=5)
    assert QuantScheme.parse(s.name) == s
    with pytest.raises(UsageError, match="minmax/per_channel/affine_even/n16"):
        QuantScheme.parse("minmax/per_channel")


def test_int_model_zero_points_even_when_affine_even(net, calib):
    assert quantize(net, calib, QuantScheme(calib_frames=2, activation_symmetry="affine_even")).zero_points_even()
    assert quantize(net, calib, QuantScheme(calib_frames=2, activation_symmetry="symmetric")).zero_points_even()
