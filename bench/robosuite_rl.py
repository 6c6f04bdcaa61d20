"""robosuite Lift, state observations: vectorized-env timing (in-process vs spawned workers), scripted-expert success,
scripted demos -> ManiFlow BC (legacy trainer) -> PPO with flow_sde -> success before / after (Euler sampling).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python bench/robosuite_rl.py [--demos 20] [--bc-epochs 60] [--total-timesteps 12000]
        [--eval-episodes 20] [--max-steps 200] [--no-record] [override ...]

Writes bench/results/robosuite_rl.json. Until `maniflow_nb.rl.make_env` knows robosuite, this script installs the hook
itself (`_make_env` below: the same three lines the RL module needs)."""
import os
os.environ.setdefault('MUJOCO_GL', 'egl')
import argparse, datetime, json, platform, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, torch
from _common import cpu_name
from maniflow_nb.config import compose_config, to_plain
import maniflow_nb.rl as rl
from maniflow_nb.checkpoint import load_checkpoint
from maniflow_nb.robosuite_env import (ROBOSUITE_TASKS, RobosuiteExpertPolicy, RobosuiteRunner, RobosuiteVecEnv, robosuite_demos,
                                       state_dim, vecenv_from_config)

RESULTS = Path(__file__).resolve().parent/'results'/'robosuite_rl.json'
BIN = Path(sys.executable).parent
_metaworld_make_env = rl.make_env

def _make_env(cfg, pcfg, num_envs:int):
    "rl.make_env with the robosuite family (the hook maniflow_nb.rl needs)."
    r = cfg.task.env_runner
    if r.get('type') == 'robosuite': return vecenv_from_config(r, to_plain(pcfg.task.shape_meta), num_envs, cfg.task.get('dataset_path'))
    return _metaworld_make_env(cfg, pcfg, num_envs)

def meta(task): return {'obs': {'agent_pos': {'shape': [state_dim(task)], 'type': 'low_dim', 'store_key': 'state'}}, 'action': {'shape': [7]}}

def vecenv_timing(num_envs=4, steps=100) -> dict:
    "Env steps per second of RobosuiteVecEnv in process vs AsyncVectorEnv (spawn, one worker per env); random actions, creation excluded."
    out = {}
    for n_procs in (1, 2):
        env = RobosuiteVecEnv('Lift', meta('Lift'), num_envs, max_steps=10_000, n_procs=n_procs)
        try:
            env.reset(0); g = torch.Generator().manual_seed(0); active = torch.ones(num_envs, dtype=torch.bool)
            t0 = time.time()
            for _ in range(steps): env.step(torch.rand(num_envs, 7, generator=g) * 2 - 1, active)
            out['sync' if n_procs == 1 else 'async_spawn'] = round(num_envs * steps / (time.time() - t0), 1)
        finally: env.close()
    return out | {'num_envs': num_envs, 'steps_per_env': steps, 'faster': max(('sync', 'async_spawn'), key=lambda k: out[k]), 'cores': os.cpu_count()}

def expert_success(n_episodes) -> dict:
    "Scripted-expert success per task (vectorized runner, 10 envs at a time)."
    res = {}
    for task in ROBOSUITE_TASKS:
        r = RobosuiteRunner(task, meta(task), n_obs_steps=2, n_action_steps=1, max_steps=400, n_episodes=n_episodes, num_envs=10).run(RobosuiteExpertPolicy(task))
        res[task] = {'success': r['test_mean_score'], 'mean_length': r['mean_length'], 'episodes': n_episodes}
    return res

def pretrain(a, tmp) -> Path:
    "Demos (in process) and a BC checkpoint (maniflow-train, legacy trainer)."
    store, rd = Path(tmp)/'lift.zarr', Path(tmp)/'bc'
    robosuite_demos('Lift', a.demos, store, max_steps=a.max_steps, progress=False)
    subprocess.run([BIN/'maniflow-train', '--config-name', 'maniflow_state_robosuite', 'trainer=legacy', 'trainer.accelerator=cpu',
                    'trainer.progress_bar=false', 'logger.tensorboard=false', f'task.dataset_path={store}', f'run_dir={rd}',
                    f'training.num_epochs={a.bc_epochs}', 'training.learning_rate=1e-3', 'training.lr_warmup_steps=50',
                    'training.sample_every=0', 'training.ema_decay=0.999', 'policy.num_inference_steps=4'], check=True)
    return rd/'checkpoints'/'latest.ckpt'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--demos', type=int, default=20); p.add_argument('--bc-epochs', type=int, default=60)
    p.add_argument('--total-timesteps', type=int, default=12000); p.add_argument('--eval-episodes', type=int, default=20)
    p.add_argument('--expert-episodes', type=int, default=20); p.add_argument('--num-envs', type=int, default=8)
    p.add_argument('--max-steps', type=int, default=200); p.add_argument('--learning-rate', type=float, default=2e-5)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--no-record', action='store_true')
    p.add_argument('overrides', nargs='*', help='more train_maniflow_state_rl_lift overrides')
    a = p.parse_args()
    t_all = time.time()
    timing = vecenv_timing(); print('vecenv', timing, flush=True)
    experts = expert_success(a.expert_episodes); print('experts', experts, flush=True)
    rl.make_env = _make_env
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time(); ck = pretrain(a, tmp); bc_seconds = time.time() - t0
        ov = [f'run_dir={tmp}/rl', f'policy.checkpoint={ck}', 'policy.horizon=null', 'policy.n_action_steps=null', 'policy.num_inference_steps=null',
              f'task.env_runner.num_episodes={a.eval_episodes}', f'task.env_runner.max_steps={a.max_steps}',
              f'training.num_steps_per_rollout={-(-a.max_steps // 8)}', f'training.total_timesteps={a.total_timesteps}',
              f'training.num_envs={a.num_envs}', f'training.learning_rate={a.learning_rate}', 'training.critic_warmup_iters=1',
              'training.device=cpu', f'seed={a.seed}', *a.overrides]
        rec = rl.run_rl(compose_config('train_maniflow_state_rl_lift', ov))
        steps = load_checkpoint(rec['checkpoint'])['env_steps']
    row = {'device': f'{cpu_name()}, load avg {os.getloadavg()[0]:.1f}', 'torch': torch.__version__, 'platform': platform.platform(),
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), 'task': 'Lift', 'obs': 'state (19-d robomimic low-dim)',
           'policy': 'maniflow_state', 'sampler_eval': 'euler', 'params': {k: v for k, v in vars(a).items() if k != 'no_record'},
           'vecenv_steps_per_second': timing, 'expert_success': experts,
           'success_before': rec['before']['success_rate'], 'success_after': rec['after']['success_rate'],
           'eval_episodes': a.eval_episodes, 'eval_seed': a.seed + 10_000, 'env_steps': steps, 'bc_seconds': round(bc_seconds, 1),
           'rl_seconds': round(rec['rl_seconds'], 1), 'wall_seconds': round(time.time() - t_all, 1)}
    print(json.dumps(row, indent=1))
    if not a.no_record: RESULTS.write_text(json.dumps(row, indent=1) + '\n')

if __name__ == '__main__': main()
