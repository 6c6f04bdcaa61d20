"""Frames per second of `maniflow-convert calvin` (200x200 static camera, 2048-point clouds) and the quality of its sampler.

    python bench/convert_calvin.py [--frames 512] [--n-points 2048] [--workers 1 2] [--strides 1 2] [--quality-frames 50]

Writes a CALVIN split in the real on-disk format (compressed .npz per frame; a table with random boxes and 2 mm depth
noise, a new scene every frame), converts it with each number of workers and FPS pre-pass stride, and appends rows
to bench/results/convert_calvin.json:
- kind 'baseline': the frame-by-frame pipeline of earlier versions (`rgbd_to_point_cloud` + `StoreWriter`, one process)
  on the same frames just before, so the rates below can be compared at the same machine load;
- kind 'cpu_probe': FPS calls per second of one process alone and of two at once (how much parallel CPU the shared
  machine gives right now: a pair summing to the solo rate means one core's worth is free, and workers cannot help);
- kind 'rate': end-to-end frames/s (wall clock), frames per CPU-second (this process and its workers: the rate an
  unshared core would give), a per-frame breakdown (read .npz, back-project + crop, FPS, whole step), the load average;
- kind 'quality': coverage of every cropped point by the sample (max / p99 / mean nearest distance, m) and Chamfer
  distance to exact FPS, over `--quality-frames` frames, for exact FPS from another start point (how much exact FPS
  itself varies) and for each pixel-stride pre-pass; ratios are to exact FPS on the full cloud (start point 0).
The development machine has 2 cores shared with other jobs: the load average is recorded with every row.
"""
import argparse, datetime, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, torch, fpsample
from maniflow_nb.config import atomic_path
from maniflow_nb.data import StoreWriter
from maniflow_nb.calvin import (make_calvin_fixture, convert_calvin, read_calvin_frame, calvin_camera_matrices, calvin_step)
from maniflow_nb.pointcloud import CloudMaker, fps_indices, coverage, chamfer, rgbd_to_point_cloud
from _common import cpu_name

RESULTS = Path(__file__).parent / 'results' / 'convert_calvin.json'


def ms(f, n=10) -> float:
    "Mean milliseconds of `f()` over `n` calls."
    t = time.perf_counter()
    for _ in range(n): f()
    return round((time.perf_counter() - t) / n * 1000, 2)


def cpu_s() -> float:
    "CPU seconds of this process and its finished children."
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def breakdown(frames, n_points, stride) -> dict:
    "Milliseconds per frame of each stage (over a few frames)."
    K, T = calvin_camera_matrices()
    cm = CloudMaker(K, T, (200, 200), n_points, stride=stride)
    fr = [read_calvin_frame(p) for p in frames]
    xyz = [cm.points(f['depth_static'])[0] for f in fr]
    it = lambda xs: iter(xs * 10)
    r, d, x, f = it(frames), it(fr), it(xyz), it(fr)
    return {'read_ms': ms(lambda: read_calvin_frame(next(r)), len(frames)),
            'cloud_points_ms': ms(lambda: cm.points(next(d)['depth_static']), len(frames)),
            'fps_ms': ms(lambda: fps_indices(next(x), n_points), len(frames)),
            'step_ms': ms(lambda: calvin_step(next(f), K, T, n_points, cloud=cm), len(frames))}


def baseline(frames, out, n_points) -> float: # frames per second
    "The earlier frame-by-frame conversion: `rgbd_to_point_cloud` on every frame, appended by `StoreWriter`."
    K, T = calvin_camera_matrices()
    t, w = time.perf_counter(), StoreWriter(out)
    for p in frames:
        fr = read_calvin_frame(p)
        w.add_frame(dict(img=fr['rgb_static'], depth=fr['depth_static'],
                         point_cloud=rgbd_to_point_cloud(fr['depth_static'], K, T, n_points, rgb=fr['rgb_static']),
                         state=fr['robot_obs'].astype(np.float32), action=fr['rel_actions'].astype(np.float32)))
    w.close()
    return round(len(frames) / (time.perf_counter() - t), 1)


PROBE = """import time, numpy as np, fpsample
x = np.random.default_rng(0).random((40000, 3)).astype(np.float32); t, n = time.perf_counter(), 0
while time.perf_counter() - t < 4: fpsample.bucket_fps_kdline_sampling(x, 2048, h=5, start_idx=0); n += 1
print(n / (time.perf_counter() - t))"""

def cpu_probe() -> dict:
    "FPS calls/s of one process alone, and the sum of two running at once."
    run = lambda k: [subprocess.Popen([sys.executable, '-c', PROBE], stdout=subprocess.PIPE, text=True) for _ in range(k)]
    rate = lambda ps: sum(float(p.communicate()[0]) for p in ps)
    solo = rate(run(1)); pair = rate(run(2))
    return {'solo_fps_calls_per_s': round(solo, 1), 'pair_fps_calls_per_s': round(pair, 1), 'parallel_gain': round(pair / solo, 2)}


