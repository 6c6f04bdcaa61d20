"""maniflow-demos end to end, its bad-input errors, the observation window, and the evaluation runner in parallel vs in this process."""
import os, subprocess, sys
from pathlib import Path
import numpy as np, pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def demos(*args, timeout=300):
    "Run the maniflow-demos console script."
    env = {**os.environ, 'MUJOCO_GL': 'egl', 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    return subprocess.run([str(BIN / 'maniflow-demos'), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_demos_cli_writes_successful_episodes(tmp_path):
    from maniflow_nb.data import ReplayBuffer
    out = tmp_path / 'reach.zarr'
    r = demos('--env', 'metaworld', '--task', 'reach-v3', '--episodes', 2, '--point-cloud', '--img', '--depth',
              '--n-points', 64, '--image-size', 96, '--seed', 3, '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'wrote 2 episodes' in r.stdout
    rb = ReplayBuffer.from_path(out)
    assert sorted(rb.keys()) == ['action', 'depth', 'full_state', 'img', 'point_cloud', 'state']
    N = rb.n_steps
    assert rb.n_episodes == 2 and rb.episode_ends.dtype == np.int64 and rb.episode_ends[-1] == N
    shapes = {'action': (N, 4), 'state': (N, 9), 'full_state': (N, 39), 'point_cloud': (N, 64, 3),
              'img': (N, 96, 96, 3), 'depth': (N, 96, 96)}
    assert {k: rb[k].shape for k in shapes} == shapes
    assert rb['img'].dtype == np.uint8 and np.abs(rb['action']).max() <= 1
    for i in range(2):  # successful episodes only: each ends with the hand at the goal (reach's 5 cm radius)
        last = rb.get_episode(i)['full_state'][-1]
        assert np.linalg.norm(last[:3] - last[-3:]) < 0.05
    assert not [p for p in tmp_path.iterdir() if p.name != 'reach.zarr']  # no temporary leftovers


@pytest.mark.parametrize('args,expected', [
    (['--task', 'nope-v3'], "unknown MetaWorld task 'nope-v3'; valid tasks:"),
    (['--task', 'reach-v3', '--episodes', '0'], '--episodes must be >= 1, got 0'),
    (['--task', 'reach-v3', '--max_steps', '0'], '--max-steps must be >= 1, got 0'),
    (['--camera', 'nope', '--point-cloud'], "no camera 'nope' in the model"),
])
def test_demos_cli_bad_input(tmp_path, args, expected):
    out = tmp_path / 'x.zarr'
    r = demos(*args, '--out', out)
    assert r.returncode == 2
    assert r.stderr.startswith('maniflow-demos: ') and expected in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_demos_cli_needs_out():
    r = demos('--task', 'reach-v3')
    assert r.returncode == 2 and 'the following arguments are required: --out' in r.stderr


def test_demos_cli_existing_output(tmp_path):
    out = tmp_path / 'x.zarr'; out.mkdir(); (out / 'keep').write_text('x')
    r = demos('--task', 'reach-v3', '--episodes', 1, '--out', out)
    assert r.returncode == 2 and 'already exists (use --overwrite' in r.stderr and 'Traceback' not in r.stderr
    assert (out / 'keep').read_text() == 'x'


def test_runner_parallel_matches_sequential(tmp_path):
    from maniflow_nb.envs import MetaWorldRunner, ExpertPolicy, RandomPolicy
    sm = {'obs': {'agent_pos': {'shape': [39], 'store_key': 'full_state'}}, 'action': {'shape': [4]}}
    def run(policy, n_procs, **kw):
        res = MetaWorldRunner('reach-v3', sm, n_obs_steps=2, n_procs=n_procs, seeds=[0, 1], n_episodes=2, **kw).run(policy)
        return res, [(e['index'], e['seed'], e['success'], e['reward'], e['length']) for e in res['episodes']]
    rnd = RandomPolicy(n_action_steps=4)
    (seq, a), (par, b) = run(rnd, 1, n_action_steps=4, max_steps=30), run(rnd, 2, n_action_steps=4, max_steps=30)
    assert a == b and len(a) == 4 and seq['mean_reward'] == par['mean_reward']
    expert = ExpertPolicy('reach-v3', n_action_steps=1, state_key='agent_pos')
    (seq, a), (par, b) = run(expert, 1, n_action_steps=1), run(expert, 2, n_action_steps=1)
    assert a == b
    assert par['test_mean_score'] == 1.0 and par['success_seed0'] == par['success_seed1'] == 1.0


def test_open_camera_exits_quietly():
    code = ("from maniflow_nb.envs import MetaWorldEnv\n"
            "env = MetaWorldEnv('reach-v3', obs_keys=('point_cloud',), n_points=32); env.reset(seed=0); print('done')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, 'MUJOCO_GL': 'egl', 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0 and r.stdout.strip() == 'done'
    assert 'Exception ignored' not in r.stderr and 'EGLError' not in r.stderr, r.stderr[-500:]


def test_obs_window_batched():
    "N envs: the window slides for active envs only, restarts on reset, and takes arrays or tensors."
    import torch
    from maniflow_nb.envs import ObsWindow
    w = ObsWindow({'x': np.array([[0.], [10.]], np.float32)}, 2)
    w.push({'x': torch.tensor([[1.], [11.]])}, active=torch.tensor([False, True]))
    w.push({'x': torch.tensor([[2.], [12.]])})
    assert w.obs['x'][..., 0].tolist() == [[0., 2.], [11., 12.]] and w.obs['x'].dtype == torch.float32
    w.reset({'x': torch.tensor([[7.], [8.]])}, torch.tensor([True, False]))
    assert w.obs['x'][..., 0].tolist() == [[7., 7.], [11., 12.]]


def test_rollout_window_is_the_observation_history():
    "The policy sees the last To observations, the first one repeated at the start of the episode."
    from collections import deque
    from maniflow_nb.envs import MetaWorldEnv, ExpertPolicy, rollout
    class Recorder(ExpertPolicy):
        seen, acts = [], []
        def predict_action(self, obs, generator=None):
            out = super().predict_action(obs)
            self.seen.append(obs['agent_pos'][0].numpy().copy()); self.acts.append(out['action'][0].numpy())
            return out
    env = MetaWorldEnv('reach-v3', max_steps=9)
    pol = Recorder('reach-v3', n_action_steps=2, state_key='agent_pos')
    r = rollout(env, pol, {'agent_pos': ('full_state', 'low_dim', (39,))}, 3, 2, seed=5)
    obs, _ = env.reset(seed=5)
    hist, t = deque([obs['full_state']] * 3, maxlen=3), 0
    for seen, acts in zip(pol.seen, pol.acts):
        np.testing.assert_array_equal(seen, np.stack(hist))
        for a in acts[:min(2, r['length'] - t)]:
            hist.append(env.step(a)[0]['full_state']); t += 1
    assert len(pol.seen) == 5 and t == r['length'] == 9
    env.close()
