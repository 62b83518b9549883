"""The one source of truth for the model's tensors and preprocessing contract.

It drives the ONNX input/output names and dynamic axes (`preedit.export`), the generated
`config.pbtxt`, the Triton python-backend model, and the client's request builder.

```
 NV12_IN  uint8 [N, H*3/2, W]   limited-range NV12 frames (H, W even)
 QP       fp32  [N, 1]          optional encoder operating point (HEVC-style QP), default 32
 NV12_OUT uint8 [N, H*3/2, W]   pre-edited frames, same layout
```
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Tuple

TRITON_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
CLIENT_DTYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16"}


@dataclass(frozen=True)
class TensorSpec:
    """One model tensor; `dims` exclude the batch dimension, -1 marks a dynamic size."""

    name: str
    dtype: str
    dims: Tuple[int, ...]
    optional: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in TRITON_DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; valid: {sorted(TRITON_DTYPES)}")

    @property
    def triton_dtype(self) -> str:
        return TRITON_DTYPES[self.dtype]

    @property
    def client_dtype(self) -> str:
        return CLIENT_DTYPES[self.dtype]


FRAMES_IN = TensorSpec("NV12_IN", "uint8", (-1, -1))
QP_IN = TensorSpec("QP", "float32", (1,), optional=True)
FRAMES_OUT = TensorSpec("NV12_OUT", "uint8", (-1, -1))
INPUTS = (FRAMES_IN, QP_IN)
OUTPUTS = (FRAMES_OUT,)

DEFAULT_QP = 32.0
QP_RANGE = (10.0, 51.0)
PAD_MULTIPLE = 4


@dataclass(frozen=True)
class Contract:
    """Preprocessing contract written next to every exported model and read by clients."""

    layout: str = "NV12"
    bit_depth: int = 8
    color_range: str = "limited"
    color_matrix: str = "as-stream"
    pad_multiple: int = PAD_MULTIPLE
    default_qp: float = DEFAULT_QP
    qp_range: Tuple[float, float] = QP_RANGE
    inputs: Tuple[TensorSpec, ...] = INPUTS
    outputs: Tuple[TensorSpec, ...] = OUTPUTS
    notes: str = field(
        default="Full-range input is converted to limited range by the client before the model "
        "and back after it. 10-bit input (yuv420p10/P010, limited range): the model receives the "
        "8-bit view (v + 2) >> 2 as NV12 and returns an 8-bit edit; the client applies it at 10 bits, "
        "out10 = clamp(in10 + 4*(edit8 - in8), 0, 1023), so unedited pixels keep their 10-bit values "
        "(preedit.client.bitdepth). The model itself is 8-bit only."
    )

    def to_dict(self) -> dict:
        return asdict(self)


CONTRACT = Contract()
