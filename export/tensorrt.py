"""GPU export: `preedit export --target tensorrt|onnx-trt` → a KIND_GPU model in the repository.

```
 checkpoint / PreEditorNet
   ├─ onnx-trt : ONNX (checked vs PyTorch with ONNX Runtime) + onnxruntime backend config with the
   │             TensorRT accelerator (FP16, engine/timing cache, profile)     [runs anywhere]
   └─ tensorrt : GpuPreEditor ─torch.export (dynamic N/H/W)─> Torch-TensorRT FP16
                 ─numerical check vs PyTorch fp32 on the GPU─> 1/model.pt (TorchScript, pytorch
                 backend)  or  1/model.plan (TensorRT engine from the ONNX graph, tensorrt_plan)
                                                                              [GPU host only]
```
Engines are specific to the GPU architecture and TensorRT version: build them on the deployment
host inside the NGC PyTorch container of the same YY.MM as the Triton container
(`deploy/build_engine.sh`), never commit them. Torch-TensorRT, TensorRT and CUDA are imported
only inside the functions that need them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from preedit import __version__
from preedit.engines import OrtEngine, TensorRTEngine
from preedit.errors import ModelError, UsageError
from preedit.export.gpu_config import GPU_INPUTS, WARMUP_QP_FILE, GpuProfile, onnx_trt_config, tensorrt_plan_config, torchscript_config
from preedit.export.gpu_module import GpuPreEditor, check_profile_multiple_of_4, example_inputs, export_dynamic
from preedit.export.model_config import write_model_config
from preedit.export.onnx_export import export_checked, export_onnx_bytes, synthetic_frames
from preedit.network import NV12PreEditor, PreEditorNet, load_checkpoint
from preedit.spec import CONTRACT, FRAMES_IN, QP_IN

log = logging.getLogger(__name__)

GPU_TARGETS = ("tensorrt", "onnx-trt")
TRT_FORMS = ("torchscript", "plan")
# Shapes of the GPU numerical check (batch, H, W): all multiples of 4, as the TRT profile requires.
GPU_CHECK_SHAPES: Tuple[Tuple[int, int, int], ...] = ((1, 360, 640), (2, 544, 960), (1, 1080, 1920))


def _as_net(checkpoint_or_net: Union[str, Path, PreEditorNet]) -> Tuple[PreEditorNet, dict]:
    if isinstance(checkpoint_or_net, PreEditorNet):
        return checkpoint_or_net.eval(), {"source": "in-memory network"}
    net, extra = load_checkpoint(Path(checkpoint_or_net))
    return net, {"source": str(checkpoint_or_net), "checkpoint_meta": extra}


def _write_common(model_dir: Path, config: dict, model_file: Path, meta: dict) -> None:
    write_model_config(config, model_dir / "config.pbtxt")
    warm = model_dir / "warmup"
    warm.mkdir(exist_ok=True)
    (warm / WARMUP_QP_FILE).write_bytes(struct.pack("<f", 32.0))
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    contract = {
        "model_name": model_dir.name,
        "model_file": str(model_file.relative_to(model_dir)),
        "model_sha256": digest,
        "contract": dict(CONTRACT.to_dict(), inputs=[asdict(t) for t in GPU_INPUTS]),
        "qp_required": True,
        "preedit_version": __version__,
        "torch_version": torch.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    contract.update(meta)
    (model_dir / "contract.json").write_text(json.dumps(contract, indent=2, sort_keys=True, default=str) + "\n")


def _fresh_version_dir(repo_dir: Path, model_name: str, version: int) -> Tuple[Path, Path]:
    model_dir = Path(repo_dir) / model_name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    return model_dir, version_dir


# ------------------------------------------------------------------------------------------
# onnx-trt: portable, written on any machine


def export_onnx_trt(net: PreEditorNet, repo_dir: Path, model_name: str, *, profile: GpuProfile = GpuProfile(),
                    version: int = 1, instance_count: int = 1, fp16: bool = True,
                    cache_path: Optional[str] = None, metadata: Optional[dict] = None) -> Path:
    """ONNX model + ONNX Runtime backend config with the TensorRT accelerator (KIND_GPU).

    The ONNX graph is the CPU export's (same names, any even size), checked against PyTorch with
    ONNX Runtime here; TensorRT builds its FP16 engine when Triton loads the model (warmup), and
    caches it under `cache_path`.
    """
    onnx_bytes, check = export_checked(net)
    trt_check = ort_tensorrt_check(onnx_bytes, net, fp16=fp16)
    if trt_check is not None and (trt_check["max_abs_diff"] > 2 or trt_check["mismatch_share"] > 0.05):
        raise ModelError(f"ONNX Runtime's TensorRT EP disagrees with PyTorch: max |diff| {trt_check['max_abs_diff']}, "
                         f"{trt_check['mismatch_share']:.2e} of pixels differ")
    model_dir, version_dir = _fresh_version_dir(repo_dir, model_name, version)
    model_file = version_dir / "model.onnx"
    model_file.write_bytes(onnx_bytes)
    (model_dir / "trt_cache").mkdir(exist_ok=True)
    config = onnx_trt_config(model_name, profile=profile, instance_count=instance_count, fp16=fp16,
                             cache_path=cache_path)
    meta = {"target": "onnx-trt", "net_config": asdict(net.config), "export_check": check.to_dict(),
            "gpu_check": trt_check or "not run: ONNX Runtime here has no TensorRT execution provider",
            "gpu_profile": asdict(profile), "precision": "fp16" if fp16 else "fp32",
            "engine": "built by ONNX Runtime's TensorRT EP at model load, cached in trt_cache/"}
    meta.update(metadata or {})
    _write_common(model_dir, config, model_file, meta)
    return model_dir


def ort_tensorrt_check(onnx_bytes: bytes, net: PreEditorNet, fp16: bool = True) -> Optional[dict]:
    """The ONNX graph under ONNX Runtime's TensorRT EP vs PyTorch fp32 (None without that EP).

    Runs only where `onnxruntime-gpu` with TensorRT is installed (a GPU host); frame sizes are
    inside the default profile.
    """
    import onnxruntime as ort  # lazy: onnxruntime

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return None


    engine = OrtEngine(onnx_bytes, threads=0, inter_op_threads=None, providers=[
        ("TensorrtExecutionProvider", {"trt_fp16_enable": fp16}), "CUDAExecutionProvider"])
    reference = NV12PreEditor(net.eval().cpu())
    worst = differing = total = 0
    for i, (b, h, w) in enumerate(GPU_CHECK_SHAPES[:2]):
        x = synthetic_frames(b, h, w, seed=i)
        q = np.full((b, 1), 32.0, dtype=np.float32)
        got = engine.run(x, q)
        with torch.no_grad():
            want = reference(torch.from_numpy(x), torch.from_numpy(q)).numpy()
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        worst, differing, total = max(worst, int(diff.max())), differing + int(np.count_nonzero(diff)), total + diff.size
    return {"provider": "TensorrtExecutionProvider", "fp16": fp16, "max_abs_diff": worst,
            "mismatch_share": differing / max(total, 1)}


# ------------------------------------------------------------------------------------------
# tensorrt: Torch-TensorRT on the GPU host


def _torch_trt_fp16_kwargs(torch_tensorrt) -> dict:
    """FP16 the way this Torch-TensorRT version supports it (brief §4.2)."""
    version = tuple(int(p) for p in torch_tensorrt.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version and version < (2, 10):
        return {"enabled_precisions": {torch.float16}}
    # 2.10+: strong typing; rule-based autocast keeps sensitive ops (the residual add, round) in fp32.
    return {"enable_autocast": True, "autocast_low_precision_type": torch.float16}


def gpu_check(reference: torch.nn.Module, candidate, device: str = "cuda",
              shapes: Sequence[Tuple[int, int, int]] = GPU_CHECK_SHAPES, qp: float = 32.0) -> dict:
    """Compare `candidate` against the fp32 PyTorch `reference` on uint8 frames on the GPU.

    Returns:
        `{"frames", "max_abs_diff", "mismatch_share"}` over all shapes.
    """
    worst = differing = total = frames = 0
    with torch.no_grad():
        for i, (b, h, w) in enumerate(shapes):
            x = torch.from_numpy(synthetic_frames(b, h, w, seed=i)).to(device)
            q = torch.full((b, 1), qp, device=device)
            want = reference(x, q)
            got = candidate(x, q)
            if tuple(got.shape) != tuple(want.shape):
                raise ModelError(f"GPU model output {tuple(got.shape)} != PyTorch {tuple(want.shape)}")
            diff = (got.to(torch.int16) - want.to(torch.int16)).abs()
            worst = max(worst, int(diff.max()))
            differing += int((diff > 0).sum())
            total += diff.numel()
            frames += b
    return {"frames": frames, "max_abs_diff": worst, "mismatch_share": differing / max(total, 1)}


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise UsageError("--target tensorrt needs an NVIDIA GPU with CUDA (engines are built on the "
                         "deployment host: see deploy/build_engine.sh); use --target onnx-trt on this machine")


def _plan_from_onnx(onnx_bytes: bytes, profile: GpuProfile, fp16: bool, workspace_bytes: int) -> bytes:
    """A serialized TensorRT engine from the ONNX graph (keeps the spec's binding names)."""
    try:
        import tensorrt as trt  # lazy: optional dependency
    except ImportError:
        raise UsageError("the plan form needs the TensorRT Python package (present in NGC containers)") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    opt.set_shape(FRAMES_IN.name, *(profile.nv12_shape(w) for w in ("min", "opt", "max")))
    opt.set_shape(QP_IN.name, *((profile.nv12_shape(w)[0], 1) for w in ("min", "opt", "max")))
    config.add_optimization_profile(opt)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(engine)


def export_tensorrt(net: PreEditorNet, repo_dir: Path, model_name: str, *, profile: GpuProfile = GpuProfile(),
                    form: str = "torchscript", version: int = 1, instance_count: int = 1, fp16: bool = True,
                    max_abs_diff: int = 2, max_mismatch_share: float = 0.05, workspace_bytes: int = 4 << 30,
                    metadata: Optional[dict] = None) -> Path:
    """Torch-TensorRT FP16 export on this GPU, checked against PyTorch fp32 before writing.

    Args:
        form: `torchscript` (Torch-TensorRT → TorchScript, pytorch backend) or `plan` (TensorRT
            engine from the ONNX graph, tensorrt_plan backend).
        max_abs_diff, max_mismatch_share: acceptance of the GPU check (FP16 moves some roundings
            by one code value; more than that is a broken engine).
    """
    if form not in TRT_FORMS:
        raise UsageError(f"unknown TensorRT form {form!r}; valid: {', '.join(TRT_FORMS)}")
    _require_cuda()
    check_profile_multiple_of_4(profile)
    reference = GpuPreEditor(net).cuda().eval()
    meta = {"target": "tensorrt", "form": form, "net_config": asdict(net.config), "gpu_profile": asdict(profile),
            "precision": "fp16" if fp16 else "fp32", "gpu": torch.cuda.get_device_name(),
            "compute_capability": list(torch.cuda.get_device_capability())}
    if form == "plan":
        engine = _plan_from_onnx(export_onnx_bytes(net), profile, fp16, workspace_bytes)
        candidate = TensorRTEngine(engine)
        check = gpu_check(reference, candidate.run_torch)
        meta["tensorrt_version"] = candidate.version
        model_dir, version_dir = _fresh_version_dir(repo_dir, model_name, version)
        model_file = version_dir / "model.plan"
        model_file.write_bytes(engine)
        config = tensorrt_plan_config(model_name, profile=profile, instance_count=instance_count)
    else:
        try:
            import torch_tensorrt  # lazy: optional dependency
        except ImportError:
            raise UsageError("--target tensorrt needs torch_tensorrt (NGC PyTorch container; "
                             "see deploy/build_engine.sh)") from None
        ep = export_dynamic(reference, profile, device="cuda")
        inputs = [
            torch_tensorrt.Input(min_shape=profile.nv12_shape("min"), opt_shape=profile.nv12_shape("opt"),
                                 max_shape=profile.nv12_shape("max"), dtype=torch.uint8, name=FRAMES_IN.name),
            torch_tensorrt.Input(min_shape=(1, 1), opt_shape=(profile.opt_batch, 1), max_shape=(profile.max_batch, 1),
                                 dtype=torch.float32, name=QP_IN.name),
        ]
        kwargs = _torch_trt_fp16_kwargs(torch_tensorrt) if fp16 else {}
        # full compilation: an op left to PyTorch would be frozen at the trace shape by the save below
        trt_module = torch_tensorrt.dynamo.compile(ep, arg_inputs=inputs, min_block_size=1,
                                                   require_full_compilation=True, **kwargs)
        check = gpu_check(reference, trt_module)
        meta["torch_tensorrt_version"] = torch_tensorrt.__version__
        model_dir, version_dir = _fresh_version_dir(repo_dir, model_name, version)
        model_file = version_dir / "model.pt"
        torch_tensorrt.save(trt_module, str(model_file), output_format="torchscript",
                            arg_inputs=list(example_inputs(profile, "cuda", "opt", batch=1)))
        try:
            meta["reload_check"] = check_torchscript_reload(
                model_file, reference, [profile.nv12_shape("min", 1), profile.nv12_shape("opt", 2)],
                [t.name for t in GPU_INPUTS], device="cuda", max_abs_diff=max_abs_diff)
        except ModelError:
            shutil.rmtree(version_dir, ignore_errors=True)
            raise
        config = torchscript_config(model_name, profile=profile, instance_count=instance_count)
    meta["export_check"] = check
    if check["max_abs_diff"] > max_abs_diff or check["mismatch_share"] > max_mismatch_share:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise ModelError(f"TensorRT output disagrees with PyTorch: max |diff| {check['max_abs_diff']}, "
                         f"{check['mismatch_share']:.2e} of pixels differ (limits {max_abs_diff}, {max_mismatch_share})")
    meta.update(metadata or {})
    _write_common(model_dir, config, model_file, meta)
    return model_dir


def check_torchscript_reload(model_file: Path, reference, shapes, input_names, *, device: str = "cuda",
                             max_abs_diff: int = 2, qp: float = 32.0) -> dict:
    """Reload the saved TorchScript as Triton's pytorch backend will and check what it sees.

    - the forward's argument names must be the config's input names (the backend matches by name);
    - it must run at shapes other than the one it was traced at and agree with `reference`
      (a traced PyTorch-fallback op freezes the trace shape: wrong size or an error).

    Returns `{"input_names", "shapes", "max_abs_diff"}`; raises `ModelError` otherwise.
    """
    loaded = torch.jit.load(str(model_file), map_location=device)
    names = [a.name for a in loaded.forward.schema.arguments[1:]]
    if names != list(input_names):
        raise ModelError(f"{Path(model_file).name}: TorchScript forward takes {names}, the Triton config "
                         f"names {list(input_names)}: the pytorch backend would not bind the inputs")
    worst = 0
    gen = torch.Generator().manual_seed(1)
    for shape in shapes:
        frames = torch.randint(0, 256, tuple(shape), dtype=torch.uint8, generator=gen).to(device)
        q = torch.full((shape[0], 1), qp, device=device)
        try:
            with torch.no_grad():
                got, want = loaded(frames, q), reference(frames, q)
        except Exception as exc:  # noqa: BLE001 - RuntimeError from a frozen shape
            raise ModelError(f"{Path(model_file).name} fails at shape {tuple(shape)} after reload: "
                             f"{' '.join(str(exc).split())[:200]}") from None
        if tuple(got.shape) != tuple(want.shape):
            raise ModelError(f"{Path(model_file).name} returns {tuple(got.shape)} for input {tuple(shape)} after "
                             f"reload (want {tuple(want.shape)}): an op was frozen at the trace shape")
        worst = max(worst, int((got.to(torch.int16) - want.to(torch.int16)).abs().max()))
    if worst > max_abs_diff:
        raise ModelError(f"{Path(model_file).name} after reload differs from PyTorch by {worst} (limit {max_abs_diff})")
    return {"input_names": names, "shapes": [list(s) for s in shapes], "max_abs_diff": worst}


# ------------------------------------------------------------------------------------------
# entry point wired into `preedit export`


def export_gpu(target: str, checkpoint_or_net: Union[str, Path, PreEditorNet], repo_dir: Path, *,
               model_name: Optional[str] = None, profile: Optional[GpuProfile] = None,
               form: str = "torchscript", version: int = 1, instance_count: int = 1, fp16: bool = True,
               metadata: Optional[dict] = None) -> Path:
    """Export a GPU model variant into `repo_dir`; returns the model directory.

    Args:
        target: `onnx-trt` (written anywhere) or `tensorrt` (needs this host's GPU + Torch-TensorRT).
        checkpoint_or_net: a `PreEditorNet` or a checkpoint path.
        model_name: default `preedit_onnx_trt` / `preedit_trt`.
        profile: shape range (default 144p..2160p, opt 1080p, batch ≤ 4).
        form: for `tensorrt`: `torchscript` (default) or `plan`.
    """
    if target not in GPU_TARGETS:
        raise UsageError(f"unknown GPU target {target!r}; valid: {', '.join(GPU_TARGETS)}")
    net, meta = _as_net(checkpoint_or_net)
    meta.update(metadata or {})
    profile = profile or GpuProfile()
    if target == "onnx-trt":
        return export_onnx_trt(net, repo_dir, model_name or "preedit_onnx_trt", profile=profile, version=version,
                               instance_count=instance_count, fp16=fp16, metadata=meta)
    return export_tensorrt(net, repo_dir, model_name or "preedit_trt", profile=profile, form=form, version=version,
                           instance_count=instance_count, fp16=fp16, metadata=meta)
