"""TwoRoutes (nbs/50_tworoutes.ipynb): behaviour cloning, then PPO with flow_sde, per seed; success before / after (Euler sampling).

    OMP_NUM_THREADS=1 python bench/tworoutes.py [--seeds 0,1,2] [--total-timesteps 80000] [--bc-steps 600] [--no-record]

Runs `maniflow_nb.rl.run_rl` on the `train_tworoutes_rl` config for each seed (demos, BC, 2 critic warm-up iterations,
PPO) and appends one row per seed to bench/results/tworoutes.json: device, torch, date, seed, mode, success_before,
success_after, env_steps, rl_seconds (PPO iterations only; BC and evaluation excluded), bc_seconds, eval_episodes."""
import argparse, datetime, json, os, platform, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from maniflow_nb.config import compose_config
from maniflow_nb.rl import run_rl
from maniflow_nb.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent/'results'/'tworoutes.json'

def run_seed(seed, args, tmp):
    ov = [f'run_dir={tmp}/seed{seed}', f'seed={seed}', f'training.total_timesteps={args.total_timesteps}',
          f'task.bc_steps={args.bc_steps}', f'policy.noise_mode={args.mode}', 'training.log_interval=5']
    t0 = time.time()
    rec = run_rl(compose_config('train_tworoutes_rl', ov))
    ck = load_checkpoint(rec['checkpoint'])
    return {'device': f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, load avg {os.getloadavg()[0]:.1f})',
            'torch': torch.__version__, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'seed': seed, 'mode': args.mode, 'success_before': rec['before']['success_rate'], 'success_after': rec['after']['success_rate'],
            'env_steps': ck['env_steps'], 'iterations': ck['iteration'], 'rl_seconds': round(rec['rl_seconds'], 1),
            'total_seconds': round(time.time() - t0, 1), 'bc_steps': args.bc_steps, 'eval_episodes': 256}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', default='0,1,2'); p.add_argument('--total-timesteps', type=int, default=80_000)
    p.add_argument('--bc-steps', type=int, default=600); p.add_argument('--mode', default='single', choices=['single', 'joint'])
    p.add_argument('--no-record', action='store_true')
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in [int(x) for x in args.seeds.split(',')]:
            rows.append(run_seed(s, args, tmp)); print(json.dumps(rows[-1]), flush=True)
    if not args.no_record:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.parent.mkdir(exist_ok=True); RESULTS.write_text(json.dumps(old + rows, indent=1))

if __name__ == '__main__': main()
