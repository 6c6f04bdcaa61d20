"""Frames per second of scripted MetaWorld demonstration generation, with and without point clouds.

    python bench/demo_gen.py [--task reach-v3] [--episodes 5] [--n-points 512] [--image-size 128]

Appends one row to bench/results/demo_gen.json: the steady-state rate of what `maniflow-demos --point-cloud` does
per frame (expert + physics + render + point cloud), the rate including the environment's set-up, the state-only
rate, and a per-frame breakdown of where the time goes. The machine's load average is recorded with it: on a shared
2-core machine software rendering (llvmpipe) slows down roughly in proportion to the load.
"""
import os
os.environ.setdefault('MUJOCO_GL', 'egl')
import argparse, datetime, json, platform, time
from pathlib import Path
import numpy as np, torch, mujoco, metaworld
from maniflow_nb.config import atomic_path
from maniflow_nb.envs import MetaWorldEnv, expert_episode, episode_seed
from maniflow_nb.pointcloud import depth_to_points, crop_points, fps
from _common import cpu_name

RESULTS = Path(__file__).parent / 'results' / 'demo_gen.json'




def gl_renderer(env) -> str:
    "The OpenGL renderer behind MuJoCo's offscreen context (llvmpipe = software)."
    try:
        from OpenGL import GL
        env.camera._gl.make_current()
        return GL.glGetString(GL.GL_RENDERER).decode()
    except Exception as e: return f'unknown ({type(e).__name__})'


def rate(task, episodes, obs_keys, **kw) -> dict:
    "Frames/s of scripted demos: steady state (episodes only) and including the environment's set-up."
    t0 = time.perf_counter()
    env = MetaWorldEnv(task, obs_keys=obs_keys, **kw)
    t1, c1 = time.perf_counter(), time.process_time()
    try: frames = sum(len(expert_episode(env, episode_seed(0, i))[0]['action']) for i in range(episodes))
    finally: env.close()
    t2, c2 = time.perf_counter(), time.process_time()
    return {'frames': frames, 'frames_per_s': round(frames / (t2 - t1), 1), 'setup_s': round(t1 - t0, 2),
            'frames_per_s_with_setup': round(frames / (t2 - t0), 1),
            'cpu_ms_per_frame': round(1e3 * (c2 - c1) / frames, 2)}  # CPU time of all threads (llvmpipe renders on 2)


def breakdown(task, n_points, image_size, frames=100) -> dict:
    "Milliseconds per frame of each stage, measured separately on the states of one expert episode."
    env = MetaWorldEnv(task, obs_keys=('full_state',), image_size=image_size, n_points=n_points)
    try:
        renderer = gl_renderer(env)
        ep, _ = expert_episode(env, episode_seed(0, 0))
        t = time.perf_counter()
        for _ in range(frames): env.step(env.expert_action())
        physics = time.perf_counter() - t
        env.reset(seed=episode_seed(0, 0))
        t = time.perf_counter()
        shots = [env.camera.render(env._mw.data) for _ in range(frames)]
        render = time.perf_counter() - t
        K, T = env.camera.K, env.camera.cam2world(env._mw.data)
        t = time.perf_counter()
        crops = [crop_points(depth_to_points(d, K, T), *env.bounds) for _, d in shots]
        backproject = time.perf_counter() - t
        t = time.perf_counter()
        for c in crops: fps(c, n_points)
        sample = time.perf_counter() - t
    finally: env.close()
    ms = lambda s: round(1e3 * s / frames, 3)
    return {'renderer': renderer, 'ms_per_frame': {'expert_and_physics': ms(physics), 'render_rgbd': ms(render),
            'backproject_and_crop': ms(backproject), 'fps': ms(sample)}, 'points_in_box_mean': int(np.mean([len(c) for c in crops]))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', default='reach-v3')
    p.add_argument('--episodes', type=int, default=5)
    p.add_argument('--n-points', type=int, default=512)
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--device', default='cpu', help='ignored: simulation and rendering run on the CPU here')
    p.add_argument('--out', default=str(RESULTS))
    a = p.parse_args()
    torch.set_num_threads(1)
    pc = rate(a.task, a.episodes, ('full_state', 'agent_pos', 'point_cloud'), n_points=a.n_points, image_size=a.image_size)
    state = rate(a.task, a.episodes, ('full_state', 'agent_pos'))
    row = {'device': cpu_name(), 'torch': torch.__version__, 'mujoco': mujoco.__version__,
           'metaworld': _dist_version('metaworld'),
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'task': a.task, 'frames_per_s': pc['frames_per_s'], 'point_cloud': a.n_points, 'image_size': a.image_size,
           'episodes': a.episodes, 'frames': pc['frames'], 'setup_s': pc['setup_s'],
           'frames_per_s_with_setup': pc['frames_per_s_with_setup'], 'cpu_ms_per_frame': pc['cpu_ms_per_frame'],
           'state_only_frames_per_s': state['frames_per_s'],
           'mujoco_gl': os.environ.get('MUJOCO_GL'), 'load_avg_1min': round(os.getloadavg()[0], 2),
           **breakdown(a.task, a.n_points, a.image_size)}
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    with atomic_path(out) as tmp: Path(tmp).write_text(json.dumps(rows + [row], indent=1) + '\n')
    print(json.dumps(row, indent=1))


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == '__main__': main()
