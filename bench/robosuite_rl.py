"""robosuite Lift, state observations: vectorized-env timing (in-process vs spawned workers), scripted-expert success,
scripted demos -> ManiFlow BC (legacy trainer; the snapshot after --bc-snapshot-epochs of a --bc-epochs run, a deliberately
under-trained policy) -> PPO with flow_sde (train_maniflow_state_rl_lift's settings) -> success before / after (Euler).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python bench/robosuite_rl.py [--seed 0] [--bc-checkpoint CK] [--skip-env-checks]
        [--demos 20] [--bc-epochs 100] [--bc-snapshot-epochs 30] [--total-timesteps 40000] [--eval-episodes 20]
        [--num-envs 16] [--exploratory NOTE] [override ...]
    python bench/robosuite_rl.py --diagnose --bc-checkpoint CK   # how CK's Euler episodes fail; scene vs initial-noise dependence; stochastic vs Euler success

One seed per call (each under ~10 min on 2 cores); the row is stored under `rl_runs[seed]` of bench/results/robosuite_rl.json
(other seeds' rows kept; `--record-as KEY` stores it under `KEY[seed]` instead, e.g. the runs from the fully trained BC
policy: `--bc-checkpoint last-epoch=0099.ckpt --bc-snapshot-epochs 100 --record-as rl_runs_from_full_bc`). --bc-checkpoint reuses a BC checkpoint made by the same recipe (pretrain below)."""
import os
os.environ.setdefault('MUJOCO_GL', 'egl')
import argparse, datetime, json, platform, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, pandas as pd, torch
from _common import cpu_name
from maniflow_nb.config import compose_config, to_plain
import maniflow_nb.rl as rl
import shutil
from maniflow_nb.checkpoint import load_checkpoint
from maniflow_nb.envs import ObsWindow
from maniflow_nb.ppo import EVAL_SEED_STRIDE
from maniflow_nb.robosuite_env import EXPERT_TASKS, RobosuiteExpertPolicy, RobosuiteRunner, RobosuiteVecEnv, robosuite_demos, state_dim

RESULTS = Path(__file__).resolve().parent/'results'/'robosuite_rl.json'
BIN = Path(sys.executable).parent
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
    for task in EXPERT_TASKS:
        r = RobosuiteRunner(task, meta(task), n_obs_steps=2, n_action_steps=1, max_steps=400, n_episodes=n_episodes, num_envs=10).run(RobosuiteExpertPolicy(task))
        res[task] = {'success': r['test_mean_score'], 'mean_length': r['mean_length'], 'episodes': n_episodes}
    return res

def bc_command(a, store, rd) -> list:
    "The maniflow-train command of the BC policy (snapshots every 10 epochs kept)."
    return [str(BIN/'maniflow-train'), '--config-name', 'maniflow_state_robosuite', 'trainer=legacy', 'trainer.accelerator=cpu',
            'trainer.progress_bar=false', 'logger.tensorboard=false', f'task.dataset_path={store}', f'run_dir={rd}',
            f'training.num_epochs={a.bc_epochs}', 'training.learning_rate=1e-3', 'training.lr_warmup_steps=50',
            'training.sample_every=0', 'training.ema_decay=0.999', 'policy.num_inference_steps=4',
            'training.checkpoint_every=10', f'training.last_k_checkpoints={a.bc_epochs // 10}']

def pretrain(a, tmp) -> Path:
    "Demos (in process) and a BC checkpoint (maniflow-train, legacy trainer): the snapshot after `bc_snapshot_epochs` epochs."
    store, rd = Path(tmp)/'lift.zarr', Path(tmp)/'bc'
    robosuite_demos('Lift', a.demos, store, max_steps=a.max_steps, progress=False)
    subprocess.run(bc_command(a, store, rd), check=True)
    src = rd/'checkpoints'/f'last-epoch={a.bc_snapshot_epochs - 1:04d}.ckpt'
    return Path(shutil.copy(src, Path(tmp)/'bc.ckpt'))       # no '=' in the path (a Hydra override value)

