#!/usr/bin/env bash
# Runs on the GPU machine (device tool): installs the carried wheels, then the benchmarks given.
# Usage: bash bench/device_run.sh "python3 bench/train_bench.py" "python3 bench/generate_bench.py"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MODEL_DIR=/tmp/models LOG_JSON=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
i=0
for cmd in "$@"; do
  i=$((i+1))
  echo "=== $cmd"
  ( set -o pipefail; eval "$cmd" 2>&1 | tee "${OUT:-/tmp}/bench-$i.log" )
done
