"""`maniflow-train` / `python -m maniflow_nb.train` and the papermill job notebook `nbs/train.ipynb`."""
import os, sys, ast, json, shutil, subprocess
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
PY, BIN = sys.executable, Path(sys.executable).parent
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore'}
SMALL = ['policy=mlp', 'task.shape_meta.obs.point_cloud.shape=[64,3]', 'horizon=4', 'n_action_steps=2',
         'training.batch_size=8', 'training.num_epochs=1', 'training.max_train_steps=3', 'training.max_val_steps=1',
         'trainer.accelerator=cpu', 'trainer.progress_bar=false', 'logger.tensorboard=false']

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    from maniflow_nb.data import make_synthetic_store
    return make_synthetic_store(tmp_path_factory.mktemp('data')/'s.zarr', n_episodes=4, episode_len=20, n_points=64)

def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, **kw)

def entry_point():
    "The installed console script, else exactly what it runs."
    exe = BIN/'maniflow-train'
    return [str(exe)] if exe.exists() else [PY, '-c', 'import sys; from maniflow_nb.train import main; sys.exit(main())']

def test_unknown_key_is_one_line_exit_2():
    r = run([*entry_point(), '--config-name', 'maniflow_pointcloud_metaworld', 'training.batch_sise=8'])
    assert r.returncode == 2
    assert "unknown config key 'training.batch_sise'" in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ''

