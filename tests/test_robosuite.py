"robosuite Lift / PickPlaceCan: env_meta, observations, scripted experts, demos (Zarr + robomimic HDF5), vectorized env, runner, configs."
import os
os.environ.setdefault('MUJOCO_GL', 'egl')
import json
import numpy as np, pytest, torch, h5py
from omegaconf import OmegaConf

from maniflow_nb.config import ConfigError, compose_config
from maniflow_nb.data import ReplayBuffer
from maniflow_nb.convert import convert_robomimic
from maniflow_nb.robosuite_env import (EXPERT_TASKS, LOW_DIM_KEYS, ROBOSUITE_TASKS, WORKSPACE, RobosuiteEnv, RobosuiteExpertPolicy, RobosuiteRunner,
                                       RobosuiteVecEnv, env_meta_from_dataset, load_env_meta, make_env_meta, robosuite_demos,
                                       robosuite_kwargs, runner_env_meta, state_dim, vecenv_from_config)


def state_meta(task):
    return {'obs': {'agent_pos': {'shape': [state_dim(task)], 'type': 'low_dim', 'store_key': 'state'}}, 'action': {'shape': [7]}}


def test_env_meta_round_trip():
    for task in ROBOSUITE_TASKS:
        m = make_env_meta(task)
        assert load_env_meta(json.dumps(m)) == m == load_env_meta(OmegaConf.create(m))
        assert m['env_kwargs']['controller_configs']['type'] == 'OSC_POSE' and m['env_kwargs']['robots'] == ['Panda']
    # the yaml task config holds exactly the env_meta we build
    t = OmegaConf.load(os.path.join(os.path.dirname(__file__), '..', 'maniflow_nb', 'conf', 'task', 'robosuite_lift_state.yaml'))
    assert OmegaConf.to_container(t.env_runner.env_meta) == make_env_meta('Lift')
    # an old robomimic controller config (robosuite < 1.4 names)
    name, kw = robosuite_kwargs({'env_name': 'Lift', 'type': 1, 'env_kwargs': {'controller_configs': {'type': 'OSC_POSE', 'damping': 1, 'damping_limits': [0, 10]}}})
    assert kw['controller_configs'] == {'type': 'OSC_POSE', 'damping_ratio': 1, 'damping_ratio_limits': [0, 10]}
    with pytest.raises(ConfigError, match='valid tasks'): load_env_meta({'env_name': 'Door', 'type': 1})
    assert set(ROBOSUITE_TASKS) - set(EXPERT_TASKS) == {'PickPlace'}
    with pytest.raises(ConfigError, match='no scripted expert'): RobosuiteExpertPolicy('PickPlace')
    with pytest.raises(ConfigError, match='robosuite'): load_env_meta({'env_name': 'Lift', 'type': 3})


def test_env_observations_and_seeding():
    env = RobosuiteEnv('PickPlaceCan', obs_keys=('state', 'object', 'robot0_eef_pos', 'depth', 'point_cloud'), image_size=48, n_points=64, max_steps=3)
    try:
        o1, _ = env.reset(seed=7); o2, _ = env.reset(seed=7); o3, _ = env.reset(seed=8)
        np.testing.assert_array_equal(o1['state'], o2['state'])
        assert not np.allclose(o1['object'], o3['object'])
        assert o1['state'].shape == (23,) and o1['object'].shape == (14,) and o1['depth'].shape == (48, 48)
        np.testing.assert_array_equal(o1['state'][:3], o1['robot0_eef_pos'])
        pc = o1['point_cloud']
        assert pc.shape == (64, 3) and (pc >= np.array(WORKSPACE[0])).all() and (pc <= np.array(WORKSPACE[1])).all()
        env.reset(seed=7)
        outs = [env.step(np.zeros(7)) for _ in range(3)]
        assert [o[3] for o in outs] == [False, False, True]          # truncated at max_steps
        assert all(o[2] is False for o in outs)
    finally: env.close()


@pytest.mark.parametrize('task', EXPERT_TASKS)
def test_expert_success(task):
    res = RobosuiteRunner(task, state_meta(task), n_obs_steps=2, n_action_steps=1, max_steps=300, n_episodes=5, num_envs=5).run(RobosuiteExpertPolicy(task), progress=False)
    assert res['test_mean_score'] >= 0.8, res['episodes']
    assert len(res['episodes']) == 5 and len({r['seed'] for r in res['episodes']}) == 1


