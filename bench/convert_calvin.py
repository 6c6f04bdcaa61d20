"""Frames per second of `maniflow-convert calvin` on CALVIN-format frames (200x200 static camera, 2048-point clouds).

    python bench/convert_calvin.py [--frames 60] [--n-points 2048] [--workers 0]

Writes a CALVIN fixture in the real on-disk format (compressed .npz per frame), converts it, and appends one row to
bench/results/convert_calvin.json: the end-to-end rate, and a per-frame breakdown (read .npz, back-project,
farthest point sampling). The machine's load average is recorded with it (the development machine is shared).
"""
import argparse, datetime, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np, torch
from maniflow_nb.config import atomic_path
from maniflow_nb.convert import make_calvin_fixture, convert_calvin, read_calvin_frame, calvin_camera_matrices
from maniflow_nb.pointcloud import depth_to_points, points_with_color, fps
from _common import cpu_name

RESULTS = Path(__file__).parent / 'results' / 'convert_calvin.json'




def ms(f, n=10) -> float:
    "Mean milliseconds of `f()` over `n` calls."
    t = time.perf_counter()
    for _ in range(n): f()
    return round((time.perf_counter() - t) / n * 1000, 2)


def breakdown(split, n_points) -> dict:
    "Milliseconds per frame of each stage."
    path = next(split.glob('episode_*.npz'))
    K, T = calvin_camera_matrices()
    fr = read_calvin_frame(path)
    pts = points_with_color(depth_to_points(fr['depth_static'], K, T), fr['rgb_static'])
    return {'read_ms': ms(lambda: read_calvin_frame(path)), 'deproject_ms': ms(lambda: depth_to_points(fr['depth_static'], K, T)),
            'fps_ms': ms(lambda: fps(pts, n_points))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--frames', type=int, default=60); p.add_argument('--n-points', type=int, default=2048)
    p.add_argument('--workers', type=int, default=0)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        split = make_calvin_fixture(d, n_episodes=max(1, a.frames // 20), episode_len=min(20, a.frames))
        t = time.perf_counter()
        res = convert_calvin(d, Path(d) / 'out.zarr', n_points=a.n_points, workers=a.workers, progress=False)
        wall = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (Path(d) / 'out.zarr').rglob('*') if f.is_file())
        row = {'device': cpu_name(), 'torch': torch.__version__, 'date': datetime.date.today().isoformat(),
               'frames': res['steps'], 'n_points': a.n_points, 'workers': a.workers,
               'frames_per_s': round(res['steps'] / wall, 1), 'store_bytes_per_frame': size // res['steps'],
               **breakdown(split, a.n_points), 'load_avg_1m': round(os.getloadavg()[0], 2)}
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    with atomic_path(RESULTS) as tmp: Path(tmp).write_text(json.dumps(rows + [row], indent=1) + '\n')
    print(json.dumps(row, indent=1))


if __name__ == '__main__': main()
