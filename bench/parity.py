"""Parity of the legacy loop and the Lightning conversion: two real runs of the same small config, seed and data.

    python bench/parity.py [--device cpu|cuda] [--policy maniflow_state] [--epochs 4] [--batch 16] [--val-every 1]

Both trainers train `maniflow_state_metaworld` (the default ManiFlow state policy, CPU-sized) on a synthetic store,
deterministic fp32, each in a child process of its own (`maniflow_nb.parity.run_parity`). Appends one row per run to
bench/results/parity.json: steps, identical leading steps, max/mean abs training-loss difference, LR identity, final
val-loss relative difference, wall-clock and peak-RSS ratios (Lightning / legacy), and the full report's pass/fail lines.
"""
import argparse, datetime, json, sys, tempfile
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from maniflow_nb.config import atomic_path
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.parity import run_parity, parity_summary

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--config', default='maniflow_state_metaworld')
    p.add_argument('--policy', default='maniflow_state')
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--val-every', type=int, default=1, help='validation every N epochs (N = --epochs: only at the end)')
    p.add_argument('--episodes', type=int, default=10, help='episodes of the synthetic store (20 steps each)')
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'parity.json'))
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix='parity_bench_'))
    store = make_synthetic_store(work/'s.zarr', n_episodes=a.episodes, episode_len=20, seed=0)
    ov = [f'policy={a.policy}', f'task.dataset_path={store}', f'training.num_epochs={a.epochs}', f'training.batch_size={a.batch}',
          f'training.val_every={a.val_every}', 'training.sample_every=1', f'training.checkpoint_every={a.epochs}',
          'training.lr_warmup_steps=10', f'trainer.accelerator={"gpu" if a.device == "cuda" else "cpu"}']
    checks = run_parity(a.config, ov, work/'runs', out=work/'report.md')
    row = {'device': torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu', 'torch': torch.__version__,
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), 'config': a.config,
           'policy': a.policy, 'epochs': a.epochs, 'batch': a.batch, 'val_every': a.val_every, 'precision': '32-true',
           **parity_summary(work/'runs'/'legacy', work/'runs'/'lightning'),
           'checks': {c['check']: {True: 'pass', False: 'FAIL', None: 'n/a'}[c['passed']] + f" ({c['measured']})" for c in checks}}
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    with atomic_path(out) as t: Path(t).write_text(json.dumps(rows + [row], indent=1))
    print(json.dumps(row, indent=1)); print(f'report: {work/"report.md"}')

if __name__ == '__main__': main()
