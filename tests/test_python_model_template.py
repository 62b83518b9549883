"""The served CPU model (export/templates/python_onnx_model.py) outside Triton: `execute` on several
requests at once, with a stand-in for `triton_python_backend_utils` that keeps what it is handed."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "export" / "templates" / "python_onnx_model.py"
MODEL_DIR = REPO_ROOT / "model_repository" / "preedit"


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


class _Request:
    def __init__(self, **tensors):
        self.tensors = tensors


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = _Tensor
    mod.InferenceResponse = _Response
    mod.TritonError = str
    mod.get_input_tensor_by_name = lambda request, name: (
        _Tensor(name, request.tensors[name]) if name in request.tensors else None)
    return mod


def _model(monkeypatch, merge: str):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location(f"served_model_{merge}", TEMPLATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = {"parameters": {"onnx_file": {"string_value": "model.onnx"}, "intra_op_threads": {"string_value": "1"},
                             "merge_requests": {"string_value": merge}},
              "instance_group": [{"count": 1}]}
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(MODEL_DIR), "model_version": "1"})
    return model


def _frames(n, h=32, w=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(16, 236, size=(n, h * 3 // 2, w), dtype=np.uint8)


@pytest.mark.skipif(not (MODEL_DIR / "1" / "model.onnx").is_file(), reason="no committed model.onnx")
def test_requests_handed_over_together_get_their_own_edit_whether_merged_or_run_one_by_one(monkeypatch):
    a, b, c, d = _frames(1, seed=1), _frames(2, seed=2), _frames(1, h=16, w=32, seed=3), _frames(1, seed=4)
    requests = [_Request(NV12_IN=a, QP=np.array([[22.0]], np.float32)),
                _Request(NV12_IN=b, QP=np.array([[42.0], [30.0]], np.float32)),
                _Request(NV12_IN=c),
                _Request(NV12_IN=d, QP=np.array([[37.0]], np.float32)),  # a's shape: must not share a's buffer
                _Request(NV12_IN=np.zeros((1, 5, 4), np.uint8))]
    alone = _model(monkeypatch, "0")
    expected = [alone.execute([r])[0].output_tensors[0].as_numpy().copy() for r in requests[:4]]
    assert not np.array_equal(expected[0], expected[3])
    for merge in ("0", "1"):
        model = _model(monkeypatch, merge)
        responses = model.execute(requests)
        outs = [r.output_tensors[0].as_numpy() for r in responses[:4]]
        for got, want in zip(outs, expected):
            np.testing.assert_array_equal(got, want)
        assert responses[4].error and "even H and W" in responses[4].error
