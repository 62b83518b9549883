"""Write a validated model into a Triton model repository.

```
 model_repository/<name>/
   config.pbtxt        generated from preedit/spec.py (python backend, KIND_CPU, dynamic batching)
   contract.json       preprocessing contract, content hash, provenance, export check
   1/model.py          python-backend model running ONNX Runtime (export/templates/)
   1/model.onnx        the network, dynamic batch/height/width
```
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Optional

import torch

from preedit import __version__
from preedit.network import PreEditorNet
from preedit.spec import CONTRACT, DEFAULT_QP, FRAMES_IN, FRAMES_OUT, QP_IN

from preedit.export.model_config import build_model_config, write_model_config
from preedit.export.onnx_export import OPSET, export_checked, sha256_hex, write_onnx

TEMPLATE = Path(__file__).resolve().parent / "templates" / "python_onnx_model.py"


# CPU serving shape (issue 14): two instances, each with its share of the cores (intra_op_threads 0 =
# auto in the template), and no batching delay. On CPU a batch costs at least as much per frame as
# single frames (two merged 720p frames ~17 % more: cache), so waiting to batch only adds latency and
# the template runs the requests it is handed one by one (its `merge_requests` parameter); one
# instance leaves the cores idle while it is between requests (gRPC, copies, stub hand-off); two
# overlap that with compute.
CPU_INSTANCES = 2
CPU_QUEUE_DELAY_US = 0


def cpu_model_config(name: str, *, max_batch_size: int = 8, instance_count: int = CPU_INSTANCES,
                     max_queue_delay_us: int = CPU_QUEUE_DELAY_US, intra_op_threads: int = 0,
                     onnx_file: str = "model.onnx", extra_parameters: Optional[Mapping[str, str]] = None) -> dict:
    """config.pbtxt dict of the CPU variant: python backend running ONNX Runtime."""
    parameters = {
        "onnx_file": onnx_file,
        "default_qp": str(DEFAULT_QP),
        "intra_op_threads": str(intra_op_threads),
        "input_frames": FRAMES_IN.name,
        "input_qp": QP_IN.name,
        "output_frames": FRAMES_OUT.name,
        "contract": json.dumps({k: v for k, v in CONTRACT.to_dict().items() if k not in ("inputs", "outputs")}),
    }
    parameters.update(extra_parameters or {})
    return build_model_config(
        name, backend="python", max_batch_size=max_batch_size, instance_kind="KIND_CPU",
        instance_count=instance_count, max_queue_delay_us=max_queue_delay_us, parameters=parameters,
    )


def write_onnx_model(onnx_bytes: bytes, repo_dir: Path, model_name: str, *, version: int = 1,
                     metadata: Optional[Mapping] = None, **config_kwargs) -> Path:
    """Write any pre-editor ONNX graph (float or int8) as a served CPU model; returns its dir."""
    model_dir = Path(repo_dir) / model_name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    write_onnx(onnx_bytes, version_dir / "model.onnx")
    shutil.copyfile(TEMPLATE, version_dir / "model.py")
    write_model_config(cpu_model_config(model_name, **config_kwargs), model_dir / "config.pbtxt")
    contract = {
        "model_name": model_name,
        "model_sha256": sha256_hex(onnx_bytes),
        "contract": CONTRACT.to_dict(),
        "preedit_version": __version__,
        "torch_version": torch.__version__,
        "onnx_opset": OPSET,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    contract.update(metadata or {})
    (model_dir / "contract.json").write_text(json.dumps(contract, indent=2, sort_keys=True) + "\n")
    return model_dir


def export_model_repository(net: PreEditorNet, repo_dir: Path, model_name: str = "preedit", *,
                            version: int = 1, metadata: Optional[Mapping] = None, **config_kwargs) -> Path:
    """Export `net` to ONNX, check it against PyTorch, and write it as a served CPU model."""
    onnx_bytes, check = export_checked(net)
    meta = {"net_config": asdict(net.config), "export_check": check.to_dict()}
    meta.update(metadata or {})
    return write_onnx_model(onnx_bytes, repo_dir, model_name, version=version, metadata=meta, **config_kwargs)


def read_contract(model_dir: Path) -> dict:
    """The contract.json written next to a served model."""
    return json.loads((Path(model_dir) / "contract.json").read_text())
