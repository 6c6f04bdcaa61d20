"""Training throughput (samples/s) of the legacy loop and the Lightning conversion on the same config, in one run.

    python bench/train_throughput.py [--device cpu|cuda] [--policy maniflow_pointcloud] [--batch 32] [--steps 10] [--rounds 2]

Both trainers run the same policy, data, batch size and number of optimizer steps; only the training half of the
epochs after the first is timed (data loading, steps, EMA and per-step logging; validation, sampling and checkpoints
excluded). The trainers
alternate over `--rounds` rounds and the median per trainer is recorded. Appends rows to bench/results/train_throughput.json.
"""
import argparse, json, os, statistics, sys, tempfile, time, datetime, warnings, logging
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pytorch_lightning.callbacks import Callback
from maniflow_nb.config import compose_config
from maniflow_nb.data import make_synthetic_store

def bench_cfg(store, run_dir, a):
    return compose_config(a.config, [f'policy={a.policy}', f'task.dataset_path={store}', f'run_dir={run_dir}',
        f'training.batch_size={a.batch}', f'training.num_epochs={a.epochs}', f'training.max_train_steps={a.steps}',
        'training.max_val_steps=1', 'training.sample_every=0', 'training.checkpoint_every=1000', 'training.resume=false',
        f'trainer.accelerator={"gpu" if a.device == "cuda" else "cpu"}', f'trainer.precision={a.precision}',
        'trainer.progress_bar=false', 'logger.tensorboard=false', *getattr(a, 'overrides', ())])   # overrides: bench/gpu_bench.py

class EpochTimer(Callback):
    "Seconds from the start of each training epoch to the end of its last batch (data loading included), and samples."
    def __init__(self): self.t, self.n = {}, {}
    def _now(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        return time.perf_counter()
    def on_train_epoch_start(self, trainer, pl_module): self._t0 = self._now()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        e = trainer.current_epoch
        self.t[e] = self._now() - self._t0
        self.n[e] = self.n.get(e, 0) + batch['action'].shape[0]

def lightning_rate(cfg) -> float:
    from maniflow_nb.lightning import fit
    timer = EpochTimer(); fit(cfg, callbacks=[timer])
    return sum(timer.n[e] for e in timer.n if e > 0) / sum(timer.t[e] for e in timer.t if e > 0)

def legacy_rate(cfg) -> float:
    "Times `train_epoch` of the legacy loop (its whole training half: loader, steps, logging)."
    from maniflow_nb.workspace import TrainWorkspace
    from maniflow_nb.runlog import Loggers
    ws = TrainWorkspace(cfg); ws.progress = False; ws.loggers = Loggers(cfg, ws.run_dir)
    secs = samples = 0
    for e in range(cfg.training.num_epochs):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        t0 = time.perf_counter(); ws.train_epoch()
        if torch.cuda.is_available(): torch.cuda.synchronize()
        if e > 0: secs += time.perf_counter() - t0; samples += ws.n_batches * cfg.training.batch_size
        ws.end_epoch()
    ws.loggers.close()
    return samples / secs

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu'); p.add_argument('--config', default='maniflow_pointcloud_metaworld')
    p.add_argument('--policy', default='maniflow_pointcloud'); p.add_argument('--precision', default='32-true')
    p.add_argument('--batch', type=int, default=32); p.add_argument('--steps', type=int, default=10)
    p.add_argument('--epochs', type=int, default=3); p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'train_throughput.json'))
    a = p.parse_args()
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR); warnings.filterwarnings('ignore')
    tmp = Path(tempfile.mkdtemp())
    store = make_synthetic_store(tmp/'s.zarr', n_episodes=12, episode_len=60, n_points=512)
    rates = {'legacy': [], 'lightning': []}
    for r in range(a.rounds):
        for trainer, fn in (('legacy', legacy_rate), ('lightning', lightning_rate)):
            torch.manual_seed(0)
            rates[trainer].append(fn(bench_cfg(store, tmp/f'{trainer}{r}', a)))
            print(f'round {r} {trainer}: {rates[trainer][-1]:.1f} samples/s', flush=True)
    dev = torch.cuda.get_device_name() if a.device == 'cuda' else f'cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)'
    rows = [{'device': dev, 'torch': torch.__version__, 'date': datetime.date.today().isoformat(), 'trainer': t,
             'load_avg_1m': round(os.getloadavg()[0], 2),
             'precision': a.precision, 'samples_per_s': round(statistics.median(v), 2), 'batch': a.batch,
             'config': f'{a.config} policy={a.policy} steps/epoch={a.steps} epochs={a.epochs} (first epoch excluded)',
             'runs': [round(x, 2) for x in v]} for t, v in rates.items()]
    ratio = rows[1]['samples_per_s'] / rows[0]['samples_per_s']
    for r in rows: r['lightning_over_legacy'] = round(ratio, 4)
    out = Path(a.out); old = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(old + rows, indent=1))
    print(f'lightning / legacy throughput: {ratio:.3f}')

if __name__ == '__main__': main()
