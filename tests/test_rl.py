"""`maniflow-rl` (PPO fine-tuning with flow_sde): CLI errors, TwoRoutes and MetaWorld runs end to end, resume,
checkpoints readable by the evaluator, the papermill job notebook, and (slow) PPO improving a BC policy on TwoRoutes.
The golden checks 6-15 (nbs/design.ipynb#rl) run in nbs/51_ppo.ipynb (checks 1-5 in nbs/12_flow.ipynb)."""
import os, sys, json, subprocess
from pathlib import Path
import pytest, torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PY, BIN = sys.executable, Path(sys.executable).parent
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore',
       'MUJOCO_GL': os.environ.get('MUJOCO_GL', 'egl')}
TINY = ['debug=true', 'task.demo_episodes=20', 'task.bc_steps=10']

def run(cmd, **kw): return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, **kw)

def entry_point():
    "The installed console script, else exactly what it runs."
    exe = BIN/'maniflow-rl'
    return [str(exe)] if exe.exists() else [PY, '-c', 'from maniflow_nb.rl import rl_cli; rl_cli()']

def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles: assert n in r.stderr, r.stderr

def cli_error(capsys, *argv):
    "Run `rl_cli` in process; its one stderr line (it must exit with code 2)."
    from maniflow_nb.rl import rl_cli
    with pytest.raises(SystemExit) as e: rl_cli(list(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    return err

def check_videos(rd, rec, grid, n):
    "The run dir's videos/: the grid first, then `n` labelled episodes, each a readable video with frames."
    import imageio.v2 as imageio
    paths = [Path(p) for p in rec['video_paths']]
    assert json.loads((rd/'eval.json').read_text())['video_paths'] == rec['video_paths']
    assert paths[0].stem == grid and len(paths) == 1 + n and all(p.parent == rd/'videos' for p in paths), paths
    for p in paths:
        frames = imageio.mimread(p, memtest=False)
        assert len(frames) >= 2 and frames[0].ndim == 3 and frames[0].shape[2] == 3, (p, len(frames))

def test_cli_entry_point_bad_key(tmp_path):
    one_line_error(run([*entry_point(), '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/a', 'training.num_env=4']), 'training.num_env')

def test_cli_bad_input(tmp_path, capsys):
    assert 'noise_level is 0' in cli_error(capsys, '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/b', 'policy.noise_level=0')
    assert 'policy.checkpoint is not set' in cli_error(capsys, '--config-name=train_maniflow_pointcloud_rl', f'run_dir={tmp_path}/c')
    assert 'none.ckpt does not exist' in cli_error(capsys, '-cn', 'train_maniflow_state_rl', f'run_dir={tmp_path}/d', f'policy.checkpoint={tmp_path}/none.ckpt')
    (tmp_path/'junk.ckpt').write_text('not a checkpoint')
    assert 'is not a maniflow_nb checkpoint' in cli_error(capsys, '--config-name', 'train_maniflow_state_rl', f'run_dir={tmp_path}/e',
                                                          f'policy.checkpoint={tmp_path}/junk.ckpt')
    assert 'training.num_envs is 0' in cli_error(capsys, '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/f', 'training.num_envs=0')
    assert "policy.noise_method is 'ode'" in cli_error(capsys, '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/g', 'policy.noise_method=ode')
    assert not (tmp_path/'d').exists() and not (tmp_path/'e').exists() and not (tmp_path/'f').exists()

def test_tworoutes_cli_run_resume_and_evaluator(tmp_path, capsys):
    rd = tmp_path/'run'
    r = run([*entry_point(), '--config-name', 'train_tworoutes_rl', f'run_dir={rd}', *TINY, 'training.checkpoint_every=2'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'success' in r.stdout and (rd/'metrics.csv').exists() and (rd/'config.yaml').exists()
    rec = json.loads((rd/'eval.json').read_text())
    assert 0 <= rec['before']['success_rate'] <= 1 and 0 <= rec['after']['success_rate'] <= 1
    check_videos(rd, rec, 'tworoutes', 2)                  # debug: 2 evaluation episodes
    import pandas as pd
    m = pd.read_csv(rd/'metrics.csv')
    for col in ('success_rate', 'episode_reward', 'episode_length', 'value_loss', 'policy_loss', 'approx_kl', 'clip_frac',
                'explained_variance', 'fps', 'rollout_time', 'grad_norm_actor', 'grad_norm_critic'): assert col in m, col
    assert m['env_steps'].iloc[-1] >= 200 and list(m['iteration']) == list(range(len(m)))
    assert len(list((rd/'checkpoints').glob('iter_*.ckpt'))) >= 2
    ck = torch.load(rd/'checkpoints'/'latest.ckpt', weights_only=True)
    assert ck['iteration'] == len(m) and ck['env_steps'] == m['env_steps'].iloc[-1]
    from maniflow_nb.checkpoint import load_policy_from_checkpoint
    pol = load_policy_from_checkpoint(rd/'checkpoints'/'latest.ckpt')
    assert pol.value_head is not None and torch.equal(pol.state_dict()['value_head.0.weight'], ck['model']['value_head.0.weight'])
    from maniflow_nb.config import compose_config
    from maniflow_nb.rl import run_rl
    capsys.readouterr()
    rec2 = run_rl(compose_config('train_tworoutes_rl', [f'run_dir={rd}', *TINY]))   # budget already spent: resumes, no iteration
    assert 'resuming from' in capsys.readouterr().out and rec2['before'] == rec['before']
    assert len(pd.read_csv(rd/'metrics.csv')) == len(m)

def test_tworoutes_group_advantage_run(tmp_path):
    "advantage.estimator=group travels from the config to the trainer and into eval.json; the run trains and evaluates."
    from maniflow_nb.config import compose_config
    from maniflow_nb.rl import run_rl
    rec = run_rl(compose_config('train_tworoutes_rl', [f'run_dir={tmp_path}', *TINY, 'advantage.estimator=group', 'advantage.group_size=2']))
    assert (rec['advantage'], rec['group_size']) == ('group', 2) and rec['env_steps'] >= 200
    assert json.loads((tmp_path/'eval.json').read_text())['advantage'] == 'group'

def _metaworld_state_checkpoint(path):
    "A (untrained) maniflow-train-style checkpoint of a small state policy for reach-v3."
    from maniflow_nb.config import compose_config, to_plain
    from maniflow_nb.normalizer import LinearNormalizer
    from maniflow_nb.policies import make_policy
    from maniflow_nb.checkpoint import save_checkpoint
    cfg = compose_config('maniflow_state_metaworld', ['horizon=8', 'n_action_steps=4', 'policy.n_layer=1', 'policy.n_emb=32', 'policy.token_dim=32'])
    g = torch.Generator().manual_seed(0)
    pol = make_policy(cfg, LinearNormalizer().fit({'agent_pos': torch.randn(100, 39, generator=g), 'action': torch.rand(100, 4, generator=g) * 2 - 1}))
    save_checkpoint({'model': pol.state_dict(), 'config': to_plain(cfg)}, path)
    return path

def test_metaworld_state_run_from_a_training_checkpoint(tmp_path):
    from maniflow_nb.config import compose_config
    from maniflow_nb.rl import run_rl
    ck = _metaworld_state_checkpoint(tmp_path/'bc.ckpt')
    ov = [f'run_dir={tmp_path}/rl', f'policy.checkpoint={ck}', 'policy.horizon=8', 'policy.n_action_steps=4',
          'policy.num_inference_steps=2', 'debug=true', 'task.env_runner.max_steps=12', 'task.env_runner.num_episodes=1',
          'training.device=cpu']
    rec = run_rl(compose_config('train_maniflow_state_rl', ov))
    assert set(rec) == {'env_name', 'before', 'after', 'rl_seconds', 'checkpoint', 'env_steps', 'total_timesteps', 'video_paths', 'init_noise_scale', 'noise_dims', 'advantage', 'group_size'}
    assert rec['env_name'] == 'reach-v3'
    check_videos(tmp_path/'rl', rec, 'reach-v3_seed10000', 1)
    ck2 = torch.load(rec['checkpoint'], weights_only=True)
    assert 'value_head.0.weight' in ck2['model'] and ck2['config']['policy']['add_value_head'] is True
    assert ck2['config']['policy']['num_inference_steps'] == 2 and ck2['rl_config']['task']['env_runner']['env_name'] == 'reach-v3'
    with pytest.raises(Exception, match='policy.horizon is 16'):
        run_rl(compose_config('train_maniflow_state_rl', [f'run_dir={tmp_path}/rl2', f'policy.checkpoint={ck}', 'debug=true']))

def test_job_notebook_papermill(tmp_path):
    out = tmp_path/'train_rl.ipynb'
    r = run([PY, '-m', 'papermill', str(ROOT/'nbs'/'train_rl.ipynb'), str(out), '-p', 'run_dir', str(tmp_path/'run'),
             '-p', 'overrides', json.dumps(TINY), '--no-progress-bar'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/'run'/'eval.json').exists() and (tmp_path/'run'/'checkpoints'/'latest.ckpt').exists()

@pytest.mark.slow
def test_tworoutes_ppo_improves_a_bimodal_bc_policy(tmp_path):
    from maniflow_nb.config import compose_config
    from maniflow_nb.rl import run_rl
    rec = run_rl(compose_config('train_tworoutes_rl', [f'run_dir={tmp_path}', 'task.bc_steps=400', 'training.total_timesteps=40000']))
    b, a = rec['before']['success_rate'], rec['after']['success_rate']
    assert b <= 0.75 and a >= 0.9 and a > b + 0.2, (b, a)

def test_multirun_checks_every_combination_first(tmp_path, capsys):
    "`maniflow-rl -m`: a bad value in the second combination is one line naming it, before any run starts."
    err = cli_error(capsys, '-m', '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/mr', *TINY, 'training.num_envs=2,0')
    assert err.strip() == 'maniflow-rl: multirun 2/2 (training.num_envs=0): training.num_envs is 0, expected a positive integer', err
    assert not (tmp_path/'mr').exists()

def test_multirun_runs_each_combination(tmp_path, capsys):
    "`maniflow-rl -m ... training.seed=0,1`: two runs in their own dirs, the table, the real env-step count in eval.json."
    from maniflow_nb.rl import rl_cli
    rl_cli(['-m', '--config-name', 'train_tworoutes_rl', f'run_dir={tmp_path}/mr', *TINY, 'seed=0,1'])
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path/'mr').iterdir()) == ['0_seed=0', '1_seed=1']
    assert 'best success_rate' in out and 'note: training.total_timesteps=200 is checked after whole iterations' in out
    for d in ('0_seed=0', '1_seed=1'):
        rec = json.loads((tmp_path/'mr'/d/'eval.json').read_text())
        import pandas as pd
        assert rec['total_timesteps'] == 200 and rec['env_steps'] == pd.read_csv(tmp_path/'mr'/d/'metrics.csv')['env_steps'].iloc[-1] >= 200

def test_slurm_renders_a_valid_rl_job(tmp_path, monkeypatch):
    "`maniflow-slurm --notebook nbs/train_rl.ipynb --gpus 0`: the rendered papermill parameters pass the notebook's check and compose."
    import shlex
    from maniflow_nb.slurm import slurm_cli, notebook_parameters
    from maniflow_nb.train import check_job_parameters, override_list
    from maniflow_nb.config import compose_config
    monkeypatch.chdir(ROOT)
    slurm_cli(['--config-name', 'train_tworoutes_rl', '--gpus', '0', '--notebook', 'nbs/train_rl.ipynb', '--run-dir', str(tmp_path/'rl'), *TINY])
    line = next(l for l in (tmp_path/'rl'/'job.sbatch').read_text().splitlines() if l.startswith('srun '))
    args = shlex.split(line.replace('"$RUN_DIR"', str(tmp_path/'rl')))
    params = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == '-p'}
    assert set(params) == set(notebook_parameters(ROOT/'nbs'/'train_rl.ipynb')), params       # no synthetic_data
    ns = {**params, 'overrides': override_list(params['overrides'])}
    check_job_parameters(ns, {'config_name': str, 'overrides': list, 'run_dir': str})
    cfg = compose_config(ns['config_name'], ns['overrides'] + [f"run_dir={ns['run_dir']}"])
    assert cfg.training.device == 'cpu' and cfg.debug is True

def _robosuite_pointcloud_checkpoint(path):
    "An untrained maniflow-train-style point-cloud policy for robosuite PickPlace (65-d state, 64-point clouds)."
    from maniflow_nb.config import compose_config, to_plain
    from maniflow_nb.normalizer import fit_normalizer
    from maniflow_nb.policies import make_policy
    from maniflow_nb.checkpoint import save_checkpoint
    cfg = compose_config('maniflow_pointcloud_metaworld', ['task=robosuite_pickplace', 'horizon=8', 'n_action_steps=4', 'policy.n_layer=1',
                                                           'policy.n_emb=32', 'policy.token_dim=32', 'task.shape_meta.obs.point_cloud.shape=[64,3]'])
    g = torch.Generator().manual_seed(0)
    data = {'point_cloud': torch.rand(100, 64, 3, generator=g), 'agent_pos': torch.randn(100, 65, generator=g),
            'action': torch.rand(100, 7, generator=g) * 2 - 1}
    pol = make_policy(cfg, fit_normalizer(data, to_plain(cfg.task.shape_meta.obs)))
    save_checkpoint({'model': pol.state_dict(), 'config': to_plain(cfg)}, path)
    return path

def _hdf5_dataset(path, task):
    "A one-episode robomimic-layout HDF5 file whose env_args name `task`."
    import numpy as np
    from maniflow_nb.robosuite_env import make_env_meta, write_robomimic_hdf5
    z = lambda *s: np.zeros((2, *s), np.float32)
    ep = {'robot0_eef_pos': z(3), 'robot0_eef_quat': z(4), 'robot0_gripper_qpos': z(2), 'object': z(56), 'action': z(7),
          'reward': np.zeros(2, np.float32), 'done': np.array([0, 1]), 'states': z(10)}
    return write_robomimic_hdf5(path, [ep], make_env_meta(task))

def test_guide_command_runs_pickplace(tmp_path, capsys):
    "The PPO guide's command as written (+ tiny sizes) runs on robosuite's 4-object PickPlace, built from env_meta."
    ck, h5 = _robosuite_pointcloud_checkpoint(tmp_path/'ckpt'), _hdf5_dataset(tmp_path/'pickplace.hdf5', 'PickPlace')
    guide = ['--config-name=train_maniflow_pointcloud_rl', 'task.env_runner.env_meta.env_name=PickPlace',
             'task.env_runner.env_config.env_name=PickPlace', f'task.dataset_path={h5}', f'policy.checkpoint={ck}']
    tiny = [f'run_dir={tmp_path}/rl', 'debug=true', 'policy.horizon=null', 'policy.n_action_steps=null', 'policy.num_inference_steps=2',
            'task.env_runner.max_steps=8', 'training.total_timesteps=16', 'training.device=cpu']
    r = run([*entry_point(), *guide, *tiny])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((tmp_path/'rl'/'eval.json').read_text())
    assert rec['env_name'] == 'PickPlace' and rec['env_steps'] >= 16, rec          # the env built from env_meta
    cfg = OmegaConf.load(tmp_path/'rl'/'config.yaml')
    assert cfg.task.env_runner.env_meta.env_name == 'PickPlace' and cfg.task.dataset_path == str(h5)
    check_videos(tmp_path/'rl', rec, 'PickPlace_seed10000', 2)
    # a dataset of another env, and a checkpoint of another task, are one-line errors
    lift = _hdf5_dataset(tmp_path/'lift.hdf5', 'Lift')
    assert "records env 'Lift'" in cli_error(capsys, *guide[:3], f'task.dataset_path={lift}', guide[4], *tiny[1:], f'run_dir={tmp_path}/x')
    assert not (tmp_path/'x').exists()                                              # refused before anything is written
    assert "PickPlaceCan's state is 23-d" in cli_error(capsys, *guide[:1], f'policy.checkpoint={ck}', *tiny,
                                                       'task.env_runner.env_meta.env_name=PickPlaceCan')
