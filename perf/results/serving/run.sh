#!/bin/bash
# Issue 14 measurement: one `preedit bench --rounds 3` run per resolution, plus the old serving shape
# (1 instance x all threads, 2000 us delay) for the profile comparison. Run from the repo root.
set -u
OUT=${OUT:-out/serving}; mkdir -p $OUT
.venv/bin/preedit bench --resolution 1080p --rounds 3 --json $OUT/b1080.json --results-md perf/results/perf.md --benchmarks-md BENCHMARKS.md > $OUT/b1080.txt 2>&1
.venv/bin/preedit bench --resolution 720p --rounds 3 --json $OUT/b720.json --results-md perf/results/perf.md --benchmarks-md BENCHMARKS.md > $OUT/b720.txt 2>&1
# old shape for comparison (same ONNX, same template; only the config differs)
OLD=$(mktemp -d); cp -r model_repository/preedit $OLD/
sed -i 's/  count: 2/  count: 1/; s/^dynamic_batching {$/dynamic_batching {\n  max_queue_delay_microseconds: 2000/' $OLD/preedit/config.pbtxt
printf 'parameters {\n  key: "allow_spinning"\n  value {\n    string_value: "1"\n  }\n}\n' >> $OLD/preedit/config.pbtxt
.venv/bin/preedit bench --resolution 1080p --rounds 3 --only inprocess --only triton --model-repository $OLD --json $OUT/b1080_old.json > $OUT/b1080_old.txt 2>&1
rm -rf $OLD