def failure_modes(ck, n_episodes=40, num_envs=20, max_steps=200, seed=10_000) -> dict:
    """How the Euler episodes of a Lift checkpoint end: success, or a failure by where the policy commanded the gripper
    closed (action > 0: robosuite's Panda gripper acts on the sign) relative to the cube (eef-cube distance)."""
    pol, pcfg = rl.load_pretrained(ck, add_value_head=False)
    env, cats = RobosuiteVecEnv('Lift', to_plain(pcfg.task.shape_meta), num_envs, max_steps), []
    for b in range(-(-n_episodes // num_envs)):
        s = seed + b * EVAL_SEED_STRIDE
        window, g = ObsWindow(env.reset(s), pol.n_obs_steps), torch.Generator().manual_seed(s)
        done, succ = torch.zeros(num_envs, dtype=torch.bool), torch.zeros(num_envs, dtype=torch.bool)
        dmin, dclose = np.full(num_envs, 9.), np.full(num_envs, 9.)
        while not done.all():
            act = pol.sample_actions(window.obs, 'ode', generator=g)['action'].clamp(-1, 1)
            for i in range(act.shape[1]):
                for k, e in enumerate(env.envs):
                    if done[k]: continue
                    d = float(np.linalg.norm(e._raw['cube_pos'] - e._raw['robot0_eef_pos'])); dmin[k] = min(dmin[k], d)
                    if act[k, i, -1] > 0: dclose[k] = min(dclose[k], d)
                obs, _, dn, sc = env.step(act[:, i], ~done); window.push(obs, ~done); succ |= sc & ~done; done |= dn
        cats += ['success' if succ[k] else 'never closed' if dclose[k] > 8 else 'closed only > 2 cm from the cube' if dclose[k] > 0.02
                 else 'closed within 2 cm, not lifted' for k in range(num_envs)]
        fails = [dmin[k] for k in range(num_envs) if not succ[k]]
    env.close()
    return {'checkpoint': str(ck), 'episodes': len(cats), 'counts': {c: cats.count(c) for c in sorted(set(cats))},
            'closest_approach_of_failures_last_batch_m': [round(float(x), 3) for x in sorted(fails)]}

SDE_MODES = (('single', 0.2, None), ('joint', 0.2, None), ('joint', 0.4, None), ('single', 0.2, 'varying'), ('single', 0.4, 'varying'), ('joint', 0.4, 'varying'))

def sampler_noise(ck, steps=(1, 2, 4, 10), modes=SDE_MODES, num_envs=32, seed=5) -> list:
    "Success of one 32-env rollout per (denoising steps, flow_sde mode, noise level, noise_dims) next to Euler's, same scenes."
    from maniflow_nb.ppo import collect_rollout, evaluate_success, noise_levels
    rows = []
    for K in steps:
        pol, pcfg = rl.load_pretrained(ck, overrides={'policy.num_inference_steps': K})
        env = RobosuiteVecEnv('Lift', to_plain(pcfg.task.shape_meta), num_envs, 200)
        rows.append({'K': K, 'sampler': 'euler', 'success': evaluate_success(pol, env, seed=seed)['success_rate']})
        for mode, a, dims in modes:
            nd = rl.resolve_noise_dims(dims, pol)
            ro = collect_rollout(pol, env, 25, noise_levels(a, nd, pol.action_dim), mode, torch.Generator().manual_seed(0), seed=seed)
            rows.append({'K': K, 'sampler': f'flow_sde {mode}', 'noise_level': a, 'noise_dims': nd, 'success': round(ro['success'].float().mean().item(), 3)})
        env.close()
    return rows

def noise_dependence(ck, n_draws=4, num_envs=32, seed=5) -> dict:
    """Whether the Euler episodes of a checkpoint fail by scene or by the sampler's initial noise x_0: the same scenes
    played with `n_draws` different x_0 generators; scenes that always / never / sometimes succeed."""
    from maniflow_nb.ppo import execute_chunk
    pol, pcfg = rl.load_pretrained(ck, add_value_head=False)
    env, rows = RobosuiteVecEnv('Lift', to_plain(pcfg.task.shape_meta), num_envs, 200), []
    for d in range(n_draws):
        window, g = ObsWindow(env.reset(seed), pol.n_obs_steps), torch.Generator().manual_seed(1000 + d)
        done, succ = torch.zeros(num_envs, dtype=torch.bool), torch.zeros(num_envs, dtype=torch.bool)
        while not done.all():
            _, done, s, _ = execute_chunk(env, window, pol.sample_actions(window.obs, 'ode', generator=g)['action'].clamp(-1, 1), done)
            succ |= s
        rows.append(succ.float())
    env.close()
    S = torch.stack(rows).mean(0)
    return {'checkpoint': str(ck), 'scenes': num_envs, 'noise_draws': n_draws, 'success_per_draw': [round(r.mean().item(), 3) for r in rows],
            'scenes_always': int((S == 1).sum()), 'scenes_never': int((S == 0).sum()), 'scenes_sometimes': int(((S > 0) & (S < 1)).sum())}

def diagnose(a, res):
    "`--diagnose`: failure modes and sampler noise of --bc-checkpoint, into res['diagnosis']."
    t0 = time.time()
    res['diagnosis'] = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), 'device': cpu_name(),
                        'failure_modes': failure_modes(a.bc_checkpoint), 'noise_dependence': noise_dependence(a.bc_checkpoint),
                        'sampler_noise': sampler_noise(a.bc_checkpoint)}
    res['diagnosis']['seconds'] = round(time.time() - t0, 1)
    print(json.dumps(res['diagnosis'], indent=1))
    if not a.no_record: record({'diagnosis': res['diagnosis']})

