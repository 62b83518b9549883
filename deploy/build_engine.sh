#!/usr/bin/env bash
# Build the GPU model on the deployment host, inside the NGC PyTorch container whose YY.MM matches
# the Triton container (same TensorRT), on the GPU that will serve it. Engines are never committed.
#
#   TAG=25.10-py3 deploy/build_engine.sh --checkpoint runs/best.pt              # Torch-TensorRT
#   TAG=25.10-py3 deploy/build_engine.sh --identity                             # smoke test
#   deploy/build_engine.sh --checkpoint runs/best.pt --target onnx-trt          # portable; no container needed
#
# Arguments are passed to `preedit export` (default --target tensorrt).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TAG="${TAG:-25.10-py3}"
GPU="${NVIDIA_VISIBLE_DEVICES:-0}"
args=("$@")
if [[ ! " ${args[*]} " =~ " --target " ]]; then
  args+=(--target tensorrt)
fi
# --no-deps: keep the container's own torch / torch_tensorrt / tensorrt; add only what export needs
# (tritonclient's model_config proto renders config.pbtxt; onnx for the ONNX graph).
exec docker run --rm --gpus "device=${GPU}" \
  -v "${REPO_ROOT}:/workspace/preedit" -w /workspace/preedit \
  "nvcr.io/nvidia/pytorch:${TAG}" \
  bash -c 'set -e; pip install -q --no-deps -e . && pip install -q "tritonclient[grpc]" onnx onnxruntime pyyaml \
           && python -m preedit doctor --no-probe && python -m preedit export "$@"' _ "${args[@]}"
