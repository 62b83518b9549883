"""`preedit doctor`: what this machine offers each pipeline stage.

```
 torch / CUDA / GPU (name, compute capability, driver) ─┐
 NVDEC / NVENC codecs (probe or architecture table)  ───┤
 TensorRT, Torch-TensorRT, PyNvVideoCodec, cuda-python ─┼─> report dict ─> text lines | --json
 FFmpeg (PyAV) encoders and hw devices, ONNX Runtime ───┤
 Triton: server binary, reachable at --url, models ─────┘
```
Versions come from package metadata where possible, so asking never imports TensorRT. A machine
without a GPU is a normal answer ("GPU: none"), not an error: the exit code is 0 unless
`--require-gpu` is given and there is no usable CUDA device (then 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import shutil
import subprocess
import sys
import warnings
from typing import Callable, Dict, List, Optional

from preedit.codecs import CODECS, NVENC_ENCODERS
from preedit.errors import UsageError

PACKAGES = ("torch", "tensorrt", "torch_tensorrt", "torch-tensorrt", "PyNvVideoCodec", "pynvvideocodec",
            "cuda-python", "cuda-bindings", "tritonclient", "nvidia-pytriton", "onnxruntime", "onnxruntime-gpu", "av")
CapabilityProbe = Callable[[int, bool], dict]
FFMPEG_ENCODERS = tuple(c for c in CODECS if c not in NVENC_ENCODERS) + NVENC_ENCODERS


def _version(name: str) -> Optional[str]:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def package_versions() -> Dict[str, Optional[str]]:
    """Installed versions (None = not installed), read from metadata without importing."""
    found: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        key = name.lower().replace("_", "-")
        if found.get(key):
            continue
        found[key] = _version(name)
    return found


def driver_version() -> Optional[str]:
    """NVIDIA driver version from nvidia-smi or NVML; None when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import pynvml  # lazy: optional dependency

        pynvml.nvmlInit()
        value = pynvml.nvmlSystemGetDriverVersion()
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:  # noqa: BLE001 - NVML absent or no driver
        return None


def ffmpeg_info() -> dict:
    try:
        import av  # lazy: optional dependency
        from av.codec.hwaccel import hwdevices_available  # lazy: optional dependency
    except ImportError:
        return {"pyav": None}
    return {
        "pyav": av.__version__,
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "encoders": [c for c in FFMPEG_ENCODERS if c in av.codecs_available],
        "hwdevice_types_built": list(hwdevices_available()),
    }


def onnxruntime_providers() -> Optional[List[str]]:
    try:
        import onnxruntime  # lazy: optional dependency
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def cuda_shm_client() -> dict:
    """Whether tritonclient's CUDA shared-memory helpers import (they need cuda-python's bindings)."""
    try:
        with warnings.catch_warnings():  # 2.51's module warns on import (cuda.cudart, pkg_resources): known, pinned
            warnings.simplefilter("ignore")
            import tritonclient.utils.cuda_shared_memory  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or pkg_resources missing in old releases
        return {"usable": False, "error": " ".join(str(exc).split())[:200]}
    return {"usable": True}


def triton_info(url: Optional[str], timeout_s: float = 3.0) -> dict:
    """Server binary present (embedded pytriton) and, with `url`, whether it answers + its models."""
    info: dict = {"embedded_binary": None, "url": url, "reachable": None, "models": None}
    try:
        from preedit.install_support import prepare  # noqa: F401 - presence check only

        import pytriton  # noqa: F401

        from pathlib import Path  # lazy: optional dependency

        binary = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
        info["embedded_binary"] = str(binary) if binary.is_file() else None
    except Exception:  # noqa: BLE001
        pass
    if url:
        try:
            import tritonclient.grpc as grpcclient  # lazy: optional dependency

            client = grpcclient.InferenceServerClient(url)
            info["reachable"] = bool(client.is_server_live(client_timeout=timeout_s))
            from preedit.serve import auth_headers  # lazy: optional dependency

            index = client.get_model_repository_index(as_json=True, headers=auth_headers(url),
                                                      client_timeout=timeout_s).get("models", [])
            info["models"] = sorted(f"{m['name']}:{m.get('state', '?')}" for m in index)
            client.close()
        except Exception as exc:  # noqa: BLE001 - unreachable is an answer
            info["reachable"] = False
            info["error"] = " ".join(str(exc).split())[:200]
    return info


