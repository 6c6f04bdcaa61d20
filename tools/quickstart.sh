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
  training.num_epochs="$EPOCHS" n_action_steps="$TA" trainer=lightning logger=default ${EXTRA:-}
trained=$(date +%s)
# The last checkpoint is evaluated: a flow policy's val_loss (noise-to-action regression) says little about its
# success rate, and the last weights have seen the whole schedule. Both are named, with their val_loss.
ckpt="$RUN/checkpoints/last.ckpt"
[ -f "$ckpt" ] || ckpt=$(ls -t "$RUN"/checkpoints/*.ckpt | head -1)
best=$(ls "$RUN"/checkpoints/epoch=*-val_loss=*.ckpt 2>/dev/null | head -1 || true)
last_val=$($BIN/python -c "import csv,sys; v=[r['val_loss'] for r in csv.DictReader(open(sys.argv[1])) if r.get('val_loss')]; print(f'{float(v[-1]):.4f}' if v else '?')" "$RUN/metrics.csv" 2>/dev/null || echo '?')
echo "evaluating $ckpt (the last checkpoint, val_loss $last_val); best by val_loss: ${best:-none} (${best:+val_loss $(basename "$best" .ckpt | sed 's/.*val_loss=//')})"
$BIN/maniflow-eval "$ckpt" --episodes "$EVAL_EPISODES" --seeds "$EVAL_SEEDS" --video
end=$(date +%s)
curves=""
if [ -x "$BIN/maniflow-plot" ]; then $BIN/maniflow-plot "$RUN" --out "$RUN/curves.png" >/dev/null && curves="$RUN/curves.png"
else curves=$($BIN/python -c 'from maniflow_nb.dashboard import plot_cli; plot_cli()' "$RUN" --out "$RUN/curves.png" >/dev/null 2>&1 && echo "$RUN/curves.png" || true); fi
echo
echo "== make train finished in $(( end - start )) s (training $(( trained - start )) s, evaluation $(( end - trained )) s) =="
echo "run dir:     $RUN"
echo "config:      $RUN/config.yaml"
echo "checkpoints: $RUN/checkpoints/: $(ls "$RUN"/checkpoints | tr '\n' ' ')"
echo "metrics:     $RUN/metrics.csv"
echo "evaluation:  $RUN/eval.json (success rate $($BIN/python -c "import json,sys; print(json.load(open(sys.argv[1]))['test_mean_score'])" "$RUN/eval.json" 2>/dev/null || echo '?') over $EVAL_EPISODES episodes x seeds $EVAL_SEEDS)"
echo "curves:      ${curves:-(maniflow-plot not installed: open $RUN/metrics.csv)}"
echo "video grid:  $(ls "$RUN"/videos/"$TASK"_seed*.mp4 "$RUN"/videos/"$TASK"_seed*.gif 2>/dev/null | grep -v '_ep[0-9]' | tr '\n' ' ')"
echo "videos:      $RUN/videos/ ($(ls "$RUN"/videos 2>/dev/null | wc -l) files: a grid per seed and the first episodes, labelled)"
echo "tensorboard: tensorboard --logdir $RUN/tensorboard   (runs 'train' and 'eval': curves, action chunks, rollout frames)"
