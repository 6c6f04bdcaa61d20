#!/usr/bin/env bash
# The default job behind `make train`: train a small ManiFlow point-cloud policy with Lightning on a MetaWorld
# store, evaluate it in simulation, and say where everything is. Sized for a 2-core CPU (about 10 minutes).
#   bash tools/quickstart.sh [STORE]       env: TASK CONFIG RUN EPOCHS TA EVAL_EPISODES EVAL_SEEDS EXTRA OMP_NUM_THREADS
# A second call with the same RUN resumes (or just re-evaluates) that run; use a new RUN for a fresh one.
set -euo pipefail
DATA=${1:-data/metaworld_reach-v3.zarr}
TASK=${TASK:-reach-v3}             # must be the task the store was recorded for (training checks it)
CONFIG=${CONFIG:-maniflow_pointcloud_metaworld}
RUN=${RUN:-runs/quickstart}
EPOCHS=${EPOCHS:-100}              # training/quickstart.yaml: ~500 optimizer steps at lr 1e-3 on 10 reach demos
TA=${TA:-2}                        # executed actions per policy call: 2 (closed loop) beats the config's 8 on reach-v3
EVAL_EPISODES=${EVAL_EPISODES:-20}
EVAL_SEEDS=${EVAL_SEEDS:-0}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # small models: one thread is as fast and does not fight other jobs
export MUJOCO_GL=${MUJOCO_GL:-egl} WANDB_MODE=${WANDB_MODE:-offline}
[ -e "$DATA" ] || { echo "quickstart: no store at $DATA (make it with maniflow-demos, see the Makefile)" >&2; exit 2; }
start=$(date +%s)
# shellcheck disable=SC2086
$BIN/maniflow-train --config-name "$CONFIG" task.dataset_path="$DATA" task.name="$TASK" run_dir="$RUN" training=quickstart \
  training.num_epochs="$EPOCHS" n_action_steps="$TA" trainer=lightning trainer.progress_bar=false logger=csv ${EXTRA:-}
trained=$(date +%s)
ckpt="$RUN/checkpoints/last.ckpt"
[ -f "$ckpt" ] || ckpt=$(ls -t "$RUN"/checkpoints/*.ckpt | head -1)
$BIN/maniflow-eval "$ckpt" --episodes "$EVAL_EPISODES" --seeds "$EVAL_SEEDS" --video
end=$(date +%s)
echo
echo "== make train finished in $(( end - start )) s (training $(( trained - start )) s, evaluation $(( end - trained )) s) =="
echo "run dir:     $RUN"
echo "config:      $RUN/config.yaml"
echo "checkpoints: $RUN/checkpoints/: $(ls "$RUN"/checkpoints | tr '\n' ' ')"
echo "metrics:     $RUN/metrics.csv"
echo "evaluation:  $RUN/eval.json (success rate $($BIN/python -c "import json,sys; print(json.load(open(sys.argv[1]))['test_mean_score'])" "$RUN/eval.json" 2>/dev/null || echo '?') over $EVAL_EPISODES episodes x seeds $EVAL_SEEDS)"
echo "videos:      $(ls -d "$RUN"/videos/* 2>/dev/null | tr '\n' ' ')"
