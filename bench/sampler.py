"""Windows/s of the batched window gather (`SequenceDataset.__getitems__`'s path) for MetaWorld point-cloud shapes.

    OMP_NUM_THREADS=1 python bench/sampler.py [--device cpu|cuda] [--seconds 3] [--no-record]

Appends one row per shape to bench/results/sampler.json (device, torch/numpy/zarr versions, ISO date, batch, shapes,
windows_per_s). With --device cuda the arrays live on the GPU and the gather is a torch index there."""
import argparse, datetime, json, os, platform, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
import numpy as np, torch, zarr
from maniflow_nb.dataset import SequenceSampler
from _common import cpu_name

SHAPES = {'point_cloud_512x3': (512, 3), 'point_cloud_1024x6': (1024, 6)}

def make_data(n_steps, pc, device, rng):
    "In-RAM arrays as SequenceDataset holds them (float32, time first)."
    data = {'point_cloud': rng.standard_normal((n_steps, *pc), dtype=np.float32),
            'agent_pos': rng.standard_normal((n_steps, 9), dtype=np.float32),
            'action': rng.standard_normal((n_steps, 4), dtype=np.float32)}
    return {k: torch.from_numpy(v).to(device) for k, v in data.items()} if device != 'cpu' else data

def gather(sampler, data, idx, n_obs, device):
    "One batch: obs cut to To, action all T, as torch tensors (what the DataLoader gets)."
    b = sampler.sample_batch(data, idx, n_steps={'point_cloud': n_obs, 'agent_pos': n_obs})
    out = {k: v if torch.is_tensor(v) else torch.from_numpy(v) for k, v in b.items()}
    if device != 'cpu': torch.cuda.synchronize()
    return out

def measure(pc, device, batch, horizon, n_obs, n_act, seconds, n_episodes=50, ep_len=200, seed=0):
    rng = np.random.default_rng(seed)
    ends = np.arange(1, n_episodes + 1) * ep_len
    sampler = SequenceSampler(ends, horizon, n_obs - 1, n_act - 1)
    data = make_data(int(ends[-1]), pc, device, rng)
    idx = [rng.integers(0, len(sampler), batch) for _ in range(64)]
    for i in range(5): gather(sampler, data, idx[i], n_obs, device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds: gather(sampler, data, idx[n % 64], n_obs, device); n += 1
    return n * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu'); ap.add_argument('--seconds', type=float, default=3.)
    ap.add_argument('--batch', type=int, default=256); ap.add_argument('--no-record', action='store_true')
    a = ap.parse_args()
    horizon, n_obs, n_act = 16, 2, 8
    name = torch.cuda.get_device_name() if a.device.startswith('cuda') else cpu_name()
    rows = []
    for key, pc in SHAPES.items():
        w = measure(pc, a.device, a.batch, horizon, n_obs, n_act, a.seconds)
        rows.append({'device': name, 'torch': torch.__version__, 'numpy': np.__version__, 'zarr': zarr.__version__,
                     'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                     'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'batch': a.batch,
                     'shapes': {'point_cloud': list(pc), 'agent_pos': [9], 'action': [4], 'horizon': horizon,
                                'n_obs_steps': n_obs, 'n_action_steps': n_act},
                     'windows_per_s': round(w)})
        print(f"{key}: {w:,.0f} windows/s (batch {a.batch}, {name})")
    if not a.no_record:
        out = Path(__file__).parent / 'results' / 'sampler.json'
        old = json.loads(out.read_text()) if out.exists() else []
        tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(old + rows, indent=1)); os.replace(tmp, out)

if __name__ == '__main__': main()