def test_unknown_config_name(capsys):
    from maniflow_nb.train import main
    with pytest.raises(SystemExit) as e: main(['--config-name=no_such_config'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no config named 'no_such_config'" in err and len(err.strip().splitlines()) == 1

def test_lightning_run(store, tmp_path, capsys):
    from maniflow_nb.train import main
    rd = tmp_path/'run'
    main(['--config-name', 'maniflow_pointcloud_metaworld', *SMALL, f'task.dataset_path={store}', f'run_dir={rd}',
          'training.use_ema=false'])
    best = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('best checkpoint:'))
    assert 'epoch=0000-val_loss=' in best and '(val_loss=' in best
    cfg = yaml.safe_load((rd/'config.yaml').read_text())
    assert cfg['training']['use_ema'] is False and cfg['trainer']['name'] == 'lightning'
    assert (rd/'metrics.csv').exists() and (rd/'checkpoints'/'last.ckpt').exists()

@pytest.mark.slow
def test_legacy_dispatch(store, tmp_path):
    rd = tmp_path/'legacy'
    r = run([PY, '-m', 'maniflow_nb.train', '--config-name', 'dp3_metaworld', 'trainer=legacy', *SMALL,
             f'task.dataset_path={store}', f'run_dir={rd}'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'best checkpoint:' in r.stdout and (rd/'checkpoints'/'latest.ckpt').exists()

def _parameters_cell(nb):
    cells = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, 'train.ipynb needs exactly one cell tagged "parameters"'
    return ''.join(cells[0]['source'])

def test_parameters_cell_is_commented_literals():
    src = _parameters_cell(json.loads((ROOT/'nbs'/'train.ipynb').read_text()))
    for node in ast.parse(src).body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)                       # literals only
    lines = src.splitlines()
    for node in ast.parse(src).body:
        assert '#' in lines[node.end_lineno - 1], f'parameter {node.targets[0].id} has no comment'

def test_parameters_tag_survives_nbdev_clean(tmp_path):
    nb = tmp_path/'train.ipynb'; shutil.copy(ROOT/'nbs'/'train.ipynb', nb)
    r = run([str(BIN/'nbdev_clean'), '--fname', str(nb)])
    assert r.returncode == 0, r.stderr
    _parameters_cell(json.loads(nb.read_text()))

def papermill(out, *params):
    return run([str(BIN/'papermill'), str(ROOT/'nbs'/'train.ipynb'), str(out), '--cwd', str(ROOT), *params])

def test_papermill_parameters_reach_the_run(tmp_path):
    rd = tmp_path/'job'; rd.mkdir()
    ov = [o for o in SMALL if not o.startswith('training.num_epochs')] + ['training.num_epochs=2']
    r = papermill(rd/'train.ipynb', '-p', 'run_dir', str(rd), '-p', 'overrides', json.dumps(ov))
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((rd/'config.yaml').read_text())['training']['num_epochs'] == 2   # -p reached the run
    assert (rd/'train.ipynb').exists() and (rd/'checkpoints'/'last.ckpt').exists()
    assert not (ROOT/'nbs'/'runs').exists()

@pytest.mark.slow
def test_papermill_rejects_unknown_parameter(tmp_path):
    r = papermill(tmp_path/'out.ipynb', '-p', 'run_dir', str(tmp_path/'x'), '-p', 'epochs', '3')
    assert r.returncode != 0 and 'unknown job parameter(s) epochs' in r.stderr + r.stdout
    assert not (tmp_path/'x'/'checkpoints').exists()

def test_config_name_twice_is_refused(capsys):
    from maniflow_nb.train import main
    with pytest.raises(SystemExit) as e: main(['--config-name', 'dp3_metaworld', '--config_name', 'maniflow_state_metaworld'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith('maniflow-train: ') and 'config' in err and len(err.splitlines()) == 1, err

def test_sweep_checks_every_combination_before_training(tmp_path, capsys):
    "`maniflow-train -m`: the bad second combination is refused, in one line naming it and the key, before run 1 starts."
    from maniflow_nb.train import main
    with pytest.raises(SystemExit) as e:
        main(['-m', '--config-name', 'maniflow_pointcloud_metaworld', *SMALL, f'run_dir={tmp_path/"mr"}', 'training.batch_size=8,0'])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and err.strip() == ('maniflow-train: multirun 2/2 (training.batch_size=0): '
                                                  'training.batch_size is 0, expected an integer >= 1'), err
    assert '--- multirun' not in out and not (tmp_path/'mr').exists()

def test_dry_run_two_nodes_from_env(tmp_path, capsys, monkeypatch):
    "A two-node guide's launch (MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK, no LOCAL_RANK), node by node: `--dry-run` prints each rank's place."
    from maniflow_nb.train import main
    for k in ('LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'NODE_RANK', 'GROUP_RANK', 'SLURM_PROCID', 'SLURM_STEP_ID'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1'); monkeypatch.setenv('MASTER_PORT', '29500'); monkeypatch.setenv('WORLD_SIZE', '2')
    lines = {}
    for rank in (0, 1):
        monkeypatch.setenv('RANK', str(rank))
        main(['--dry-run', '--config-name', 'maniflow_pointcloud_metaworld', *SMALL, f'run_dir={tmp_path/"run"}'])
        (lines[rank],) = [l for l in capsys.readouterr().out.splitlines() if l.startswith('dry run')]
    for rank, line in lines.items():
        assert line.startswith('dry run, launch: distributed via env, world_size=2 (2 node(s) x 1)'), line
        assert f'rank {rank} (local 0, node {rank}), master 10.0.0.1:29500' in line, line
        assert 'effective batch size 16 = 8 x 2 x 1' in line, line
    assert not (tmp_path/'run').exists()                                   # nothing trained, nothing written
    monkeypatch.delenv('MASTER_PORT')
    with pytest.raises(SystemExit) as e: main(['--dry-run', '--config-name', 'maniflow_pointcloud_metaworld', *SMALL])
    assert e.value.code == 2 and 'MASTER_ADDR/MASTER_PORT' in capsys.readouterr().err

def test_launch_papermill_fresh_run_dir_explicit_dataset(store, tmp_path):
    "`python -m maniflow_nb.launch papermill` into a folder that does not exist, no `-p run_dir`, the smoke default"
    " synthetic_data=True and a dataset in the overrides: record, config and checkpoints in one run dir, trained on that dataset."
    rd = tmp_path/'fresh'/'x'
    ov = ['policy=mlp', 'training.num_epochs=1', 'training.batch_size=4', 'training.max_train_steps=2', 'training.max_val_steps=1',
          'trainer.accelerator=cpu', 'logger.tensorboard=false', f'task.dataset_path={store}']
    r = run([PY, '-m', 'maniflow_nb.launch', 'papermill', str(ROOT/'nbs'/'train.ipynb'), str(rd/'train.ipynb'), '--cwd', str(ROOT),
             '-p', 'config_name', 'maniflow_state_metaworld', '-p', 'overrides', json.dumps(ov)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((rd/'config.yaml').read_text())['task']['dataset_path'] == str(store)
    assert (rd/'train.ipynb').exists() and (rd/'checkpoints'/'last.ckpt').exists() and not (rd/'synthetic.zarr').exists()
    assert 'synthetic_data ignored' in (rd/'train.ipynb').read_text()

def test_help_lists_configs_and_groups():
    "`maniflow-train --help`: the flags, then the configs and every config group with its options (read from conf/)."
    r = run([*entry_point(), '--help'])
    assert r.returncode == 0 and r.stderr == '', r.stderr
    out = r.stdout
    assert '--config_name' in out and '--multirun' in out and '--dry-run' in out
    assert 'configs (--config-name NAME):' in out and 'maniflow_state_metaworld' in out and 'dp3_metaworld' in out
    for line in ('logger: csv, default, wandb', 'trainer: legacy, lightning, multi_gpu, single_gpu', 'training: default, dp3_calvin'):
        assert line in out, out

def test_unknown_group_option_is_one_line():
    "`logger=tb`: one line naming the group and its options, not Hydra's search-path report."
    r = run([*entry_point(), '--config-name', 'maniflow_state_metaworld', 'logger=tb'])
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.strip() == "maniflow-train: logger=tb: config group 'logger' has no option 'tb'; options: csv, default, wandb"
