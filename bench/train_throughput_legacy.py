"""Training samples/s of the legacy loop (`maniflow_nb.workspace.TrainWorkspace`) on a synthetic MetaWorld-shaped store.

    OMP_NUM_THREADS=1 python bench/train_throughput_legacy.py [--device cpu|cuda] [--config maniflow_pointcloud_metaworld]
                                                               [--batch 16] [--epochs 3] [--no-record]

Times the training half of each epoch after the first (validation, sampling and checkpoints off), so start-up, data
loading into RAM and the first-step allocations are not counted. Appends one row to bench/results/train_throughput.json
(device, torch, date, trainer='legacy', precision, config, batch, samples_per_s)."""
import argparse, datetime, json, os, platform, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout without installing
import torch
from maniflow_nb.config import compose_config, atomic_path
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.workspace import TrainWorkspace
from _common import cpu_name


def measure(config, device, batch, epochs, tmp) -> dict:
    "samples/s over epochs 1..epochs-1 of a legacy run."
    make_synthetic_store(tmp/'s.zarr', n_episodes=12, episode_len=60, n_points=512, seed=0)
    cfg = compose_config(config, [f'task.dataset_path={tmp/"s.zarr"}', f'run_dir={tmp/"run"}', 'trainer=legacy',
        f'training.batch_size={batch}', f'training.num_epochs={epochs}', 'training.val_every=0', 'training.sample_every=0',
        'training.checkpoint_every=1000', 'logger.tensorboard=false', 'trainer.progress_bar=false',
        f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}"])
    ws = TrainWorkspace(cfg)
    ws.progress, ws.loggers = False, type('NoLog', (), {'log': lambda self, row: None})()
    times, samples = [], 0
    for e in range(epochs):
        ws.epoch, ws.batch_idx = e, 0
        if device.startswith('cuda'): torch.cuda.synchronize()
        t0 = time.perf_counter(); ws.train_epoch()
        if device.startswith('cuda'): torch.cuda.synchronize()
        if e: times.append(time.perf_counter() - t0); samples += len(ws.train_set)
    return {'samples_per_s': samples / sum(times), 'steps': ws.global_step, 'n_train_windows': len(ws.train_set)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu'); ap.add_argument('--config', default='maniflow_pointcloud_metaworld')
    ap.add_argument('--batch', type=int, default=16); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--no-record', action='store_true')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d: m = measure(a.config, a.device, a.batch, a.epochs, Path(d))
    row = {'device': torch.cuda.get_device_name() if a.device.startswith('cuda') else cpu_name(), 'torch': torch.__version__,
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'load_avg_1m': os.getloadavg()[0], 'trainer': 'legacy', 'precision': '32-true',
           'config': a.config, 'batch': a.batch, **m}
    print(json.dumps(row))
    if a.no_record: return
    out = ROOT/'bench'/'results'/'train_throughput.json'
    rows = json.loads(out.read_text()) if out.exists() else []
    with atomic_path(out) as t: Path(t).write_text(json.dumps(rows + [row], indent=1))

if __name__ == '__main__': main()
