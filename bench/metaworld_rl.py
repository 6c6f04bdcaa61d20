"""MetaWorld state-based PPO fine-tuning: scripted demos -> ManiFlow BC (legacy trainer) -> PPO with flow_sde -> success
before / after (Euler sampling, same evaluation episodes).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python bench/metaworld_rl.py [--task reach-v3] [--demos 10] [--bc-epochs 120]
        [--total-timesteps 40000] [--eval-episodes 50] [--checkpoint CKPT] [--no-record] [override ...]

Appends two rows (stage bc, stage bc+ppo) to bench/results/success.json with the fields its earlier rows have
(policy, task, obs, demos, episodes, seeds, success_mean) plus env_steps and rl_seconds."""
import argparse, datetime, json, os, platform, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from maniflow_nb.config import compose_config
from maniflow_nb.rl import run_rl
from maniflow_nb.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent/'results'/'success.json'
BIN = Path(sys.executable).parent

def pretrain(args, tmp) -> Path:
    "Demos and a BC checkpoint with the package's own CLIs."
    store, rd = Path(tmp)/'demos.zarr', Path(tmp)/'bc'
    subprocess.run([BIN/'maniflow-demos', '--task', args.task, '--episodes', str(args.demos), '--out', store, '--quiet'], check=True)
    subprocess.run([BIN/'maniflow-train', '--config-name', 'maniflow_state_metaworld', 'trainer=legacy', 'trainer.accelerator=cpu',
                    'trainer.progress_bar=false', 'logger.tensorboard=false', f'task.name={args.task}', f'task.dataset_path={store}',
                    f'run_dir={rd}', f'training.num_epochs={args.bc_epochs}', 'training.learning_rate=1e-3', 'training.lr_warmup_steps=50',
                    'training.sample_every=0', 'training.ema_decay=0.999', 'policy.num_inference_steps=4'], check=True)
    return rd/'checkpoints'/'latest.ckpt'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', default='reach-v3'); p.add_argument('--demos', type=int, default=10)
    p.add_argument('--bc-epochs', type=int, default=120); p.add_argument('--total-timesteps', type=int, default=40000)
    p.add_argument('--eval-episodes', type=int, default=50); p.add_argument('--num-envs', type=int, default=16)
    p.add_argument('--learning-rate', type=float, default=2e-5); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--checkpoint', default=None, help='skip demos and BC: fine-tune this checkpoint')
    p.add_argument('--no-record', action='store_true')
    p.add_argument('overrides', nargs='*', help='more train_maniflow_state_rl overrides, e.g. training.target_kl=0.02')
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(a.checkpoint) if a.checkpoint else pretrain(a, tmp)
        ov = [f'run_dir={tmp}/rl', f'policy.checkpoint={ck}', 'policy.horizon=null', 'policy.n_action_steps=null',
              'policy.num_inference_steps=null', f'task.env_runner.env_name={a.task}', f'task.env_runner.num_episodes={a.eval_episodes}',
              f'training.total_timesteps={a.total_timesteps}', f'training.num_envs={a.num_envs}', f'training.learning_rate={a.learning_rate}',
              'training.device=cpu', f'seed={a.seed}', *a.overrides]
        rec = run_rl(compose_config('train_maniflow_state_rl', ov))
        steps = load_checkpoint(rec['checkpoint'])['env_steps']
    base = {'device': f'cpu ({platform.machine()}, {torch.get_num_threads()} threads, load avg {os.getloadavg()[0]:.1f})',
            'torch': torch.__version__, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'policy': 'maniflow_state', 'task': a.task, 'obs': 'full_state', 'demos': a.demos, 'episodes': a.eval_episodes,
            'seeds': [a.seed + 10_000], 'sampler': 'euler', 'rl_overrides': a.overrides,
            'learning_rate': a.learning_rate, 'num_envs': a.num_envs}
    rows = [base | {'stage': 'bc', 'success_mean': rec['before']['success_rate'], 'env_steps': 0, 'rl_seconds': 0.0},
            base | {'stage': 'bc+ppo', 'success_mean': rec['after']['success_rate'], 'env_steps': steps, 'rl_seconds': round(rec['rl_seconds'], 1)}]
    for r in rows: print(json.dumps(r))
    if not a.no_record:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps(old + rows, indent=1))

if __name__ == '__main__': main()
