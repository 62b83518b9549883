"""`preedit verify`: does this machine reproduce the deterministic model bit for bit?

```
 model_repository/preedit_int8/contract.json ── verification: clip, QPs, per-frame sha256 (in + out)
 shared clip (raw .yuv: no decoder in the loop) ──> backend(s) on this machine ──> per-frame sha256
   all equal → exit 0 · first differing frame reported → exit 8 (VerifyError)
```
Backends: `ort` (ONNX Runtime, the serving path), `numpy` (integer reference), `torch-<engine>`
(PyTorch quantized engine, e.g. torch-fbgemm), `torch-fp32-cpu` / `torch-fp32-cuda` (fp32 ops on
integer values, the GPU path), `triton` (the served model; `--url` or an embedded server started
on the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from preedit.engines import OrtEngine, TritonEngine
from preedit.errors import InputError, ModelError, UsageError, VerifyError
from preedit.export.int8.compare import first_mismatch, run_frames
from preedit.export.int8.frames import load_frames
from preedit.export.int8.reference import reference_forward
from preedit.export.int8.torch import TorchFloatIntPreEditor, TorchInt8PreEditor
from preedit.export.int8.write import INT8_MODEL_NAME, load_int_model
from preedit.paths import clips_dir, model_repository
from preedit.serve import ServerConfig, TritonServer

log = logging.getLogger(__name__)

STATIC_BACKENDS = ("ort", "ort-1thread", "numpy", "torch-fp32-cpu", "torch-fp32-cuda", "triton")


def read_record(model_dir: Path) -> Dict:
    """The verification record written by `export_deterministic` (contract.json)."""
    path = Path(model_dir) / "contract.json"
    if not path.is_file():
        raise ModelError(f"no contract.json in {model_dir}; export with `preedit export --deterministic`")
    meta = json.loads(path.read_text())
    record = meta.get("verification")
    if not meta.get("deterministic") or not record:
        raise ModelError(f"{model_dir.name} is not a deterministic model (no verification record); "
                         f"export one with `preedit export --deterministic`")
    record = dict(record)
    record["model_sha256"] = meta.get("model_sha256")
    record["int_model_sha256"] = meta.get("int_model_sha256")
    record["quant_scheme"] = meta.get("quant_scheme")
    return record


def _runner(name: str, model_dir: Path, model_name: str, url: Optional[str], stack: List):
    if name in ("ort", "ort-1thread"):
        onnx = (model_dir / "1" / "model.onnx").read_bytes()
        return OrtEngine(onnx, threads=1 if name == "ort-1thread" else 0)
    if name == "numpy":
        model = load_int_model(model_dir)
        return lambda x, q: reference_forward(model, x, q)
    if name in ("torch-fp32-cpu", "torch-fp32-cuda"):
        return TorchFloatIntPreEditor(load_int_model(model_dir), name.rsplit("-", 1)[1])
    if name.startswith("torch-"):
        return TorchInt8PreEditor(load_int_model(model_dir), name[len("torch-"):])
    if name == "triton":
        if url is None:
            server = TritonServer(ServerConfig(model_repository=model_dir.parent, http_port=0, grpc_port=0,
                                               metrics_port=0, models=[model_name]))
            server.start()
            stack.append(server)
            server.wait_model_ready(model_name, 120)
            url = server.http_url
        return TritonEngine(url, model_name, protocol="http", max_batch=None, check_ready=False)
    raise UsageError(f"unknown backend {name!r}; valid: {', '.join(STATIC_BACKENDS)}, torch-<engine>")


def verify(model_dir: Path, backends: List[str], url: Optional[str] = None,
           clip_dir: Optional[Path] = None) -> List[Dict]:
    """Replay the record on each backend; returns one result per backend, raises on the first mismatch.

    Raises:
        ModelError: no record, or the model file differs from the exported one.
        InputError: the clip is missing or decodes to different input frames.
        VerifyError: a backend's output differs from the recorded digests.
    """
    model_dir = Path(model_dir)
    record = read_record(model_dir)
    onnx_path = model_dir / "1" / "model.onnx"
    if record.get("model_sha256") and onnx_path.is_file():
        actual = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        if actual != record["model_sha256"]:
            raise ModelError(f"{onnx_path} sha256 {actual[:12]} differs from the exported {record['model_sha256'][:12]}")
    clip = Path(clip_dir or clips_dir()) / record["clip"]
    frames = load_frames(clip, record["frames"])
    bad = first_mismatch(record["input_sha256"], frames)
    if bad is not None:
        raise InputError(f"clip {clip.name} differs from the one the reference was recorded on "
                         f"(input frame {bad['frame']}: {bad['reason']}); get the shared clip set")
    results = []
    stack: List = []
    try:
        for name in backends:
            runner = _runner(name, model_dir, model_dir.name, url, stack)
            try:
                outputs = run_frames(runner, frames, record["qps"])
            finally:
                getattr(runner, "close", lambda: None)()
            bad = first_mismatch(record["output_sha256"], outputs)
            if bad is not None:
                detail = ""
                if (model_dir / "1" / "int_model.npz").is_file():
                    model = load_int_model(model_dir)
                    i = bad["frame"]
                    want = reference_forward(model, frames[i][None], np.array([[record["qps"][i]]], np.float32))[0]
                    diff = np.argwhere(outputs[i] != want)
                    if len(diff):
                        row, col = (int(v) for v in diff[0])
                        plane = "Y" if row < want.shape[0] * 2 // 3 else "UV"
                        detail = f"; {len(diff)} pixels differ from the integer reference, first at {plane} row {row} col {col}"
                raise VerifyError(f"{name}: frame {bad['frame']} of {clip.name} (QP {record['qps'][bad['frame']]}) "
                                  f"does not match the recorded digest{detail}")
            results.append({"backend": name, "frames": len(outputs), "sha256": record["sha256"], "ok": True})
    finally:
        for server in stack:
            server.stop(timeout_s=10)
    return results


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="model repository (default: the project's model_repository/)")
    parser.add_argument("--model", default=INT8_MODEL_NAME, help=f"deterministic model name (default {INT8_MODEL_NAME})")
    parser.add_argument("--backend", action="append", default=None,
                        help="backend to check, repeatable: ort, ort-1thread, numpy, torch-<engine> "
                             "(fbgemm, qnnpack, x86, onednn), torch-fp32-cpu, torch-fp32-cuda (fp32 on integers), "
                             "triton (default: ort and numpy)")
    parser.add_argument("--url", default=None, help="HTTP host:port of a running Triton (with --backend triton)")
    parser.add_argument("--clips-dir", type=Path, default=None, help="shared clip set (default: ../shared/data/clips)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit verify", description=__doc__.split("\n")[0])).parse_args(argv)
    repo = args.model_repository or model_repository()
    model_dir = Path(repo) / args.model
    if not model_dir.is_dir():
        raise ModelError(f"model {args.model!r} not found in {repo}; export it with `preedit export --deterministic`")
    backends = args.backend or ["ort", "numpy"]
    results = verify(model_dir, backends, url=args.url, clip_dir=args.clips_dir)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"ok: {r['backend']}: {r['frames']}/{r['frames']} frames match (sha256 {r['sha256'][:16]})")
    return 0
