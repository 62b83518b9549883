"""GPU export on CPU: the onnx-trt repository entry, its config, and the dynamic torch.export graph."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from preedit.export.gpu_config import GpuProfile, onnx_trt_config, ort_trt_shapes, tensorrt_plan_config, torchscript_config
from preedit.export.model_config import parse_pbtxt, read_model_config, to_pbtxt
from preedit.network import NV12PreEditor, NetConfig, PreEditorNet, identity_model


def _random_net(seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = PreEditorNet(NetConfig())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def onnx_trt_dir(tmp_path_factory):
    from preedit.export.tensorrt import export_gpu

    repo = tmp_path_factory.mktemp("repo")
    return export_gpu("onnx-trt", identity_model(), repo, model_name="preedit_onnx_trt")


def test_onnx_trt_export_writes_gpu_config_that_parses_back(onnx_trt_dir):
    cfg = read_model_config(onnx_trt_dir / "config.pbtxt")
    assert cfg["backend"] == "onnxruntime" and cfg["name"] == "preedit_onnx_trt"
    assert cfg["instance_group"][0]["kind"] == "KIND_GPU"
    assert "dynamic_batching" in cfg and int(cfg["max_batch_size"]) == 4
    acc = cfg["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]
    assert acc["name"] == "tensorrt"
    params = acc["parameters"]
    assert params["precision_mode"] == "FP16" and params["trt_engine_cache_enable"] == "1"
    assert params["trt_engine_cache_path"] == "/models/preedit_onnx_trt/trt_cache"
    assert params["trt_profile_opt_shapes"] == "NV12_IN:1x1620x1920,QP:1x1"
    assert params["trt_profile_max_shapes"] == "NV12_IN:4x3240x3840,QP:4x1"
    names = [(t["name"], t["data_type"]) for t in cfg["input"]]
    assert names == [("NV12_IN", "TYPE_UINT8"), ("QP", "TYPE_FP32")]
    assert not cfg["input"][1].get("optional", False)  # ORT/TRT have no default for QP


def test_onnx_trt_export_warms_up_with_a_real_sized_frame(onnx_trt_dir):
    warm = read_model_config(onnx_trt_dir / "config.pbtxt")["model_warmup"][0]
    frame = warm["inputs"]["NV12_IN"]
    assert [int(d) for d in frame["dims"]] == [1620, 1920] and frame["random_data"]
    qp_file = onnx_trt_dir / "warmup" / warm["inputs"]["QP"]["input_data_file"]
    assert struct.unpack("<f", qp_file.read_bytes()) == (32.0,)


def test_onnx_trt_export_records_contract_and_check(onnx_trt_dir):
    contract = json.loads((onnx_trt_dir / "contract.json").read_text())
    assert contract["target"] == "onnx-trt" and contract["qp_required"] is True
    assert contract["export_check"]["max_abs_diff"] <= 1
    assert (onnx_trt_dir / "1" / "model.onnx").stat().st_size > 1000
    assert len(contract["model_sha256"]) == 64


def test_export_cli_target_onnx_trt_writes_gpu_model(tmp_path):
    from preedit.export.cli import main

    assert main(["--identity", "--target", "onnx-trt", "--repository", str(tmp_path)]) == 0
    cfg = read_model_config(tmp_path / "preedit_onnx_trt" / "config.pbtxt")
    assert cfg["instance_group"][0]["kind"] == "KIND_GPU"


def test_export_gpu_target_tensorrt_raises_usage_error_when_no_cuda(tmp_path):
    from preedit.errors import UsageError
    from preedit.export.tensorrt import export_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the GPU path is covered by test_gpu_cuda.py")
    with pytest.raises(UsageError, match="onnx-trt"):
        export_gpu("tensorrt", identity_model(), tmp_path)


def test_export_gpu_rejects_unknown_target(tmp_path):
    from preedit.errors import UsageError
    from preedit.export.tensorrt import export_gpu

    with pytest.raises(UsageError, match="tensorrt, onnx-trt"):
        export_gpu("openvino", identity_model(), tmp_path)


@pytest.mark.parametrize("builder", [tensorrt_plan_config, torchscript_config, onnx_trt_config])
def test_gpu_configs_round_trip_through_triton_proto(builder):
    cfg = builder("m", profile=GpuProfile(max_batch=8))
    assert parse_pbtxt(to_pbtxt(cfg))["instance_group"][0]["kind"] == "KIND_GPU"


def test_ort_trt_shapes_follow_profile():
    shapes = ort_trt_shapes(GpuProfile(min_hw=(360, 640), opt_hw=(720, 1280), max_hw=(1080, 1920), max_batch=2))
    assert shapes == {"min": "NV12_IN:1x540x640,QP:1x1", "opt": "NV12_IN:1x1080x1280,QP:1x1",
                      "max": "NV12_IN:2x1620x1920,QP:2x1"}


@pytest.mark.parametrize("kwargs", [{"min_hw": (143, 256)}, {"opt_hw": (4000, 1920)}, {"opt_batch": 5}])
def test_gpu_profile_rejects_inconsistent_ranges(kwargs):
    with pytest.raises(ValueError):
        GpuProfile(**kwargs)


def test_gpu_module_exports_with_dynamic_shapes_and_matches_pytorch():
    from preedit.export.gpu_module import GpuPreEditor, export_dynamic

    net = _random_net()
    profile = GpuProfile(min_hw=(64, 64), opt_hw=(96, 128), max_hw=(1080, 1920), max_batch=4)
    ep = export_dynamic(GpuPreEditor(net), profile)
    reference = NV12PreEditor(net)
    gen = torch.Generator().manual_seed(1)
    for b, h, w in ((1, 64, 64), (3, 100, 132), (1, 360, 640)):
        x = torch.randint(0, 256, (b, h * 3 // 2, w), dtype=torch.uint8, generator=gen)
        q = torch.full((b, 1), 30.0)
        with torch.no_grad():
            got, want = ep.module()(x, q), reference(x, q)
        assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_gpu_module_export_refuses_profile_not_multiple_of_4():
    from preedit.export.gpu_module import GpuPreEditor, export_dynamic

    with pytest.raises(ValueError, match="multiples of 4"):
        export_dynamic(GpuPreEditor(identity_model()), GpuProfile(min_hw=(270, 480), opt_hw=(270, 480)))
