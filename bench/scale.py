"""Peak RSS and windows/s of `task.dataset.storage` = memory | shared | stream vs store size (CALVIN-shaped point clouds).

    OMP_NUM_THREADS=1 python bench/scale.py [--sizes 1000,10000,100000] [--seconds 4] [--dir /tmp/maniflow_scale] [--no-record]

Writes synthetic stores (2048x6 float32 point clouds, 15-d state, 7-d action; random walks, so they compress like real
floats, i.e. barely) once into --dir and reuses them; skips a size whose store would not fit the disk (`df`). Each
measurement runs in a fresh process: build the dataset (obs = xyz of the cloud + state, as conf/task/calvin.yaml),
then a DataLoader (batch 256, EpochSampler(ds), 2 workers; memory also with 0) for --seconds. Peak RSS is the
process's (and its workers') maximum resident set; for shared, PSS (proportional: shared pages split between
mappers) is the honest per-process figure. The 2-rank rows run two such processes at once. Appends rows to
bench/results/scale.json (device, versions, date, params)."""
import argparse, datetime, json, os, resource, shutil, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, zarr, torch
from _common import cpu_name

META = {'obs': {'point_cloud': {'shape': [2048, 3], 'type': 'point_cloud'}, 'agent_pos': {'shape': [15], 'store_key': 'state'}},
        'action': {'shape': [7]}}
EP_LEN, FRAME_BYTES = 100, 2048 * 6 * 4 + 22 * 4

def write_store(path: Path, n: int, block: int = 500):
    "A CALVIN-shaped store of `n` frames (episodes of EP_LEN), written block by block."
    from maniflow_nb.data import time_chunk, compressor, all_chunks, ALL_CHUNKS_ATTR
    if (path/'meta').exists(): return path
    tmp = path.with_name(path.name + '.tmp'); shutil.rmtree(tmp, ignore_errors=True)
    g = zarr.open_group(str(tmp), mode='w', zarr_format=3, attributes={ALL_CHUNKS_ATTR: True}); rng = np.random.default_rng(0)
    shapes = {'point_cloud': (2048, 6), 'state': (15,), 'action': (7,)}
    with all_chunks():
        arrs = {k: g.create_array(f'data/{k}', shape=(0, *s), dtype='float32', compressors=compressor(3),
                                  chunks=(time_chunk(int(np.prod(s)) * 4), *s)) for k, s in shapes.items()}
        for s in range(0, n, block):
            m = min(block, n - s); walk = np.cumsum(rng.normal(size=(m, 1, 3)).astype(np.float32) * 0.01, 0)
            pc = rng.normal(size=(m, 2048, 6)).astype(np.float32) * 0.1; pc[..., :3] += walk
            arrs['point_cloud'].append(pc); arrs['state'].append(rng.normal(size=(m, 15)).astype(np.float32))
            arrs['action'].append(np.clip(rng.normal(size=(m, 7)), -1, 1).astype(np.float32))
        g.create_array('meta/episode_ends', data=np.arange(EP_LEN, n + 1, EP_LEN, dtype=np.int64), chunks=(4096,))
    os.rename(tmp, path); return path

def pss_kb() -> int:
    try: return sum(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('Pss:'))
    except OSError: return -1

def child(store, mode, workers, seconds, batch, hold):
    "One measurement (in its own process): JSON on stdout."
    from maniflow_nb.dataset import SequenceDataset, EpochSampler, collate_batch
    t0 = time.perf_counter()
    ds = SequenceDataset(store, META, 16, 2, 8, val_ratio=0.0, storage=mode)
    build_s = time.perf_counter() - t0
    sampler = EpochSampler(ds, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_batch,
                                     persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    n, t0, done = -1, None, False                       # the clock starts at the first batch (workers started)
    while not done:
        for b in dl:
            if t0 is None: t0 = time.perf_counter(); n = 0; continue
            n += len(b['action'])
            if time.perf_counter() - t0 > seconds: done = True; break
    rate = n / (time.perf_counter() - t0)
    it = None
    pss = pss_kb(); del dl
    if hold: time.sleep(hold)
    ru = lambda w: resource.getrusage(w).ru_maxrss / 2**20   # KiB -> GiB
    print(json.dumps({'build_s': round(build_s, 2), 'windows_per_s': round(rate), 'peak_rss_gib': round(ru(resource.RUSAGE_SELF), 3),
                      'worker_peak_rss_gib': round(ru(resource.RUSAGE_CHILDREN), 3), 'pss_gib': round(pss / 2**20, 3)}))

def run(store, mode, workers, a, ranks=1):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MANIFLOW_JOB_ID': f'bench{os.getpid()}', 'LOCAL_WORLD_SIZE': str(ranks)}
    cmd = [sys.executable, __file__, '--child', str(store), mode, str(workers), str(a.seconds), str(a.batch), str(2 if ranks > 1 else 0)]
    ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(ranks)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
    return outs

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='1000,10000,100000'); ap.add_argument('--seconds', type=float, default=4.)
    ap.add_argument('--batch', type=int, default=256); ap.add_argument('--dir', default='/tmp/maniflow_scale')
    ap.add_argument('--ranks-size', type=int, default=10000); ap.add_argument('--no-record', action='store_true')
    ap.add_argument('--child', nargs=6)
    a = ap.parse_args()
    if a.child: s, m, w, sec, b, hold = a.child; return child(s, m, int(w), float(sec), int(b), float(hold))
    d = Path(a.dir); d.mkdir(parents=True, exist_ok=True)
    base = {'device': cpu_name(), 'torch': torch.__version__, 'numpy': np.__version__, 'zarr': zarr.__version__,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), 'batch': a.batch,
            'horizon': 16, 'n_obs_steps': 2, 'n_action_steps': 8, 'point_cloud': [2048, 6], 'obs_point_cloud': [2048, 3],
            'episode_len': EP_LEN, 'seconds': a.seconds, 'omp_num_threads': 1}
    rows = []
    for n in map(int, a.sizes.split(',')):
        if n * FRAME_BYTES * 1.1 > shutil.disk_usage(d).free: print(f'skip {n} frames: disk'); continue
        store = write_store(d/f'calvin_{n}.zarr', n)
        size = sum(f.stat().st_size for f in store.rglob('*') if f.is_file())
        for mode, workers in (('memory', 0), ('memory', 2), ('shared', 2), ('stream', 2)):
            if mode == 'memory' and n * FRAME_BYTES * 1.6 > 0.25 * _avail(): print(f'skip memory at {n}: RAM (shared machine)'); continue
            r = run(store, mode, workers, a)[0]
            rows.append({**base, 'frames': n, 'store_bytes': size, 'mode': mode, 'workers': workers, 'ranks': 1, **r}); print(rows[-1])
        if n == a.ranks_size:
            for mode in ('memory', 'shared'):
                rs = run(store, mode, 0, a, ranks=2)
                rows.append({**base, 'frames': n, 'store_bytes': size, 'mode': mode, 'workers': 0, 'ranks': 2,
                             'total_peak_rss_gib': round(sum(r['peak_rss_gib'] for r in rs), 3),
                             'total_pss_gib': round(sum(r['pss_gib'] for r in rs), 3), 'per_rank': rs}); print(rows[-1])
    if not a.no_record:
        out = Path(__file__).parent/'results'/'scale.json'
        old = json.loads(out.read_text()) if out.exists() else []
        tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(old + rows, indent=1) + '\n'); os.replace(tmp, out)

def _avail():
    from maniflow_nb.storage import available_memory
    return available_memory()

if __name__ == '__main__': main()
