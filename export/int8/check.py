"""Cross-backend determinism: run the same real frames through every backend, compare bits.

```
 real NV12 frames ──┬─> PyTorch eager fp32 / ONNX Runtime (threads 1|N, graph opt on|off) / Triton
   (+ QP per frame) │       float model: differences in the last fp32 bits flip uint8 roundings
                    └─> NumPy integer reference / ORT int8 / PyTorch fbgemm|qnnpack|x86|onednn / Triton
                            int8 model: must agree bit for bit
 outputs ──> pairwise mismatch (share of differing pixels, max |diff|) · per-frame sha256 digests
```

`export_deterministic` quantizes a network, writes it as the served model `preedit_int8`, and
records the scheme plus per-frame digests of reference outputs on a fixed clip in the model's
`config.pbtxt` parameters and `contract.json`; `preedit verify` replays them.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from preedit.engines import OrtEngine, TorchEngine, TritonEngine
from preedit.errors import ModelError, UsageError
from preedit.paths import clips_dir
from preedit.splits import HELDOUT_CLIPS  # noqa: F401  (re-exported for the int8 tools)

from preedit.export.int8.frames import load_frames
from preedit.export.int8.reference import IntModel, reference_forward

log = logging.getLogger(__name__)

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # an Engine, or any uint8 [N, H*3/2, W], fp32 [N, 1] -> uint8

#: Raw (decoder-free) clips: the verification clip must decode to the same input bits anywhere.
VERIFY_CLIP = "CiscoVT2people_320x192_12fps.yuv"
VERIFY_QPS = (22.0, 32.0, 42.0)
#: Calibration clips: training side of the split in training/default/config.yaml (quality is
#: measured on the held-out clips).
CALIB_CLIPS = ("bottle-detection.mp4", "asl-book.mkv", "stream-of-water.webm", "face-webcam-1080x720.mp4")
INT8_MODEL_NAME = "preedit_int8"
INT_MODEL_FILE = "int_model.npz"


# ---------------------------------------------------------------------------------------------
# Backends


def ort_variants(onnx_bytes: bytes, prefix: str = "ort") -> Dict[str, Runner]:
    """ORT with 1 thread / all threads, graph optimisations on / off."""
    out: Dict[str, Runner] = {}
    for threads, optimize in itertools.product((1, 0), (True, False)):
        name = f"{prefix}-t{'all' if threads == 0 else threads}-{'opt' if optimize else 'noopt'}"
        out[name] = OrtEngine(onnx_bytes, threads, optimize)
    return out


def float_backends(net, onnx_bytes: Optional[bytes] = None) -> Dict[str, Runner]:
    """PyTorch eager fp32 and the ORT variants of the float model's ONNX export."""
    if onnx_bytes is None:
        from preedit.export.onnx_export import export_onnx_bytes

        onnx_bytes = export_onnx_bytes(net)
    return {"torch-fp32": TorchEngine(net), **ort_variants(onnx_bytes)}


def int8_backends(model: IntModel, onnx_bytes: Optional[bytes] = None,
                  engines: Optional[Sequence[str]] = None) -> Dict[str, Runner]:
    """NumPy reference, ORT variants of the int8 ONNX, and PyTorch quantized engines."""
    from preedit.export.int8.onnx import build_onnx
    from preedit.export.int8.torch import TorchFloatIntPreEditor, TorchInt8PreEditor, available_engines

    if onnx_bytes is None:
        onnx_bytes = build_onnx(model)
    out: Dict[str, Runner] = {"numpy-ref": lambda x, q: reference_forward(model, x, q)}
    out.update(ort_variants(onnx_bytes))
    for engine in engines if engines is not None else available_engines():
        out[f"torch-{engine}"] = TorchInt8PreEditor(model, engine)
    out["torch-fp32-cpu"] = TorchFloatIntPreEditor(model, "cpu")
    return out


# ---------------------------------------------------------------------------------------------
# Comparison (pure)


def frame_qps(count: int, qps: Sequence[float] = VERIFY_QPS) -> List[float]:
    """QP used for frame i: cycles through `qps` so every check exercises several FiLM rows."""
    return [float(qps[i % len(qps)]) for i in range(count)]


def run_frames(runner: Runner, frames: Sequence[np.ndarray], qps: Sequence[float]) -> List[np.ndarray]:
    """One request per frame: uint8 NV12 `[H*3/2, W]` in, the same out."""
    return [runner(f[None], np.array([[q]], dtype=np.float32))[0] for f, q in zip(frames, qps)]


