"""The GPU deploy module and its torch.export graph with dynamic batch/height/width.

```
 GpuPreEditor.forward(NV12_IN uint8 [N, H*3/2, W], QP fp32 [N, 1]) -> NV12_OUT uint8 [N, H*3/2, W]
 export_dynamic(): torch.export with N in [1, max_batch], H = 4·k, W = 4·m inside the profile
```
Forward-argument names are the spec's tensor names, so Torch-TensorRT's input bindings and the
pytorch backend's name matching agree with `config.pbtxt`. H and W are multiples of 4 in the
exported graph: tracing `PreEditorNet`'s pad/crop arithmetic through torch.export guards on
`W % 4` (seen with torch 2.13), so the dynamic dims are declared as 4·k (1080p, 720p, 2160p,
540p, 360p all qualify; odd multiples of 2 go to the ONNX variants, which take any even size).
Runs on CPU (a unit test exports it); Torch-TensorRT compiles the result on the GPU host.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.export import Dim, export

from preedit.export.gpu_config import GpuProfile
from preedit.network import PreEditorNet, to_uint8


class GpuPreEditor(nn.Module):
    """Deploy form for the GPU back ends: uint8 NV12 + fp32 QP in, uint8 NV12 out."""

    def __init__(self, net: PreEditorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, NV12_IN: torch.Tensor, QP: torch.Tensor) -> torch.Tensor:  # noqa: N803 - binding names
        return to_uint8(self.net(NV12_IN.float(), QP))


def check_profile_multiple_of_4(profile: GpuProfile) -> None:
    for name in ("min_hw", "opt_hw", "max_hw"):
        h, w = getattr(profile, name)
        if h % 4 or w % 4:
            raise ValueError(f"TensorRT profile {name}={h}x{w}: height and width must be multiples of 4")


def example_inputs(profile: GpuProfile, device: str = "cpu", which: str = "opt",
                   batch: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 NV12 + QP 32 at a profile point (batch 2 so the batch dim stays symbolic)."""
    _, rows, w = profile.nv12_shape(which, batch)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, rows, w), dtype=torch.uint8, generator=gen)
    return frames.to(device), torch.full((batch, 1), 32.0, device=device)


def export_dynamic(module: nn.Module, profile: GpuProfile, device: str = "cpu"):
    """`torch.export.export` with dynamic batch, rows (= 6·k) and width (= 4·m) over the profile."""
    check_profile_multiple_of_4(profile)
    batch = Dim("batch", min=1, max=profile.max_batch)
    k = Dim("h4", min=profile.min_hw[0] // 4, max=profile.max_hw[0] // 4)
    m = Dim("w4", min=profile.min_hw[1] // 4, max=profile.max_hw[1] // 4)
    # A small example keeps export cheap; its size only has to be inside the profile.
    small = GpuProfile(min_hw=profile.min_hw, opt_hw=profile.min_hw, max_hw=profile.max_hw,
                       opt_batch=1, max_batch=profile.max_batch)
    example = example_inputs(small, device, "opt", batch=min(2, profile.max_batch))
    shapes = {"NV12_IN": {0: batch, 1: 6 * k, 2: 4 * m}, "QP": {0: batch}}
    if profile.max_batch == 1:
        shapes = {"NV12_IN": {1: 6 * k, 2: 4 * m}, "QP": {}}
    with torch.no_grad():
        return export(module.eval(), example, dynamic_shapes=shapes)
