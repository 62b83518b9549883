"""Cross-backend determinism: run the same real frames through every backend, compare bits.

```
 real NV12 frames ──┬─> PyTorch eager fp32 / ONNX Runtime (threads 1|N, graph opt on|off) / Triton
   (+ QP per frame) │       float model: differences in the last fp32 bits flip uint8 roundings
                    └─> NumPy integer reference / ORT int8 / PyTorch fbgemm|qnnpack|x86|onednn / Triton
                            int8 model: must agree bit for bit
 outputs ──> pairwise mismatch (share of differing pixels, max |diff|) · per-frame sha256 digests
```

`preedit int8 measure`: the table of backend pairs. The pieces: `backends` (who runs),
`compare` (bits, digests, the verification record), `write` (`export_deterministic`: the served
`preedit_int8` and its record, which `preedit verify` replays).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from preedit.engines import TritonEngine
from preedit.errors import ModelError, UsageError
from preedit.export.int8.backends import float_backends, int8_backends
from preedit.export.int8.compare import frame_qps, pairwise, run_frames
from preedit.export.int8.frames import load_frames
from preedit.export.int8.quantize import perturbed_net
from preedit.export.int8.reference import IntModel
from preedit.export.int8.write import INT8_MODEL_NAME, export_deterministic, load_int_model
from preedit.export.repository import export_model_repository
from preedit.network import NetConfig, PreEditorNet, load_checkpoint
from preedit.paths import clips_dir
from preedit.serve import ServerConfig, TritonServer

log = logging.getLogger(__name__)




# ---------------------------------------------------------------------------------------------
# Backends








# ---------------------------------------------------------------------------------------------
# Comparison (pure)
















# ---------------------------------------------------------------------------------------------
# The verification record and the deterministic export












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
    import onnx  # lazy: onnx


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

    if checkpoint is None:
        return perturbed_net(0), "perturbed_net(seed=0)"
    if Path(checkpoint).is_dir():
        return net_from_model_dir(checkpoint), f"{checkpoint} (ONNX initializers)"
    net, _ = load_checkpoint(checkpoint)
    return net, str(checkpoint)


def main(argv: Optional[List[str]] = None) -> int:
    """`preedit int8 measure`: the cross-backend mismatch tables (Markdown)."""
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