def collect(capabilities: CapabilityProbe, url: Optional[str] = None, device_id: int = 0, probe: bool = True) -> dict:
    """The whole report as a JSON-able dict.

    Args:
        capabilities: the GPU probe, `(device_id, probe) -> dict` (`preedit.client.hardware.capabilities`;
            the CLI layer passes it in, so the core never imports the client).
        url: Triton gRPC address to check, or None.
        device_id: CUDA device to describe.
        probe: ask PyNvVideoCodec (False: the architecture table only).
    """
    caps = dict(capabilities(device_id, probe))
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "driver": driver_version() if caps.get("cuda") or shutil.which("nvidia-smi") else None,
        "gpu": caps,
        "ffmpeg": ffmpeg_info(),
        "onnxruntime_providers": onnxruntime_providers(),
        "triton": triton_info(url),
        "cuda_shm_client": cuda_shm_client(),
    }
    try:
        import torch  # lazy: optional dependency

        report["torch_cuda_build"] = torch.version.cuda
        report["cuda_device_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        report["torch_cuda_build"], report["cuda_device_count"] = None, 0
    return report


def render(report: dict) -> str:
    """Human-readable lines of a `collect()` report."""
    gpu = report["gpu"]
    pk = report["packages"]
    lines = [f"python {report['python']} on {report['platform']}"]
    lines.append(f"torch {pk.get('torch') or 'not installed'} (CUDA build: {report.get('torch_cuda_build') or 'none, CPU only'})")
    if not gpu.get("cuda"):
        why = "; ".join(gpu.get("reasons", [])) or "no CUDA device"
        lines.append(f"GPU: none - {why}")
        lines.append("  -> every stage runs on CPU: PyAV decode, Triton python backend + ONNX Runtime, libx265/libsvtav1")
    else:
        dev = gpu["device"]
        cc = ".".join(str(x) for x in dev["compute_capability"])
        lines.append(f"GPU {dev['index']}: {dev['name']} (sm {cc}, {gpu['architecture']}, {dev['memory_gib']} GiB), "
                     f"driver {report.get('driver') or 'unknown'}, {report.get('cuda_device_count')} device(s)")
        lines.append(f"  NVDEC: {', '.join(gpu['nvdec']) or 'none'}   NVENC: {', '.join(gpu['nvenc']) or 'none'}   "
                     f"(source: {gpu['source']})")
        for reason in gpu.get("reasons", []):
            lines.append(f"  note: {reason}")
    lines.append(f"PyNvVideoCodec: {pk.get('pynvvideocodec') or 'not installed'}   "
                 f"cuda-python: {pk.get('cuda-python') or pk.get('cuda-bindings') or 'not installed'}")
    lines.append(f"TensorRT: {pk.get('tensorrt') or 'not installed'}   Torch-TensorRT: {pk.get('torch-tensorrt') or 'not installed'}")
    ort = report.get("onnxruntime_providers")
    lines.append(f"ONNX Runtime: {pk.get('onnxruntime') or pk.get('onnxruntime-gpu') or 'not installed'} "
                 f"(providers: {', '.join(ort) if ort else 'n/a'})")
    ff = report["ffmpeg"]
    if ff.get("pyav"):
        lines.append(f"FFmpeg {ff.get('ffmpeg')} via PyAV {ff['pyav']}: encoders {', '.join(ff['encoders'])} (*_nvenc need NVENC hardware); "
                     f"hw device types built in: {', '.join(ff['hwdevice_types_built']) or 'none'}")
    else:
        lines.append("FFmpeg: PyAV not installed")
    shm = report.get("cuda_shm_client", {})
    if shm.get("usable"):
        lines.append(f"CUDA shared memory (tritonclient {pk.get('tritonclient')}): usable")
    else:
        lines.append(f"CUDA shared memory (tritonclient {pk.get('tritonclient')}): unavailable - {shm.get('error', '?')} "
                     "(GPU hosts: pip install -e '.[gpu-client]' pins cuda-python/setuptools that it imports with; see docs/gpu.md)")
    tr = report["triton"]
    lines.append(f"Triton: embedded server binary {'present' if tr.get('embedded_binary') else 'absent'}")
    if tr.get("url"):
        if tr.get("reachable"):
            lines.append(f"  reachable at {tr['url']}: models {', '.join(tr.get('models') or []) or 'none'}")
        else:
            lines.append(f"  not reachable at {tr['url']}: {tr.get('error', 'no answer')}")
    return "\n".join(lines)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--url", default=None, help="Triton gRPC address to check, e.g. 127.0.0.1:8001")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device to describe (default 0)")
    parser.add_argument("--no-probe", action="store_true", help="skip the NVDEC/NVENC probe (table only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 when no CUDA device is usable")
    return parser


def run(args: argparse.Namespace, capabilities: CapabilityProbe,
        bench: Optional[Callable[[argparse.Namespace], dict]] = None) -> int:
    """Print the report for parsed `setup_args` options; `bench(args)` adds GPU stage measurements.

    `capabilities` and `bench` come from the layers above (`preedit doctor` is composed in
    `preedit.perf.speed.gpu_probe`), so this core module imports neither the client nor perf.
    """
    report = collect(capabilities, url=args.url, device_id=args.device_id, probe=not args.no_probe)
    if bench is not None:
        report["bench"] = bench(args)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    if args.require_gpu and not report["gpu"].get("cuda"):
        raise UsageError("no usable CUDA device (--require-gpu)")
    return 0


def main(argv: Optional[List[str]], capabilities: CapabilityProbe) -> int:
    """Parse `argv` and print the report (see `run`)."""
    parser = setup_args(argparse.ArgumentParser(prog="preedit doctor", description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv), capabilities)
