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
