"""Cross-machine check: replay this machine's float and int8 outputs on another machine (e.g. a GPU host).

```
 here:   prepare → bundle/{frames.npz, net.pt, int_model.npz, int8.onnx, float.onnx, expected.npz}
 there:  run     → float: torch CPU fp32, torch CUDA fp32 (TF32 off / on), CUDA fp16, ORT CPU
                   int8:  NumPy reference, ORT CPU (1 / all threads), PyTorch engines, torch CUDA (fp32 on ints)
                   each vs the outputs recorded here: share of pixels differing, max |diff|
```
Usage: `preedit int8 device prepare BUNDLE` here, then
`preedit int8 device run BUNDLE --json OUT.json` on the other machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from preedit.engines import OrtEngine
from preedit.export.int8.backends import float_backends, int8_backends
from preedit.export.int8.check import load_net
from preedit.export.int8.compare import frame_qps, mismatch, run_frames
from preedit.export.int8.frames import load_frames
from preedit.export.int8.onnx import build_onnx
from preedit.export.int8.reference import IntModel
from preedit.export.int8.torch import TorchFloatIntPreEditor
from preedit.export.int8.write import export_deterministic, load_int_model
from preedit.export.onnx_export import export_onnx_bytes
from preedit.network import NetConfig, NV12PreEditor, PreEditorNet
from preedit.paths import clips_dir

BUNDLE_CLIPS = (("park_joy_480x270_50fps.y4m", 4, None), ("CiscoVT2people_320x192_12fps.yuv", 4, None),
                ("flower.mp4", 3, 960))


def prepare(bundle: Path, checkpoint: Optional[Path] = None) -> None:

    bundle.mkdir(parents=True, exist_ok=True)
    net, source = load_net(checkpoint)
    frames = [f for name, n, w in BUNDLE_CLIPS for f in load_frames(clips_dir() / name, n, max_width=w)]

    with tempfile.TemporaryDirectory() as tmp:
        model = load_int_model(export_deterministic(net, Path(tmp)))
    (bundle / "int_model.npz").write_bytes(model.to_npz_bytes())
    (bundle / "int8.onnx").write_bytes(build_onnx(model))
    (bundle / "float.onnx").write_bytes(export_onnx_bytes(net))
    torch.save({"config": net.config.__dict__, "state_dict": net.state_dict()}, bundle / "net.pt")
    qps = frame_qps(len(frames))
    expected = {}
    local_float = float_backends(net)
    local_int = int8_backends(model, engines=["fbgemm"])
    for kind, runner in (("float", local_float["torch-fp32"]), ("int8", local_int["numpy-ref"])):
        for i, out in enumerate(run_frames(runner, frames, qps)):
            expected[f"{kind}_{i}"] = out
    np.savez_compressed(bundle / "frames.npz", **{f"f{i}": f for i, f in enumerate(frames)})
    np.savez_compressed(bundle / "expected.npz", **expected)
    (bundle / "meta.json").write_text(json.dumps({"network": source, "frames": len(frames), "qps": qps,
                                                  "machine": platform.processor() or platform.machine()}))


def _cuda_float_runners(net) -> Dict:

    if not torch.cuda.is_available():
        return {}
    out = {}

    def make(tf32: bool, half: bool):
        gpu_net = copy.deepcopy(net).cuda().eval()
        if half:
            gpu_net = gpu_net.half()
        module = NV12PreEditor(gpu_net)

        def run(x: np.ndarray, q: np.ndarray) -> np.ndarray:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            with torch.no_grad():
                xt = torch.from_numpy(x).cuda()
                qt = torch.from_numpy(q).cuda()
                if half:
                    y = gpu_net(xt.half(), qt.half())
                    return torch.clamp(torch.round(y.float()), 0, 255).to(torch.uint8).cpu().numpy()
                return module(xt, qt).cpu().numpy()

        return run

    out["torch-cuda-fp32"] = make(False, False)
    out["torch-cuda-tf32"] = make(True, False)
    out["torch-cuda-fp16"] = make(False, True)
    return out


def run(bundle: Path) -> Dict:

    meta = json.loads((bundle / "meta.json").read_text())
    fz = np.load(bundle / "frames.npz")
    frames = [fz[f"f{i}"] for i in range(meta["frames"])]
    expected = np.load(bundle / "expected.npz")
    qps = meta["qps"]
    data = torch.load(bundle / "net.pt", map_location="cpu", weights_only=False)
    net = PreEditorNet(NetConfig(**data["config"]))
    net.load_state_dict(data["state_dict"])
    net.eval()
    model = IntModel.from_npz_bytes((bundle / "int_model.npz").read_bytes())
    report = {"recorded_on": meta, "machine": {"processor": platform.processor(), "machine": platform.machine(),
                                               "torch": torch.__version__,
                                               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    try:
        import onnxruntime  # lazy: optional dependency

        report["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    int8 = int8_backends(model, (bundle / "int8.onnx").read_bytes())
    if torch.cuda.is_available():
        int8["torch-cuda-fp32-int"] = TorchFloatIntPreEditor(model, "cuda")

        def tf32_runner(x, q, _r=TorchFloatIntPreEditor(model, "cuda")):
            torch.backends.cudnn.allow_tf32 = True
            try:
                return _r(x, q)
            finally:
                torch.backends.cudnn.allow_tf32 = False

        int8["torch-cuda-tf32-int"] = tf32_runner
    kinds = {"float": {**float_backends(net, (bundle / "float.onnx").read_bytes()), **_cuda_float_runners(net)},
             "int8": int8}
    for kind, backends in kinds.items():
        want = [expected[f"{kind}_{i}"] for i in range(len(frames))]
        rows: List[Dict] = []
        for name, runner in backends.items():
            try:
                got = run_frames(runner, frames, qps)
                rows.append({"backend": name, **mismatch(want, got)})
            except Exception as exc:  # report and go on: one missing backend must not hide the rest
                rows.append({"backend": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
        report[kind] = rows
    report["speed"] = speed(bundle, frames)
    return report


def speed(bundle: Path, frames: List[np.ndarray], repeats: int = 15) -> List[Dict]:
    """ORT CPU ms/frame, float vs int8 (QLinearConv and ConvInteger forms), interleaved runs, median."""

    model = IntModel.from_npz_bytes((bundle / "int_model.npz").read_bytes())
    graphs = {"float": (bundle / "float.onnx").read_bytes(), "int8-qlinear": build_onnx(model, "qlinear"),
              "int8-integer": build_onnx(model, "integer")}
    sizes = {}
    for f in frames:
        sizes.setdefault(f.shape, f)
    big = max(sizes.values(), key=lambda f: f.size)
    tiles = {"1280x720": np.ascontiguousarray(np.resize(big, (1080, 1280))), f"{big.shape[1]}x{big.shape[0] * 2 // 3}": big}
    rows = []
    for threads in (1, 0):
        runners = {name: OrtEngine(g, threads=threads) for name, g in graphs.items()}
        for label, frame in tiles.items():
            x, q = frame[None], np.full((1, 1), 32.0, dtype=np.float32)
            times: Dict[str, List[float]] = {name: [] for name in runners}
            for name, r in runners.items():
                r(x, q)
            for _ in range(repeats):
                for name, r in runners.items():
                    t0 = time.perf_counter()
                    r(x, q)
                    times[name].append((time.perf_counter() - t0) * 1000.0)
            for name, t in times.items():
                rows.append({"size": label, "threads": threads or "all", "graph": name,
                             "ms_median": statistics.median(t), "ms_min": min(t)})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="preedit int8 device", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["prepare", "run"])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.action == "prepare":
        prepare(args.bundle, args.checkpoint)
        return 0
    report = run(args.bundle)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
