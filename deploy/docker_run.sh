#!/usr/bin/env bash
# The `docker run` equivalent of deploy/docker-compose.yml (see docs/gpu.md).
#
#   TRITON_TAG=25.10-py3 PREEDIT_MODEL=preedit_onnx_trt deploy/docker_run.sh
#   TRITON_TAG=26.05-py3 TRITON_SHM_FLAG=--allow-client-shm=true deploy/docker_run.sh   # Triton >= 2.69
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TRITON_TAG="${TRITON_TAG:-25.10-py3}"
MODEL="${PREEDIT_MODEL:-preedit_onnx_trt}"
GPU="${NVIDIA_VISIBLE_DEVICES:-0}"
extra=()
if [[ -n "${TRITON_SHM_FLAG:-}" ]]; then
  extra+=("${TRITON_SHM_FLAG}")
fi
exec docker run --rm -d --name preedit-triton \
  --gpus "device=${GPU}" \
  -e NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
  --pid=host --ipc=host --shm-size=2g \
  --ulimit memlock=-1 --ulimit stack=67108864 \
  --network=host \
  -v "${REPO_ROOT}/model_repository:/models" \
  "nvcr.io/nvidia/tritonserver:${TRITON_TAG}" \
  tritonserver --model-repository=/models --model-control-mode=explicit --load-model="${MODEL}" \
    --strict-readiness=true --allow-metrics=true --allow-gpu-metrics=true "${extra[@]}"
