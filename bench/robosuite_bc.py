"""robosuite behaviour cloning, state observations: scripted-expert demos -> ManiFlow BC (maniflow-train, legacy trainer,
the recipe of bench/robosuite_rl.py's BC start) -> Euler success of the final EMA policy over --eval-episodes episodes.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python bench/robosuite_bc.py --task PickPlaceCan [--demos 20] [--epochs 100]
        [--eval-episodes 50] [--max-steps 400] [--seed 0]

The row goes to `bc_success[<task>]` of bench/results/robosuite_rl.json (the other keys are kept)."""
import os
os.environ.setdefault('MUJOCO_GL', 'egl')
import argparse, datetime, json, platform, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from _common import cpu_name
from maniflow_nb.config import to_plain
from maniflow_nb.rl import load_pretrained
from maniflow_nb.ppo import evaluate_batched
from maniflow_nb.robosuite_env import RobosuiteVecEnv, robosuite_demos, state_dim
from robosuite_rl import record     # the results file's locked read-modify-write

BIN = Path(sys.executable).parent

def bc_command(a, store, rd) -> list:
    "The maniflow-train command (robosuite_rl.py's BC recipe, for --task)."
    return [str(BIN/'maniflow-train'), '--config-name', 'maniflow_state_robosuite', 'trainer=legacy', 'trainer.accelerator=cpu',
            'trainer.progress_bar=false', 'logger.tensorboard=false', f'task.dataset_path={store}', f'run_dir={rd}',
            f'task.env_runner.env_meta.env_name={a.task}', f'task.shape_meta.obs.agent_pos.shape=[{state_dim(a.task)}]',
            f'training.num_epochs={a.epochs}', 'training.learning_rate=1e-3', 'training.lr_warmup_steps=50',
            'training.sample_every=0', 'training.ema_decay=0.999', 'policy.num_inference_steps=4', f'training.seed={a.seed}']

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', default='PickPlaceCan'); p.add_argument('--demos', type=int, default=20)
    p.add_argument('--epochs', type=int, default=100); p.add_argument('--eval-episodes', type=int, default=50)
    p.add_argument('--num-envs', type=int, default=25); p.add_argument('--max-steps', type=int, default=400)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--no-record', action='store_true')
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, rd = Path(tmp)/'demos.zarr', Path(tmp)/'bc'
        t0 = time.time(); robosuite_demos(a.task, a.demos, store, max_steps=a.max_steps, seed=a.seed, progress=False); t_demo = time.time() - t0
        t0 = time.time(); subprocess.run(bc_command(a, store, rd), check=True); t_bc = time.time() - t0
        pol, pcfg = load_pretrained(rd/'checkpoints'/'last.ckpt', add_value_head=False)
        env = RobosuiteVecEnv(a.task, to_plain(pcfg.task.shape_meta), min(a.num_envs, a.eval_episodes), a.max_steps)
        t0 = time.time()
        try: r = evaluate_batched(pol, env, a.eval_episodes, seed=a.seed + 10_000)
        finally: env.close()
        t_eval = time.time() - t0
    row = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), 'device': cpu_name(), 'torch': torch.__version__,
           'platform': platform.platform(), 'obs': f'state ({state_dim(a.task)}-d robomimic low-dim)', 'policy': 'maniflow_state', 'sampler': 'euler, 4 steps',
           'success': round(r['success_rate'], 3), 'episode_length': round(r['episode_length'], 1), 'demo_seconds': round(t_demo, 1),
           'bc_seconds': round(t_bc, 1), 'eval_seconds': round(t_eval, 1), 'load_avg': round(os.getloadavg()[0], 1),
           'params': vars(a) | {'bc_command': bc_command(a, 'demos.zarr', 'bc')}}
    print(json.dumps(row, indent=1))
    if not a.no_record: record(lambda now: {'bc_success': now.get('bc_success', {}) | {a.task: row}})

if __name__ == '__main__': main()
