"""The int8 model is bit-exact across backends on real clips; `preedit verify` catches mismatches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preedit.export.int8.backends import int8_backends
from preedit.export.int8.compare import frame_digest, frame_qps, pairwise, run_frames
from preedit.export.int8.write import export_deterministic
from preedit.export.int8.frames import load_frames
from preedit.export.int8.quantize import QuantScheme, perturbed_net, quantize
from preedit.paths import clips_dir

SCHEME = QuantScheme(observer="minmax", weight_granularity="per_channel", activation_symmetry="affine_even",
                     calib_frames=2)


def _frames(name: str, count: int, start: int = 0):
    path = clips_dir() / name
    if not path.is_file():
        pytest.skip(f"shared clip {name} not found under {clips_dir()}")
    return load_frames(path, count, start=start)


@pytest.fixture(scope="module")
def net():
    return perturbed_net(seed=1)


@pytest.fixture(scope="module")
def model(net):
    return quantize(net, _frames("CiscoVT2people_320x192_12fps.yuv", 2, start=6), SCHEME)


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    calib = _frames("CiscoVT2people_320x192_12fps.yuv", 2, start=6)
    export_deterministic(net, repo, calib, SCHEME, verify_frames=4)
    return repo


def test_pairwise_reports_share_and_max_when_outputs_differ():
    a = [np.zeros((6, 4), np.uint8), np.zeros((6, 4), np.uint8)]
    b = [a[0].copy(), a[1].copy()]
    b[1][2, 3] = 3
    (row,) = pairwise({"x": a, "y": b})
    assert row["max_abs_diff"] == 3 and row["frames_differing"] == 1
    assert row["differing_share"] == pytest.approx(1 / 48)


def test_int8_backends_bit_exact_when_run_on_real_clips_at_two_resolutions(model):
    frames = _frames("CiscoVT2people_160x96_6fps.yuv", 3) + _frames("park_joy_480x270_50fps.y4m", 2)
    assert {f.shape for f in frames} == {(144, 160), (405, 480)}
    backends = int8_backends(model)
    assert "numpy-ref" in backends and "torch-fbgemm" in backends and "torch-qnnpack" in backends
    qps = frame_qps(len(frames), (22.0, 32.0, 42.0, 30.6))
    outputs = {name: run_frames(run, frames, qps) for name, run in backends.items()}
    edited = np.mean([np.mean(o != f) for o, f in zip(outputs["numpy-ref"], frames)])
    assert edited > 0.1, "the test network should change pixels, or bit-exactness is trivial"
    for row in pairwise(outputs):
        assert row["differing_share"] == 0.0, row


@pytest.mark.parametrize("form", ["qlinear", "integer"])
def test_int8_onnx_bit_exact_when_frames_batched(model, form):
    from preedit.export.int8.onnx import build_onnx
    from preedit.engines import OrtEngine
    from preedit.export.int8.reference import reference_forward

    frames = np.stack(_frames("CiscoVT2people_160x96_6fps.yuv", 3))
    qp = np.array([[18.0], [32.0], [47.5]], dtype=np.float32)
    got = OrtEngine(build_onnx(model, form), threads=0)(frames, qp)
    np.testing.assert_array_equal(got, reference_forward(model, frames, qp))


def test_verify_exits_zero_when_backends_match(exported, capsys):
    from preedit.cli import main

    rc = main(["verify", "--model-repository", str(exported), "--backend", "ort", "--backend", "numpy",
               "--backend", "torch-fbgemm"])
    assert rc == 0
    assert capsys.readouterr().out.count("4/4 frames match") == 3


def test_verify_exits_8_with_first_mismatch_when_digest_differs(exported, tmp_path, capsys):
    import shutil

    from preedit.cli import main

    repo = tmp_path / "repo"
    shutil.copytree(exported, repo)
    contract = repo / "preedit_int8" / "contract.json"
    meta = json.loads(contract.read_text())
    meta["verification"]["output_sha256"][2] = frame_digest(np.zeros((1, 1), np.uint8))
    contract.write_text(json.dumps(meta))
    rc = main(["verify", "--model-repository", str(repo), "--backend", "ort"])
    err = capsys.readouterr().err
    assert rc == 8
    assert "frame 2" in err and err.count("\n") == 1


@pytest.mark.needs_triton
def test_triton_output_bit_exact_when_serving_int8_model(exported):
    from preedit.export.int8.verify import verify

    results = verify(exported / "preedit_int8", ["triton"])
    assert results[0]["ok"] and results[0]["frames"] == 4


def test_net_from_model_dir_recovers_weights_when_only_onnx_exported(tmp_path):
    import torch

    from preedit.export.int8.check import net_from_model_dir
    from preedit.export.repository import export_model_repository

    net = perturbed_net(seed=7)
    model_dir = export_model_repository(net, tmp_path, "float")
    again = net_from_model_dir(model_dir)
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.needs_cuda
def test_int8_on_cuda_bit_exact_when_run_as_fp32_on_integers(model):
    import torch

    from preedit.export.int8.reference import reference_forward
    from preedit.export.int8.torch import TorchFloatIntPreEditor

    frames = np.stack(_frames("CiscoVT2people_160x96_6fps.yuv", 3))
    qp = np.array([[22.0], [32.0], [42.0]], dtype=np.float32)
    want = reference_forward(model, frames, qp)
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            np.testing.assert_array_equal(TorchFloatIntPreEditor(model, "cuda")(frames, qp), want)
        finally:
            torch.backends.cudnn.allow_tf32 = False


def test_verify_exits_3_when_clip_differs_from_recorded_one(exported, tmp_path, capsys):
    from preedit.cli import main
    from preedit.export.int8.compare import VERIFY_CLIP

    src = clips_dir() / VERIFY_CLIP
    data = bytearray(src.read_bytes())
    frame_bytes = 320 * 192 * 3 // 2
    data[frame_bytes + 100] ^= 0xFF  # one luma byte of frame 1
    (tmp_path / VERIFY_CLIP).write_bytes(bytes(data))
    rc = main(["verify", "--model-repository", str(exported), "--clips-dir", str(tmp_path), "--backend", "numpy"])
    assert rc == 3
    assert "input frame 1" in capsys.readouterr().err
