#!/usr/bin/env bash
# The default job behind `make train`: train a small ManiFlow with Lightning on the MetaWorld store, evaluate it
# in simulation, and say where everything is. Sizes are CPU-friendly; override with env vars.
set -euo pipefail
DATA=${1:-data/metaworld_reach.zarr}
CONFIG=${CONFIG:-maniflow_pointcloud_metaworld}
RUN=${RUN:-runs/quickstart}
EPOCHS=${EPOCHS:-60}
EVAL_EPISODES=${EVAL_EPISODES:-10}
BIN=.venv/bin
start=$(date +%s)
$BIN/maniflow-train --config-name "$CONFIG" task.dataset_path="$DATA" run_dir="$RUN" \
  training.num_epochs="$EPOCHS" training.batch_size=64 training.val_every=10 training.sample_every=10 \
  training.checkpoint_every=10 training.lr_warmup_steps=50 trainer=lightning ${EXTRA:-}
ckpt="$RUN/checkpoints/last.ckpt"
[ -f "$ckpt" ] || ckpt=$(ls -t "$RUN"/checkpoints/*.ckpt | head -1)
$BIN/maniflow-eval "$ckpt" --episodes "$EVAL_EPISODES" --seeds 0 --video
echo
echo "== make train finished in $(( $(date +%s) - start )) s =="
echo "run dir:     $RUN"
echo "config:      $RUN/config.yaml"
echo "checkpoints: $(ls "$RUN"/checkpoints | tr '\n' ' ')"
echo "metrics:     $RUN/metrics.csv"
echo "evaluation:  $RUN/eval.json: $(cat "$RUN"/eval.json 2>/dev/null | tr -d '\n' | head -c 300)"
echo "videos:      $(ls "$RUN"/videos 2>/dev/null | head -3 | tr '\n' ' ')"
