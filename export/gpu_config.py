"""`config.pbtxt` dicts of the GPU variants, built on `build_model_config` (pure).

```
 onnx-trt     backend onnxruntime, KIND_GPU, TensorRT accelerator (FP16, engine + timing cache,
              explicit min/opt/max profile)                               1/model.onnx
 tensorrt     platform tensorrt_plan, KIND_GPU (engine built on the host)  1/model.plan
 torchscript  backend pytorch, KIND_GPU (Torch-TensorRT engines inside)    1/model.pt
```
All three: dynamic batching, `QP` required (ONNX Runtime / TensorRT have no default for a
missing input; the CUDA-shm transport always sends it), and a warmup request with a real-sized
frame so the first client request does not pay for engine building or profile selection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

from preedit.export.model_config import build_model_config

GPU_INPUTS = (FRAMES_IN, replace(QP_IN, optional=False))
WARMUP_QP_FILE = "qp_32.f32"  # written next to the model: <model>/warmup/qp_32.f32 (fp32 LE, 32.0)


@dataclass(frozen=True)
class GpuProfile:
    """Shape range one engine serves: (height, width) of frames, batch up to `max_batch`.

    Defaults cover 144p..2160p with 1080p as the tuning point. TensorRT engines built through
    torch.export additionally need H and W to be multiples of 4 (checked where that applies).
    """

    min_hw: Tuple[int, int] = (144, 256)
    opt_hw: Tuple[int, int] = (1080, 1920)
    max_hw: Tuple[int, int] = (2160, 3840)
    opt_batch: int = 1
    max_batch: int = 4

    def __post_init__(self) -> None:
        for name in ("min_hw", "opt_hw", "max_hw"):
            h, w = getattr(self, name)
            if h <= 0 or w <= 0 or h % 2 or w % 2:
                raise ValueError(f"{name} must be positive even (height, width), got {(h, w)}")
        if not (self.min_hw[0] <= self.opt_hw[0] <= self.max_hw[0] and self.min_hw[1] <= self.opt_hw[1] <= self.max_hw[1]):
            raise ValueError(f"need min <= opt <= max per dimension, got {self.min_hw}, {self.opt_hw}, {self.max_hw}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {self.opt_batch}, {self.max_batch}")

    def nv12_shape(self, which: str, batch: Optional[int] = None) -> Tuple[int, int, int]:
        """`[N, H*3/2, W]` of the `min`, `opt` or `max` point."""
        h, w = getattr(self, f"{which}_hw")
        n = batch if batch is not None else {"min": 1, "opt": self.opt_batch, "max": self.max_batch}[which]
        return (n, h * 3 // 2, w)


def ort_trt_shapes(profile: GpuProfile) -> Dict[str, str]:
    """ONNX Runtime TensorRT-EP profile strings, e.g. `NV12_IN:1x1620x1920,QP:1x1`."""
    out = {}
    for which in ("min", "opt", "max"):
        n, rows, w = profile.nv12_shape(which)
        out[which] = f"{FRAMES_IN.name}:{n}x{rows}x{w},{QP_IN.name}:{n}x1"
    return out


def warmup_entries(profile: GpuProfile, count: int = 2) -> List[dict]:
    """One warmup request with a frame of the profile's `opt` size (random pixels, QP 32 from a file)."""
    _, rows, w = profile.nv12_shape("opt", 1)
    h = rows * 2 // 3
    return [{
        "name": f"nv12_{h}p",
        "batch_size": 1,
        "count": count,
        "inputs": {
            FRAMES_IN.name: {"data_type": FRAMES_IN.triton_dtype, "dims": [rows, w], "random_data": True},
            QP_IN.name: {"data_type": QP_IN.triton_dtype, "dims": [1], "input_data_file": WARMUP_QP_FILE},
        },
    }]


def onnx_trt_config(name: str, *, profile: GpuProfile = GpuProfile(), instance_count: int = 1,
                    max_queue_delay_us: int = 500, cache_path: Optional[str] = None, fp16: bool = True,
                    workspace_bytes: int = 4 << 30, parameters: Optional[Dict[str, str]] = None) -> dict:
    """ONNX Runtime backend on the GPU with the TensorRT execution accelerator.

    Args:
        cache_path: engine/timing cache directory *inside the server* (default
            `/models/<name>/trt_cache`, the compose file mounts the repository at `/models`).
        fp16: `precision_mode` FP16 (I/O stays uint8/fp32; TensorRT picks FP16 kernels inside).
    """
    cache = cache_path or f"/models/{name}/trt_cache"
    shapes = ort_trt_shapes(profile)
    trt_params = {
        "precision_mode": "FP16" if fp16 else "FP32",
        "max_workspace_size_bytes": str(workspace_bytes),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": shapes["min"],
        "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
    }
    optimization = {"execution_accelerators": {"gpu_execution_accelerator": [{"name": "tensorrt", "parameters": trt_params}]}}
    return build_model_config(
        name, backend="onnxruntime", inputs=GPU_INPUTS, outputs=(FRAMES_OUT,), max_batch_size=profile.max_batch,
        instance_kind="KIND_GPU", instance_count=instance_count, max_queue_delay_us=max_queue_delay_us,
        parameters=parameters, optimization=optimization, warmup=warmup_entries(profile),
    )


def tensorrt_plan_config(name: str, *, profile: GpuProfile = GpuProfile(), instance_count: int = 1,
                         max_queue_delay_us: int = 500, parameters: Optional[Dict[str, str]] = None) -> dict:
    """TensorRT backend serving `1/model.plan` (binding names = the spec's tensor names)."""
    return build_model_config(
        name, backend="tensorrt", platform="tensorrt_plan", inputs=GPU_INPUTS, outputs=(FRAMES_OUT,),
        max_batch_size=profile.max_batch, instance_kind="KIND_GPU", instance_count=instance_count,
        max_queue_delay_us=max_queue_delay_us, parameters=parameters, warmup=warmup_entries(profile),
    )


def torchscript_config(name: str, *, profile: GpuProfile = GpuProfile(), instance_count: int = 1,
                       max_queue_delay_us: int = 500, parameters: Optional[Dict[str, str]] = None) -> dict:
    """PyTorch (libtorch) backend serving `1/model.pt` with Torch-TensorRT engines inside.

    Inputs are matched to `forward(NV12_IN, QP)` by name; the single output by config order.
    JIT profiling is off: with dynamic H/W it re-profiles and causes latency spikes (brief §4.4).
    """
    params = {"INFERENCE_MODE": "true", "ENABLE_JIT_EXECUTOR": "false", "ENABLE_JIT_PROFILING": "false"}
    params.update(parameters or {})
    return build_model_config(
        name, backend="pytorch", inputs=GPU_INPUTS, outputs=(FRAMES_OUT,), max_batch_size=profile.max_batch,
        instance_kind="KIND_GPU", instance_count=instance_count, max_queue_delay_us=max_queue_delay_us,
        parameters=params, warmup=warmup_entries(profile),
    )