def quality(frames, n_points, strides) -> dict:
    "Coverage and Chamfer of exact FPS (other start) and of stride pre-passes, relative to exact FPS from point 0."
    K, T = calvin_camera_matrices()
    full = CloudMaker(K, T, (200, 200), n_points)
    makers = {'exact_seed1': CloudMaker(K, T, (200, 200), n_points, seed=1),
              **{f'stride{s}': CloudMaker(K, T, (200, 200), n_points, stride=s) for s in strides if s > 1}}
    rows = {k: [] for k in ['exact', *makers]}
    for p in frames:
        depth = read_calvin_frame(p)['depth_static']
        cloud = full.points(depth)[0]
        ref = full(depth); c = coverage(cloud, ref)
        rows['exact'].append((c['max'], c['p99'], c['mean'], 0.0))
        for k, m in makers.items():
            smp = m(depth); c = coverage(cloud, smp)
            rows[k].append((c['max'], c['p99'], c['mean'], chamfer(smp, ref)))
    ex = np.array(rows['exact'])
    out = {}
    for k, r in rows.items():
        r = np.array(r); ratio = r[:, :3] / ex[:, :3]
        out[k] = {'coverage_max_m': round(r[:, 0].mean(), 5), 'coverage_p99_m': round(r[:, 1].mean(), 5),
                  'coverage_mean_m': round(r[:, 2].mean(), 6), 'chamfer_to_exact_m': round(r[:, 3].mean(), 6),
                  'max_ratio_mean': round(ratio[:, 0].mean(), 3), 'max_ratio_worst': round(ratio[:, 0].max(), 3),
                  'p99_ratio_mean': round(ratio[:, 1].mean(), 3), 'mean_ratio_mean': round(ratio[:, 2].mean(), 4)}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--frames', type=int, default=512); p.add_argument('--n-points', type=int, default=2048)
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2]); p.add_argument('--strides', type=int, nargs='+', default=[1, 2])
    p.add_argument('--quality-frames', type=int, default=50); p.add_argument('--group', type=int, default=128)
    a = p.parse_args()
    os.environ.setdefault('PYTHONPATH', str(Path(__file__).resolve().parents[1]))   # spawned workers import maniflow_nb
    base = {'device': cpu_name(), 'torch': torch.__version__, 'numpy': np.__version__, 'fpsample': fpsample.__version__,
            'date': datetime.date.today().isoformat(), 'n_points': a.n_points,
            'frames_source': 'CALVIN-format fixture: 200x200 static camera, table + 5 random boxes per frame, 2 mm depth noise'}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        split = make_calvin_fixture(d, n_episodes=max(1, a.frames // 64), episode_len=min(64, a.frames), boxes=5)
        print(f'fixture: {time.perf_counter() - t:.1f} s')
        frames = sorted(split.glob('episode_*.npz'))
        rows.append({**base, 'kind': 'cpu_probe', **cpu_probe(), 'load_avg_1m': round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]))
        rows.append({**base, 'kind': 'baseline', 'frames': min(256, len(frames)), 'workers': 1,
                     'frames_per_s': baseline(frames[:256], Path(d) / 'baseline.zarr', a.n_points), 'load_avg_1m': round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]))
        for stride in a.strides:
            bd = breakdown(frames[:8], a.n_points, stride)
            for w in a.workers:
                out = Path(d) / f'out_{w}_{stride}.zarr'
                c0, t = cpu_s(), time.perf_counter()
                res = convert_calvin(d, out, n_points=a.n_points, workers=w, fps_stride=stride, group=a.group, progress=False)
                wall, cpu = time.perf_counter() - t, cpu_s() - c0
                size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
                rows.append({**base, 'kind': 'rate', 'frames': res['steps'], 'workers': w, 'fps_stride': stride, 'group': a.group,
                             'frames_per_s': round(res['steps'] / wall, 1), 'frames_per_cpu_s': round(res['steps'] / cpu, 1),
                             'store_bytes_per_frame': size // res['steps'], **bd, 'load_avg_1m': round(os.getloadavg()[0], 2)})
                print(json.dumps(rows[-1]))
        t = time.perf_counter()
        q = quality(frames[:: max(1, len(frames) // a.quality_frames)][:a.quality_frames], a.n_points, a.strides)
        rows.append({**base, 'kind': 'quality', 'frames': min(a.quality_frames, len(frames)), 'samplers': q,
                     'seconds': round(time.perf_counter() - t, 1), 'load_avg_1m': round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1], indent=1))
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    with atomic_path(RESULTS) as tmp: Path(tmp).write_text(json.dumps(old + rows, indent=1) + '\n')


if __name__ == '__main__': main()
