"""Simulation success of behaviour-cloned ManiFlow on MetaWorld: state-based policy, 10 expert demos per task.

    python bench/success.py [--tasks reach-v3,button-press-v3,drawer-open-v3] [--demos 10] [--steps 1500]
                            [--episodes 20] [--seeds 0,1,2] [--device cpu|cuda] [--lr 1e-3] [--n-action-steps 2]
                            [--out-dir runs/bench_success] [--override KEY=VALUE ...]

Per task: scripted-expert demos (`maniflow-demos`, state only; reused when the store exists), Lightning training of
`maniflow_state_metaworld` for about `--steps` optimizer steps (whole epochs), then `maniflow-eval` of the last
checkpoint's EMA weights for `--episodes` episodes on each runner seed. Appends one row per task to
bench/results/success.json (read-modify-write through a temp file; rows written by other benchmarks are kept).
`--n-action-steps 2` (closed loop) is the default: with the config's Ta=8, reach-v3 reached 0.30 instead of 0.73.
"""
import argparse, datetime, json, math, os, subprocess, sys, time
from pathlib import Path
from _common import cpu_name as _cpu_name
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'/'success.json'
BIN = Path(sys.executable).parent

def cpu_name() -> str:
    "CPU model and core count, with the thread count of the run."
    return f"{_cpu_name()[:-1]}, {os.environ.get('OMP_NUM_THREADS', 'all')} threads)"

def device_name(device:str) -> str:
    import torch
    return f"cuda: {torch.cuda.get_device_name(0)}" if device == 'cuda' else cpu_name()

def append_rows(rows:list, path:Path=RESULTS):
    "Append `rows` to the JSON list at `path` atomically, keeping what is there."
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f'.{path.name}.lock'), 'w') as lock:   # serializes writers that use the same lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else []
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        tmp.write_text(json.dumps(old + rows, indent=1)); os.replace(tmp, path)

def make_store(task:str, demos:int, data_dir:Path) -> Path:
    "State-only expert demos of `task` (reused when present)."
    store = data_dir/f'state_{task}_{demos}.zarr'
    if not store.exists():
        subprocess.run([str(BIN/'maniflow-demos'), '--env', 'metaworld', '--task', task, '--episodes', str(demos),
                        '--out', str(store), '--quiet'], check=True)
    return store

def n_epochs(store:Path, steps:int, batch:int, a) -> tuple:
    "Whole epochs that give about `steps` optimizer steps on this store's training windows; (epochs, windows)."
    from maniflow_nb.config import compose_config
    from maniflow_nb.dataset import make_datasets
    cfg = compose_config('maniflow_state_metaworld', [f'task.dataset_path={store}', f'n_action_steps={a.n_action_steps}', *a.override])
    n = len(make_datasets(cfg)[0])
    return max(1, math.ceil(steps / math.ceil(n / batch))), n

def train(task, store, run_dir, epochs, a) -> float:
    "Train with `maniflow-train` (Lightning); returns wall seconds."
    ov = [f'task.name={task}', f'task.dataset_path={store}', f'run_dir={run_dir}', f'training.num_epochs={epochs}',
          f'training.batch_size={a.batch}', f'training.learning_rate={a.lr}', f'training.lr_warmup_steps={a.warmup}',
          'training.val_every=25', 'training.sample_every=0', f'training.checkpoint_every={epochs}',
          f'n_action_steps={a.n_action_steps}', 'training.resume=false', 'trainer=lightning', 'trainer.progress_bar=false', 'logger=csv',
          f'trainer.accelerator={"gpu" if a.device == "cuda" else "cpu"}', *a.override]
    t0 = time.time()
    subprocess.run([str(BIN/'maniflow-train'), '--config-name', 'maniflow_state_metaworld', *ov], check=True)
    return time.time() - t0

def evaluate(run_dir:Path, a) -> tuple:
    "Evaluate `last.ckpt` (EMA weights); returns (eval.json record, wall seconds)."
    t0 = time.time()
    subprocess.run([str(BIN/'maniflow-eval'), str(run_dir/'checkpoints'/'last.ckpt'), '--episodes', str(a.episodes),
                    '--seeds', a.seeds, '--n-procs', str(a.n_procs), '--device', 'gpu' if a.device == 'cuda' else 'cpu'],
                   check=True)
    return json.loads((run_dir/'eval.json').read_text()), time.time() - t0

def bench_task(task:str, a) -> dict:
    "Demos, training and evaluation of one task; the result row."
    import torch
    store = make_store(task, a.demos, Path(a.data_dir))
    epochs, windows = n_epochs(store, a.steps, a.batch, a)
    run_dir = Path(a.out_dir)/task
    train_s = train(task, store, run_dir, epochs, a)
    rec, eval_s = evaluate(run_dir, a)
    seeds = [int(s) for s in a.seeds.split(',')]
    return {'device': device_name(a.device), 'torch': torch.__version__,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'load_avg_1m': round(os.getloadavg()[0], 2), 'policy': 'maniflow_state', 'config': 'maniflow_state_metaworld',
            'trainer': 'lightning', 'task': task, 'obs': 'full_state', 'demos': a.demos, 'episodes': a.episodes,
            'seeds': seeds, 'success_mean': rec['test_mean_score'],
            'success_per_seed': {str(s): rec[f'success_seed{s}'] for s in seeds},
            'epochs': epochs, 'batch': a.batch, 'steps': epochs * math.ceil(windows / a.batch), 'train_windows': windows,
            'learning_rate': a.lr, 'overrides': [f'n_action_steps={a.n_action_steps}', *a.override], 'train_seconds': round(train_s, 1),
            'eval_seconds': round(eval_s, 1), 'mean_length': rec['mean_length']}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tasks', default='reach-v3,button-press-v3,drawer-open-v3')
    p.add_argument('--demos', type=int, default=10); p.add_argument('--steps', type=int, default=1500)
    p.add_argument('--batch', type=int, default=64); p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--warmup', type=int, default=50)
    p.add_argument('--n-action-steps', type=int, default=2, help='Ta: executed actions per policy call')
    p.add_argument('--episodes', type=int, default=20); p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--n-procs', type=int, default=1); p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--data-dir', default=str(ROOT/'data'/'bench_success'))
    p.add_argument('--out-dir', default=str(ROOT/'runs'/'bench_success'))
    p.add_argument('--override', action='append', default=[], help='extra Hydra override (repeatable)')
    p.add_argument('--no-save', action='store_true', help='print the rows only')
    a = p.parse_args()
    os.environ.setdefault('MUJOCO_GL', 'egl'); os.environ.setdefault('WANDB_MODE', 'offline')
    rows = []
    for task in a.tasks.split(','):
        row = bench_task(task, a); rows.append(row)
        print(json.dumps(row), flush=True)
        if not a.no_save: append_rows([row])
    print(f"mean success over {len(rows)} task(s): {sum(r['success_mean'] for r in rows) / len(rows):.3f}")

if __name__ == '__main__': main()