def record(update):
    "Apply `update` (a dict to merge, or a function of the current results returning one) to the results file as it is"
    " now, under a lock (several runs may finish together); written atomically."
    import fcntl
    with open(RESULTS.with_suffix('.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        res |= update(res) if callable(update) else update
        tmp = RESULTS.with_suffix('.tmp'); tmp.write_text(json.dumps(res, indent=1) + '\n'); tmp.replace(RESULTS)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--demos', type=int, default=20); p.add_argument('--bc-epochs', type=int, default=100)
    p.add_argument('--bc-snapshot-epochs', type=int, default=30); p.add_argument('--bc-checkpoint', default=None)
    p.add_argument('--total-timesteps', type=int, default=40000); p.add_argument('--eval-episodes', type=int, default=20)
    p.add_argument('--expert-episodes', type=int, default=20); p.add_argument('--num-envs', type=int, default=16)
    p.add_argument('--max-steps', type=int, default=200); p.add_argument('--skip-env-checks', action='store_true')
    p.add_argument('--seed', type=int, default=0); p.add_argument('--no-record', action='store_true')
    p.add_argument('--exploratory', default=None, metavar='NOTE', help='record the row under `exploratory` (with this note), not as a result')
    p.add_argument('overrides', nargs='*', help='more train_maniflow_state_rl_lift overrides')
    p.add_argument('--record-as', default='rl_runs', help="the JSON key the row goes to (rows per seed), e.g. rl_runs_from_full_bc")
    p.add_argument('--diagnose', action='store_true', help="record the failure modes and sampler noise of --bc-checkpoint (no RL)")
    a = p.parse_args()
    t_all, load0 = time.time(), os.getloadavg()[0]
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if a.diagnose:
        if not a.bc_checkpoint: p.error('--diagnose needs --bc-checkpoint')
        return diagnose(a, res)
    for k in ('success_before', 'success_after', 'params', 'env_steps', 'bc_seconds', 'rl_seconds', 'wall_seconds', 'eval_episodes', 'eval_seed'):
        res.pop(k, None)                                                   # the single-run layout before rl_runs
    if not a.skip_env_checks:
        res['vecenv_steps_per_second'] = vecenv_timing() | {'load_avg': round(os.getloadavg()[0], 1)}
        res['expert_success'] = expert_success(a.expert_episodes)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time(); ck = a.bc_checkpoint or pretrain(a, tmp); bc_seconds = None if a.bc_checkpoint else round(time.time() - t0, 1)
        ov = [f'run_dir={tmp}/rl', f'policy.checkpoint={ck}', 'policy.horizon=null', 'policy.n_action_steps=null', 'policy.num_inference_steps=null',
              f'task.env_runner.num_episodes={a.eval_episodes}', f'task.env_runner.max_steps={a.max_steps}',
              f'training.num_steps_per_rollout={-(-a.max_steps // 8)}', f'training.total_timesteps={a.total_timesteps}',
              f'training.num_envs={a.num_envs}', 'training.device=cpu', f'seed={a.seed}', *a.overrides]
        cfg = compose_config('train_maniflow_state_rl_lift', ov)
        rec = rl.run_rl(cfg)
        steps = load_checkpoint(rec['checkpoint'])['env_steps']
        curve = pd.read_csv(Path(tmp)/'rl'/'metrics.csv')[['env_steps', 'success_rate', 'explained_variance', 'approx_kl']].round(3)
    row = {'seed': a.seed, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'load_avg_start_end': [round(load0, 1), round(os.getloadavg()[0], 1)],
           'success_before': round(rec['before']['success_rate'], 3), 'success_after': round(rec['after']['success_rate'], 3),
           'episode_length_before_after': [round(rec['before']['episode_length'], 1), round(rec['after']['episode_length'], 1)],
           'env_steps': steps, 'bc_seconds': bc_seconds, 'rl_seconds': round(rec['rl_seconds'], 1), 'wall_seconds': round(time.time() - t_all, 1),
           'rollout_success_by_iteration': curve['success_rate'].tolist(), 'explained_variance_by_iteration': curve['explained_variance'].tolist(),
           'settings': {k: to_plain(cfg[k]) for k in ('policy', 'training', 'advantage')} | {'max_steps': a.max_steps, 'eval_episodes': a.eval_episodes},
           'params': {k: v for k, v in vars(a).items() if k not in ('no_record', 'exploratory')}}
    res |= {'device': cpu_name(), 'torch': torch.__version__, 'platform': platform.platform(), 'task': 'Lift',
            'obs': 'state (19-d robomimic low-dim)', 'policy': 'maniflow_state', 'sampler_eval': 'euler', 'bc_command': bc_command(a, 'lift.zarr', 'bc')}
    print(json.dumps(row, indent=1))
    if a.no_record: return
    meta = {k: res[k] for k in ('device', 'torch', 'platform', 'task', 'obs', 'policy', 'sampler_eval', 'bc_command', 'vecenv_steps_per_second', 'expert_success') if k in res}
    if a.exploratory: record(lambda now: meta | {'exploratory': now.get('exploratory', []) + [{'not_a_result': a.exploratory} | row]})
    else: record(lambda now: meta | {a.record_as: now.get(a.record_as, {}) | {str(a.seed): row}})

if __name__ == '__main__': main()
