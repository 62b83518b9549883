"""Per-stage back-end choice for `--device cpu|cuda|auto`, with the reason for every fallback.

```
 device request + capabilities() + input codec + output codec
   └─> BackendPlan(decode=cpu|cuda, preedit=cpu|cuda, encode=cpu|cuda, reasons=[...])
```
Pure: no GPU is touched here, so every decision is unit-tested on CPU. A fallback replaces one
stage only (GPU decode + GPU pre-edit + CPU encode is the normal plan on an H100). With
`--device cuda` the caller may forbid fallback (`strict=True`): then a missing stage raises
instead of being logged, which is what tests and benchmarks want.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Mapping, Optional

from preedit.errors import UsageError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
STAGES = ("decode", "preedit", "encode")


@dataclass(frozen=True)
class BackendPlan:
    """Which implementation runs each stage, and why any stage fell back to the CPU."""

    decode: str
    preedit: str
    encode: str
    reasons: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stage in STAGES:
            if getattr(self, stage) not in ("cpu", "cuda"):
                raise ValueError(f"{stage} back end must be cpu or cuda, got {getattr(self, stage)!r}")

    @property
    def any_cuda(self) -> bool:
        return "cuda" in (self.decode, self.preedit, self.encode)

    def describe(self) -> str:
        return f"decode={self.decode} preedit={self.preedit} encode={self.encode}"


def _norm_codec(name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    name = name.lower()
    aliases = {"h265": "hevc", "libx265": "hevc", "hevc_nvenc": "hevc", "x265": "hevc", "avc": "h264",
               "libx264": "h264", "h264_nvenc": "h264", "libsvtav1": "av1", "av1_nvenc": "av1", "libaom-av1": "av1"}
    return aliases.get(name, name)


def plan_backends(device: str, caps: Mapping, *, input_codec: Optional[str] = None,
                  output_codec: Optional[str] = None, input_bit_depth: int = 8,
                  server_shares_gpu: bool = True, strict: bool = False) -> BackendPlan:
    """Choose each stage's back end.

    Args:
        device: `cpu`, `cuda` or `auto`.
        caps: `capabilities()` output (`cuda`, `nvdec`, `nvenc`, `video_stages_usable`).
        input_codec: codec of the input video stream (`h264`, `hevc`, `av1`, `vp8`, ...); None = unknown.
        output_codec: codec to encode (`hevc`, `av1`, `h264`).
        input_bit_depth: 8, or 10 for P010 sources (NVDEC path is 8-bit NV12 only here).
        server_shares_gpu: Triton runs on this host and GPU, so CUDA shared memory is possible.
        strict: raise `UsageError` instead of falling back (only meaningful with `device="cuda"`).

    Returns:
        The plan; `reasons` lists one line per stage that is not on the GPU although asked for.
    """
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cpu":
        return BackendPlan("cpu", "cpu", "cpu", [])
    reasons: List[str] = []
    if not caps.get("cuda"):
        why = "; ".join(caps.get("reasons", [])) or "no CUDA device"
        if strict:
            raise UsageError(f"--device cuda asked for, but {why}")
        return BackendPlan("cpu", "cpu", "cpu", [f"all stages on CPU: {why}"])
    video_ok = caps.get("video_stages_usable", True)
    in_codec, out_codec = _norm_codec(input_codec), _norm_codec(output_codec)

    decode = "cuda"
    if not video_ok:
        decode, why = "cpu", "PyNvVideoCodec is not importable"
    elif in_codec is None:
        decode, why = "cpu", "input codec unknown"
    elif in_codec not in caps.get("nvdec", []):
        decode, why = "cpu", f"NVDEC on this GPU cannot decode {in_codec} (has: {', '.join(caps.get('nvdec', [])) or 'none'})"
    elif input_bit_depth != 8:
        decode, why = "cpu", f"{input_bit_depth}-bit input: the GPU decoder path is 8-bit NV12 only"
    if decode == "cpu":
        reasons.append(f"decode on CPU: {why}")

    preedit = "cuda" if server_shares_gpu else "cpu"
    if preedit == "cpu":
        reasons.append("pre-edit transport on system shared memory: Triton is not on this GPU")

    encode = "cuda"
    if not video_ok:
        encode, why = "cpu", "PyNvVideoCodec is not importable"
    elif out_codec is None:
        encode, why = "cpu", "output codec unknown"
    elif out_codec not in caps.get("nvenc", []):
        name = (caps.get("device") or {}).get("name", "this GPU")
        have = ", ".join(caps.get("nvenc", [])) or "no NVENC at all"
        encode, why = "cpu", f"{name} cannot NVENC-encode {out_codec} ({have})"
    if encode == "cpu":
        reasons.append(f"encode on CPU: {why}")

    if strict and reasons:
        raise UsageError("--device cuda with fallback disabled, but " + "; ".join(reasons))
    return BackendPlan(decode, preedit, encode, reasons)


def log_plan(plan: BackendPlan, logger: logging.Logger = log) -> None:
    """One INFO line for the plan, one WARNING per fallback."""
    logger.info("back ends: %s", plan.describe())
    for reason in plan.reasons:
        logger.warning("GPU fallback: %s", reason)