def test_demos_and_hdf5_round_trip(tmp_path):
    rb = robosuite_demos('Lift', 2, tmp_path/'lift.zarr', hdf5=tmp_path/'lift.hdf5', img=True, depth=True, image_size=32, progress=False)
    assert rb.n_episodes == 2 and rb['img'].shape[1:] == (32, 32, 3) and rb['state'].shape[1] == 19
    with h5py.File(tmp_path/'lift.hdf5') as f:
        assert json.loads(f['data'].attrs['env_args'])['env_name'] == 'Lift'
        g = f['data/demo_1']
        assert set(g['obs']) == set(LOW_DIM_KEYS) | {'agentview_image', 'agentview_depth'}
        assert g['actions'].shape == (g.attrs['num_samples'], 7) and g['dones'][-1] == 1 and g['rewards'][:].max() == 1
        assert g['states'].ndim == 2
    convert_robomimic(tmp_path/'lift.hdf5', tmp_path/'conv.zarr', obs_keys=list(LOW_DIM_KEYS), progress=False)
    conv = ReplayBuffer.from_path(tmp_path/'conv.zarr')
    np.testing.assert_allclose(conv['state'], rb['state']); np.testing.assert_allclose(conv['action'], rb['action'])
    np.testing.assert_array_equal(conv['img'], rb['img']); np.testing.assert_array_equal(conv.episode_ends, rb.episode_ends)
    assert env_meta_from_dataset(tmp_path/'lift.hdf5') == env_meta_from_dataset(tmp_path/'lift.zarr') == env_meta_from_dataset(tmp_path/'conv.zarr')
    with pytest.raises(FileExistsError): robosuite_demos('Lift', 1, tmp_path/'lift.zarr', progress=False)


def test_vecenv_interface():
    with pytest.raises(ConfigError, match=r"expected one of \['success', 'dense', 'progress'\]"): RobosuiteVecEnv('Lift', state_meta('Lift'), 1, reward='shaped')
    env = RobosuiteVecEnv('Lift', state_meta('Lift'), 2, max_steps=4, reward='dense')
    try:
        obs = env.reset(seed=[5, 6])
        assert obs['agent_pos'].shape == (2, 19) and obs['agent_pos'].dtype == torch.float32
        a = torch.zeros(2, 7); a[:, 2] = -1
        o2, r, d, s = env.step(a, torch.tensor([True, False]))
        assert torch.equal(o2['agent_pos'][1], obs['agent_pos'][1]) and not torch.equal(o2['agent_pos'][0], obs['agent_pos'][0])
        assert r[0] > 0 and r[1] == 0 and not d.any() and not s.any()     # dense reach reward; inactive env untouched
        for _ in range(3): _, _, d, _ = env.step(a, torch.tensor([True, True]))
        assert d.tolist() == [True, False]                               # env 0 hit max_steps, env 1 stepped 3 times
    finally: env.close()


def test_configs():
    c = compose_config('train_maniflow_state_rl_lift', ['task.env_runner.env_meta.env_name=PickPlaceCan'])
    assert c.task.env_runner.env_name == 'PickPlaceCan' and runner_env_meta(c.task.env_runner)['env_name'] == 'PickPlaceCan'
    with pytest.raises(ConfigError, match='set both'):
        runner_env_meta(compose_config('train_maniflow_state_rl_lift', ['task.env_runner.env_config.env_name=PickPlaceCan']).task.env_runner)
    env = vecenv_from_config(c.task.env_runner, state_meta('PickPlaceCan'), 1)
    try: assert env.reset(0)['agent_pos'].shape == (1, 23) and env.max_steps == 400
    finally: env.close()
    t = compose_config('maniflow_state_robosuite')
    r = RobosuiteRunner.from_config(t, n_episodes=1)
    assert (r.env_meta['env_name'], r.n_obs_steps, r.n_action_steps, r.max_steps) == ('Lift', 2, 8, 400)


def test_pickplace_is_the_four_object_task():
    "PickPlace is robosuite's 4-object env (65-d state), never an alias of PickPlaceCan; a 23-d policy is refused on it."
    env = RobosuiteVecEnv('PickPlace', state_meta('PickPlace'), 1, max_steps=2)
    try:
        assert env.task == 'PickPlace' and env.envs[0]._rs.__class__.__name__ == 'PickPlace'
        assert {o.name for o in env.envs[0]._rs.objects} == {'Milk', 'Bread', 'Cereal', 'Can'}
        assert env.reset(0)['agent_pos'].shape == (1, 65)
    finally: env.close()
    with pytest.raises(ConfigError, match="PickPlace's state is 65-d"): RobosuiteVecEnv('PickPlace', state_meta('PickPlaceCan'), 1)


def test_same_env_same_results():
    "Envs built at different points of NumPy's global stream are the same model: the same actions give the same states."
    np.random.rand(5); a = RobosuiteVecEnv('Lift', state_meta('Lift'), 2, max_steps=5)
    np.random.rand(3); b = RobosuiteVecEnv('Lift', state_meta('Lift'), 2, max_steps=5)
    try:
        assert a.envs[0]._rs.cube.size == b.envs[1]._rs.cube.size
        oa, ob = a.reset(3), b.reset(3)
        act, on = torch.full((2, 7), 0.3), torch.ones(2, dtype=torch.bool)
        for _ in range(4): oa, ob = a.step(act, on)[0], b.step(act, on)[0]
        assert torch.equal(oa['agent_pos'], ob['agent_pos'])
    finally: a.close(); b.close()
