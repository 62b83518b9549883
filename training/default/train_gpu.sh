#!/bin/bash
# How the shipped model was trained: on a lent H100 (no PyAV there), from the repo root, with
#   preedit train --write-bank .gpu/bank.npz     (here, on CPU: decode + cut the training sequences)
#   cp -r <site-packages>/{vmaf_torch,pytorch_msssim,yuvio} .gpu/site/
#   OUT=<results dir> BUDGET=5.0 bash training/default/train_gpu.sh "base:" "rate2:loss.rate_weight=2.0" "q:loss.rate_weight=0.5,loss.vmaf_weight=1.5"
# Each NAME:KEY=VALUE,... runs `preedit train` with those --set overrides, in parallel on the one GPU.
# GPU training of variants of the default config (run on the device machine from the repo root).
set -u
mkdir -p /tmp/pkg/preedit && cp -r preedit/* /tmp/pkg/preedit/ && ln -sfn $PWD/training /tmp/pkg/preedit/training && ln -sfn $PWD/perf /tmp/pkg/preedit/perf
export PYTHONPATH=/tmp/pkg:$PWD/.gpu/site PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-5.5}
nvidia-smi --query-gpu=name,memory.used --format=csv > $OUT/log.txt
run() {  # name, extra args
  local name=$1; shift
  python3 -P -c "from preedit.training.cli import main; import sys; sys.exit(main(sys.argv[1:]))" \
    --config training/default/config.yaml --out /tmp/runs/$name --bank ${BANK:-.gpu/bank.npz} --no-validate --device ${DEVICE:-cuda} \
    --time-budget-min $BUDGET "$@" > /tmp/runs-$name.log 2>&1
  mkdir -p $OUT/$name && cp /tmp/runs/$name/model.pt /tmp/runs/$name/last.pt $OUT/$name/ 2>/dev/null
  tr '\r' '\n' < /tmp/runs-$name.log | grep -v "^$" | tail -n 4 >> $OUT/log.txt
}
mkdir -p /tmp/runs
for spec in "$@"; do
  name=${spec%%:*}; sets=${spec#*:}
  args=(); IFS=',' read -ra kv <<< "$sets"; for x in "${kv[@]}"; do [ -n "$x" ] && [ "$x" != "$name" ] && args+=(--set "$x"); done
  run $name "${args[@]}" &
done
wait
nvidia-smi --query-gpu=name,memory.used --format=csv >> $OUT/log.txt