def mismatch(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Dict[str, float]:
    """Differences between two output sequences: pixel share, max |diff|, frames differing."""
    total = differing = frames = 0
    worst = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise ModelError(f"output shapes differ: {x.shape} vs {y.shape}")
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        n = int(np.count_nonzero(d))
        differing += n
        frames += int(n > 0)
        worst = max(worst, int(d.max()))
        total += d.size
    return {"pixels": total, "differing": differing, "differing_share": differing / max(total, 1), "max_abs_diff": worst,
            "frames_differing": frames, "frames": len(a)}


def pairwise(outputs: Mapping[str, Sequence[np.ndarray]]) -> List[Dict]:
    """`mismatch` for every pair of backends (in insertion order)."""
    names = list(outputs)
    return [{"a": a, "b": b, **mismatch(outputs[a], outputs[b])} for a, b in itertools.combinations(names, 2)]


def frame_digest(frame: np.ndarray) -> str:
    """sha256 of a uint8 frame's shape and bytes (hex)."""
    h = hashlib.sha256(f"{frame.dtype}{tuple(frame.shape)}".encode())
    h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()


def combined_digest(digests: Sequence[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def first_mismatch(expected: Sequence[str], got: Sequence[np.ndarray],
                   want_frames: Optional[Sequence[np.ndarray]] = None) -> Optional[Dict]:
    """First frame whose digest differs from `expected`, with where it differs when known."""
    if len(got) != len(expected):
        return {"frame": min(len(got), len(expected)), "reason": f"{len(got)} frames, expected {len(expected)}"}
    for i, (d, frame) in enumerate(zip(expected, got)):
        if frame_digest(frame) != d:
            info = {"frame": i, "reason": "digest differs"}
            if want_frames is not None:
                diff = np.argwhere(frame != want_frames[i])
                info.update(pixels_differing=int(len(diff)), first_pixel=[int(v) for v in diff[0]] if len(diff) else None)
            return info
    return None


# ---------------------------------------------------------------------------------------------
# The verification record and the deterministic export


def verification_frames(clip: str = VERIFY_CLIP, count: int = 9) -> List[np.ndarray]:
    path = clips_dir() / clip
    return load_frames(path, count)


def verification_record(model: IntModel, clip: str = VERIFY_CLIP, count: int = 9,
                        frames: Optional[Sequence[np.ndarray]] = None) -> Dict:
    """Per-frame input and output sha256 of the integer reference on a fixed clip."""
    frames = list(frames) if frames is not None else verification_frames(clip, count)
    qps = frame_qps(len(frames))
    outputs = run_frames(lambda x, q: reference_forward(model, x, q), frames, qps)
    out_digests = [frame_digest(o) for o in outputs]
    return {"clip": clip, "frames": len(frames), "qps": qps,
            "input_sha256": [frame_digest(f) for f in frames], "output_sha256": out_digests,
            "sha256": combined_digest(out_digests)}


def default_calibration_frames(count: int = 16, max_width: int = 640) -> List[np.ndarray]:
    """`count` frames interleaved over `CALIB_CLIPS` (every 4th frame of each clip)."""
    per_clip = -(-count // len(CALIB_CLIPS))
    groups = [load_frames(clips_dir() / c, per_clip * 4, max_width=max_width)[::4] for c in CALIB_CLIPS
              if (clips_dir() / c).is_file()]
    if not groups:
        raise ModelError(f"no calibration clips found under {clips_dir()} (looked for {', '.join(CALIB_CLIPS)})")
    pool = [g[i] for i in range(per_clip) for g in groups if i < len(g)]
    return pool[:count]


def export_deterministic(net, repo_dir: Path, calib_frames: Optional[Sequence[np.ndarray]] = None,
                         scheme=None, *, model_name: str = INT8_MODEL_NAME, verify_clip: str = VERIFY_CLIP,
                         verify_frames: int = 9, metadata: Optional[Mapping] = None, **config_kwargs) -> Path:
    """Quantize `net`, check it bit for bit, and write `<repo_dir>/<model_name>/`.

    Args:
        net: float `PreEditorNet`.
        repo_dir: model repository root.
        calib_frames: uint8 NV12 frames `[H*3/2, W]` (default: `default_calibration_frames()`).
        scheme: `QuantScheme` (default: `quantize.DEFAULT_SCHEME`, the search's pick).
        model_name: served model name.
        verify_clip: raw clip (shared clip set) whose reference digests go into the config.
        verify_frames: frames of `verify_clip` recorded.
        metadata: extra JSON-able provenance for contract.json (e.g. the checkpoint path).
        config_kwargs: passed to the lead's `cpu_model_config` (max_batch_size, instance_count, ...).

    Returns:
        The model directory.

    Raises:
        ModelError: when ONNX Runtime's output differs from the NumPy integer reference.
    """
    from preedit.export.int8.onnx import build_onnx
    from preedit.export.int8.quantize import DEFAULT_SCHEME, quantize
    from preedit.export.repository import write_onnx_model

    scheme = scheme or DEFAULT_SCHEME
    if calib_frames is None:
        calib_frames = default_calibration_frames(scheme.calib_frames)
    model = quantize(net, calib_frames, scheme)
    onnx_bytes = build_onnx(model)
    frames = verification_frames(verify_clip, verify_frames)
    record = verification_record(model, verify_clip, frames=frames)
    got = run_frames(OrtEngine(onnx_bytes, threads=0), frames, record["qps"])
    bad = first_mismatch(record["output_sha256"], got)
    if bad is not None:
        raise ModelError(f"int8 ONNX Runtime output differs from the integer reference at frame {bad['frame']}")
    params = dict(config_kwargs.pop("extra_parameters", {}) or {})
    params.update({
        "deterministic": "true",
        "quant_scheme": json.dumps(scheme.to_dict(), sort_keys=True),
        "int_model_sha256": model.content_hash(),
        "verify_clip": verify_clip,
        "verify_qps": json.dumps(record["qps"]),
        "verify_output_sha256": json.dumps(record["output_sha256"]),
        "verify_sha256": record["sha256"],
    })
    meta = {"deterministic": True, "quant_scheme": scheme.to_dict(), "int_model_sha256": model.content_hash(),
            "verification": record, "net_config": {k: getattr(net.config, k) for k in ("channels", "depth", "max_delta")},
            "source": "int8 static quantization (preedit.export.int8.quantize)"}
    meta.update(metadata or {})
    model_dir = write_onnx_model(onnx_bytes, Path(repo_dir), model_name, metadata=meta,
                                 extra_parameters=params, **config_kwargs)
    (model_dir / "1" / INT_MODEL_FILE).write_bytes(model.to_npz_bytes())
    return model_dir


def load_int_model(model_dir: Path, version: int = 1) -> IntModel:
    path = Path(model_dir) / str(version) / INT_MODEL_FILE
    if not path.is_file():
        raise ModelError(f"no integer model at {path}; export with `preedit export --deterministic`")
    return IntModel.from_npz_bytes(path.read_bytes())


# ---------------------------------------------------------------------------------------------
# Measurement command: float vs int8 across backends


def measure(net, model: Optional[IntModel], clips: Sequence[Tuple[str, int, Optional[int]]],
            triton_urls: Optional[Mapping[str, Tuple[str, str]]] = None) -> Dict:
    """Run float and int8 backends on real frames; returns pairwise tables per model kind.

    Args:
        net: float network.
        model: integer model (None: float only).
        clips: (clip name, frames, max_width) triples from the shared clip set.
        triton_urls: kind ("float"/"int8") -> (http url, model name) of served models.
    """
    frames: List[np.ndarray] = []
    for name, count, max_width in clips:
        frames += load_frames(clips_dir() / name, count, max_width=max_width)
    qps = frame_qps(len(frames))
    report = {"clips": [list(c) for c in clips], "frames": len(frames),
              "sizes": sorted({f"{f.shape[1]}x{f.shape[0] * 2 // 3}" for f in frames})}
    kinds = {"float": float_backends(net)}
    if model is not None:
        kinds["int8"] = int8_backends(model)
    for kind, backends in kinds.items():
        if triton_urls and kind in triton_urls:
            url, name = triton_urls[kind]
            backends[f"triton-{name}"] = TritonEngine(url, name, protocol="http", max_batch=None, check_ready=False)
        outputs, times = {}, {}
        for bname, runner in backends.items():
            t0 = time.perf_counter()
            outputs[bname] = run_frames(runner, frames, qps)
            times[bname] = (time.perf_counter() - t0) * 1000.0 / len(frames)
        report[kind] = {"pairs": pairwise(outputs), "ms_per_frame": times}
    return report


def markdown_pairs(pairs: Sequence[Dict]) -> str:
    lines = ["| backend A | backend B | pixels differing | share (ppm) | max abs diff | frames differing |",
             "|---|---|---|---|---|---|"]
    for p in pairs:
        count = p.get("differing", round(p["differing_share"] * p["pixels"]))
        lines.append(f"| {p['a']} | {p['b']} | {count} of {p['pixels']} | {p['differing_share'] * 1e6:.2f} | "
                     f"{p['max_abs_diff']} | {p['frames_differing']}/{p['frames']} |")
    return "\n".join(lines)


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="float checkpoint (default: a seeded, randomly perturbed non-identity network)")
    parser.add_argument("--int8-model-dir", type=Path, default=None,
                        help="exported int8 model dir (default: quantize the network with the default scheme)")
    parser.add_argument("--clip", action="append", default=None, metavar="NAME:FRAMES[:MAXWIDTH]",
                        help="shared clip to use (repeatable)")
    parser.add_argument("--triton", action="store_true", help="also serve both models with Triton and compare")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    return parser


DEFAULT_MEASURE_CLIPS = (("park_joy_480x270_50fps.y4m", 6, None), ("CiscoVT2people_320x192_12fps.yuv", 6, None),
                         ("flower.mp4", 4, 960), ("face-webcam-1080x720.mp4", 3, None))


def _parse_clip(text: str) -> Tuple[str, int, Optional[int]]:
    parts = text.split(":")
    try:
        return parts[0], int(parts[1]) if len(parts) > 1 else 4, int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise UsageError(f"--clip wants NAME:FRAMES[:MAXWIDTH], got {text!r}") from None


def net_from_model_dir(model_dir: Path):
    """Rebuild the float `PreEditorNet` from an exported float model (`model.onnx` initializers +
    `contract.json` net_config), for when only the model repository is at hand."""
    import onnx
    import torch

    from preedit.network import NetConfig, PreEditorNet

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "contract.json").read_text())
    if "net_config" not in meta:
        raise ModelError(f"{model_dir}/contract.json has no net_config; pass a checkpoint instead")
    net = PreEditorNet(NetConfig.from_dict(meta["net_config"]))
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # exporters dedupe equal tensors through Identity / Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    state = net.state_dict()
    weights = {k: arrays.get("net." + k, arrays.get(k)) for k in state}
    weights = {k: v for k, v in weights.items() if v is not None}
    missing = [k for k in state if k not in weights]
    if missing:
        raise ModelError(f"{model_dir}/1/model.onnx lacks weights {missing}; pass a checkpoint instead")
    net.load_state_dict({k: torch.from_numpy(np.array(weights[k])).reshape(state[k].shape) for k in state})
    return net.eval()


def load_net(checkpoint: Optional[Path]):
    """Float network from a checkpoint (.pt), an exported float model dir, or (None) the seeded
    perturbed stand-in; returns (net, description)."""
    from preedit.network import load_checkpoint

    from preedit.export.int8.quantize import perturbed_net

    if checkpoint is None:
        return perturbed_net(0), "perturbed_net(seed=0)"
    if Path(checkpoint).is_dir():
        return net_from_model_dir(checkpoint), f"{checkpoint} (ONNX initializers)"
    net, _ = load_checkpoint(checkpoint)
    return net, str(checkpoint)


def main(argv: Optional[List[str]] = None) -> int:
    """`preedit int8 measure`: the cross-backend mismatch tables (Markdown)."""
    import tempfile

    args = setup_args(argparse.ArgumentParser(prog="preedit int8 measure",
                                              description=main.__doc__)).parse_args(argv)
    net, source = load_net(args.checkpoint)
    clips = [_parse_clip(c) for c in args.clip] if args.clip else list(DEFAULT_MEASURE_CLIPS)
    with tempfile.TemporaryDirectory(prefix="preedit_det_") as tmp:
        if args.int8_model_dir:
            model_dir = args.int8_model_dir
        else:
            model_dir = export_deterministic(net, Path(tmp))
        model = load_int_model(model_dir)
        urls = None
        server = None
        if args.triton:
            from preedit.serve import ServerConfig, TritonServer

            from preedit.export.repository import export_model_repository

            repo = Path(tmp) / "repo"
            export_model_repository(net, repo, "preedit_float")
            export_deterministic(net, repo)
            server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0))
            server.start()
            server.wait_model_ready("preedit_float", 120)
            server.wait_model_ready(INT8_MODEL_NAME, 120)
            url = server.http_url.replace("http://", "")
            urls = {"float": (url, "preedit_float"), "int8": (url, INT8_MODEL_NAME)}
        try:
            report = measure(net, model, clips, urls)
        finally:
            if server is not None:
                server.stop(timeout_s=10)
    report["network"] = source
    report["threads_all"] = os.cpu_count()
    for kind in ("float", "int8"):
        if kind in report:
            print(f"\n### {kind} model ({report['frames']} frames, sizes {', '.join(report['sizes'])})\n")
            print(markdown_pairs(report[kind]["pairs"]))
            print("\nms/frame (1 request per frame): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in report[kind]["ms_per_frame"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
