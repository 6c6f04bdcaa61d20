#!/usr/bin/env bash
# The GPU fast path on one H100/H200-class GPU, in under 8 minutes (issue 17): appends rows to
# bench/results/train_throughput.json and bench/results/latency.json (see bench/gpu_bench.py for the parts).
#
#   bash bench/gpu.sh                 # from the repository root, with the project's .venv (or python on PATH)
#   BUDGET=300 bash bench/gpu.sh      # a shorter time box (seconds for the whole run; default 440)
#   PARTS=latency_maniflow,latency_dp3 bash bench/gpu.sh
#
# Each part runs in its own process with its own time box; one that fails or runs out of time is recorded as a row
# with `error` and the rest still run. The whole script is also cut at 475 s, so the run stays under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}; [ -x "$PY" ] || PY=python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} WANDB_MODE=offline PYTHONWARNINGS=ignore
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/maniflow_inductor_cache}   # shared by the two compiled trainers
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "gpu.sh: no GPU (nvidia-smi failed)"; exit 1; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1
start=$(date +%s)
timeout -k 5 475 "$PY" bench/gpu_bench.py --device cuda --budget "${BUDGET:-440}" ${PARTS:+--parts "$PARTS"} "$@"
rc=$?
echo "gpu.sh: exit $rc after $(( $(date +%s) - start )) s; rows appended to bench/results/{train_throughput,latency}.json"
exit $rc
