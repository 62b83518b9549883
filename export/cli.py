"""`preedit export`: checkpoint (or an identity model) → model repository.

Targets: `onnx` (CPU default: python backend + ONNX Runtime), `tensorrt` and `onnx-trt` (GPU
hosts; see docs/gpu.md), and `--deterministic` (the statically quantized bit-exact model).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from preedit.errors import ModelError
from preedit.export.int8.write import export_deterministic
from preedit.export.repository import CPU_INSTANCES, CPU_QUEUE_DELAY_US, export_model_repository
from preedit.network import identity_model, load_checkpoint
from preedit.paths import model_repository

TARGETS = ("onnx", "tensorrt", "onnx-trt")


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="trained checkpoint (.pt) to export")
    src.add_argument("--identity", action="store_true", help="export an untrained (exact identity) model")
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: model_repository/)")
    parser.add_argument("--name", default=None, help="model name (default: preedit, preedit_int8 with --deterministic)")
    parser.add_argument("--target", choices=TARGETS, default="onnx", help="what to build (default: onnx)")
    parser.add_argument("--form", choices=("torchscript", "plan"), default="torchscript",
                        help="--target tensorrt: TorchScript for the pytorch backend, or a TensorRT model.plan")
    parser.add_argument("--deterministic", action="store_true", help="statically quantized, bit-exact int8 model")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--instances", type=int, default=None,
                        help=f"model instances (default {CPU_INSTANCES} on CPU, 1 on GPU targets)")
    parser.add_argument("--max-queue-delay-us", type=int, default=CPU_QUEUE_DELAY_US,
                        help=f"dynamic batching delay of the CPU variants (default {CPU_QUEUE_DELAY_US})")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads per instance (0 = auto: the cores shared among instances)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit export", description=__doc__.split("\n")[0])).parse_args(argv)
    repo = args.repository or model_repository()
    cpu_instances = args.instances or CPU_INSTANCES
    if args.identity:
        net, meta = identity_model(), {"source": "identity (untrained)"}
    else:
        net, extra = load_checkpoint(args.checkpoint)
        meta = {"source": str(args.checkpoint), "checkpoint_meta": extra}
    if args.deterministic:
        name = args.name or "preedit_int8"
        model_dir = export_deterministic(
            net, repo, model_name=name, metadata=meta,
            max_batch_size=args.max_batch_size, instance_count=cpu_instances,
            max_queue_delay_us=args.max_queue_delay_us, intra_op_threads=args.threads,
        )
    elif args.target == "onnx":
        name = args.name or "preedit"
        model_dir = export_model_repository(
            net, repo, name, metadata=meta, max_batch_size=args.max_batch_size,
            instance_count=cpu_instances, max_queue_delay_us=args.max_queue_delay_us,
            intra_op_threads=args.threads,
        )
    else:
        name = args.name or f"preedit_{args.target.replace('-', '_')}"
        from preedit.export.tensorrt import export_gpu  # lazy: torch-tensorrt / tensorrt on GPU hosts

        model_dir = export_gpu(args.target, net, repo, model_name=name, form=args.form,
                               instance_count=args.instances or 1, metadata=meta)
    if model_dir is None:
        raise ModelError("export wrote nothing")
    print(f"exported {name} -> {model_dir}")
    return 0
