"""Issue 18 row 8: the TorchScript that Triton's pytorch backend loads is reloaded and run at a
second shape, and its forward's argument names must be the config's input names.

CPU stand-ins for the Torch-TensorRT output: a module traced at one shape with an op that freezes
that shape (what a PyTorch-fallback op does in the TorchScript save), and one with other names.
"""

import pytest
import torch

from preedit.errors import ModelError
from preedit.export.gpu_config import GPU_INPUTS
from preedit.export.tensorrt import check_torchscript_reload

NAMES = [t.name for t in GPU_INPUTS]
SHAPES = [(1, 24, 16), (2, 36, 32)]


class Ref(torch.nn.Module):
    def forward(self, NV12_IN: torch.Tensor, QP: torch.Tensor) -> torch.Tensor:  # noqa: N803 - config names
        return (NV12_IN.float() * 0.5 + QP.view(-1, 1, 1) * 0).round().to(torch.uint8)


class Frozen(Ref):
    def forward(self, NV12_IN: torch.Tensor, QP: torch.Tensor) -> torch.Tensor:  # noqa: N803
        rows, cols = int(NV12_IN.shape[1]), int(NV12_IN.shape[2])  # python ints: constants in a trace
        return super().forward(NV12_IN, QP)[:, :rows, :cols].reshape(NV12_IN.shape[0], rows, cols)


class OtherNames(torch.nn.Module):
    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        return x


def _save(module, path, trace_shape=None):
    if trace_shape is None:
        torch.jit.script(module).save(str(path))
    else:
        frames = torch.zeros(trace_shape, dtype=torch.uint8)
        torch.jit.trace(module, (frames, torch.full((trace_shape[0], 1), 32.0))).save(str(path))
    return path


def test_row8_reload_check_passes_a_model_that_runs_at_every_shape(tmp_path):
    got = check_torchscript_reload(_save(Ref(), tmp_path / "m.pt"), Ref(), SHAPES, NAMES, device="cpu")
    assert got["input_names"] == NAMES and got["max_abs_diff"] == 0


def test_row8_reload_check_catches_a_model_frozen_at_the_trace_shape(tmp_path):
    path = _save(Frozen(), tmp_path / "m.pt", trace_shape=(1, 24, 16))
    with pytest.raises(ModelError, match="frozen|fails at shape"):
        check_torchscript_reload(path, Ref(), SHAPES, NAMES, device="cpu")


def test_row8_reload_check_catches_input_names_triton_cannot_bind(tmp_path):
    with pytest.raises(ModelError, match="would not bind"):
        check_torchscript_reload(_save(OtherNames(), tmp_path / "m.pt"), Ref(), SHAPES, NAMES, device="cpu")
