#!/usr/bin/env bash
# One prepared check of the GPU path for a lent GPU host (issue 18; docs/gpu.md "gpu_check.sh").
#
#   bash deploy/gpu_check.sh [--list] [--out FILE]
#
# Runs in <= 8 minutes (each step under `timeout`, steps skipped once the budget is spent), needs no
# network (only what the working tree and the host carry), and writes ONE results file (default
# $OUT/gpu_check.txt when $OUT is set, else perf/results/gpu_check.txt): per step its command,
# exit status, seconds and the tail of its output, and every step it could not run with why.
# Steps: driver, torch CUDA, doctor, the needs_cuda tests, NVDEC/NVENC probe + CUDA bench, CUDA-shm
# round trip, URL input through NVDEC (file:// MKV and MPEG-TS vs the CPU decoder), the served
# pipeline on CUDA, and libvmaf_cuda vs CPU libvmaf (where this FFmpeg has libvmaf_cuda).
# --list prints the steps (name <TAB> timeout_s <TAB> command) and runs nothing; a unit test
# checks that every listed command exists and parses.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
CLIP=${GPU_CHECK_CLIP:-../shared/data/clips/asl-bird.mkv}
OUTFILE=${OUT:+$OUT/gpu_check.txt}
OUTFILE=${OUTFILE:-perf/results/gpu_check.txt}
LIST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --list) LIST=1 ;;
    --out) OUTFILE=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --list or --out FILE)" >&2; exit 2 ;;
  esac
  shift
done

# name|timeout_s|needs|command   (needs: comma-separated, checked before running)
STEPS=(
  "env|15|nvidia-smi|nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv"
  "torch_cuda|25|cuda|$PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
  "doctor|35|cuda|$PY -m preedit.cli doctor --json"
  "needs_cuda_tests|110|cuda|env FAIL_WITHOUT_CUDA=1 $PY -m pytest -q -x -m needs_cuda tests"
  "nvdec_nvenc_probe_and_cuda_bench|100|cuda,pynvvideocodec|$PY -m preedit.cli doctor --bench --quick --bench-out \${STEP_DIR}/probe.json"
  "cuda_shm_round_trip|25|cuda,cudashm|$PY deploy/gpu_check_cudashm.py"
  "url_input_nvdec|40|cuda,pynvvideocodec|$PY deploy/gpu_check_url_nvdec.py --frames 60 $CLIP"
  "served_pipeline_cuda|85|cuda,tritonserver|$PY -m preedit.cli run --device cuda --codec hevc -o \${STEP_DIR}/served.mkv $CLIP"
  "vmaf_cuda_vs_cpu|45|cuda,libvmaf_cuda|$PY deploy/gpu_check_vmaf_cuda.py --frames 60"
)

have() {  # why the first missing need (comma-separated) is missing, or nothing
  local n why
  for n in ${1//,/ }; do why=$(have_one "$n"); [ -n "$why" ] && { echo "$why"; return; }; done
}

have_one() {
  case "$1" in
    nvidia-smi) command -v nvidia-smi >/dev/null || echo "no nvidia-smi on PATH (no NVIDIA driver)" ;;
    cuda) echo "$CUDA_WHY" ;;  # asked once below (each torch import costs seconds)
    pynvvideocodec) $PY -c 'import PyNvVideoCodec' 2>/dev/null \
            || echo "PyNvVideoCodec not importable (pip install -e '.[gpu-client]')" ;;
    cudashm) $PY -W ignore -c 'import tritonclient.utils.cuda_shared_memory' 2>/dev/null \
            || echo "tritonclient CUDA-shm module does not import (pip install -e '.[gpu-client]')" ;;
    tritonserver) $PY -c 'import pytriton' 2>/dev/null || echo "no embedded tritonserver (nvidia-pytriton)" ;;
    libvmaf_cuda) $PY -c 'import sys; from preedit.quality.ffmpeg import ffmpeg_has_filter as h; sys.exit(0 if h("libvmaf_cuda") else 1)' 2>/dev/null \
            || echo "this FFmpeg has no libvmaf_cuda filter (IMAGEIO_FFMPEG_EXE=<an FFmpeg built with --enable-libvmaf-cuda>)" ;;
  esac
}

if [ "$LIST" = 1 ]; then
  for s in "${STEPS[@]}"; do IFS='|' read -r name t need cmd <<<"$s"; printf '%s\t%s\t%s\n' "$name" "$t" "$cmd"; done
  exit 0
fi

mkdir -p "$(dirname "$OUTFILE")"
STEP_DIR=$(mktemp -d /tmp/preedit_gpu_check.XXXXXX); export STEP_DIR
trap 'rm -rf "$STEP_DIR"' EXIT
START=$(date +%s)
CUDA_WHY=$($PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
  || echo "torch sees no CUDA device")
{
  echo "# preedit gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo "# budget ${BUDGET_S}s; clip $CLIP"
} >"$OUTFILE"
NOT_RUN=()
for s in "${STEPS[@]}"; do
  IFS='|' read -r name t need cmd <<<"$s"
  used=$(( $(date +%s) - START ))
  if [ $(( used + t )) -gt "$BUDGET_S" ]; then NOT_RUN+=("$name: time budget spent (${used}s used)"); continue; fi
  why=$(have "$need")
  if [ -n "$why" ]; then NOT_RUN+=("$name: $why"); continue; fi
  t0=$(date +%s)
  out=$(eval "timeout --kill-after=5 $t $cmd" 2>&1); rc=$?
  {
    echo; echo "## $name  rc=$rc  $(( $(date +%s) - t0 ))s"; echo "\$ $cmd"
    printf '%s\n' "$out" | tail -n 40
    [ -f "$STEP_DIR/probe.json" ] && [ "$name" = nvdec_nvenc_probe_and_cuda_bench ] && cat "$STEP_DIR/probe.json"
  } >>"$OUTFILE"
  [ "$rc" = 124 ] && NOT_RUN+=("$name: timed out after ${t}s")
done
$PY -c 'import torch_tensorrt' 2>/dev/null || NOT_RUN+=("tensorrt_export (preedit export --target tensorrt): torch_tensorrt not installed on this host")
{
  echo; echo "## not run"
  if [ ${#NOT_RUN[@]} -eq 0 ]; then echo "(everything ran)"; else printf -- '- %s\n' "${NOT_RUN[@]}"; fi
  echo; echo "# total $(( $(date +%s) - START ))s"
} >>"$OUTFILE"
echo "gpu_check: wrote $OUTFILE"
