"""`maniflow-eval` on tasks without a simulator (CALVIN, RoboTwin): the offline evaluation on the validation split of
the checkpoint's store, through the console command, and `--offline` for a simulated task."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from maniflow_nb.config import compose_config, to_plain
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.dataset import make_datasets
from maniflow_nb.policies import make_policy
from maniflow_nb.checkpoint import save_checkpoint

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MUJOCO_GL': 'egl', 'PYTHONPATH': str(ROOT)}

def eval_cli(*args, timeout=300):
    "`maniflow-eval ARGS` in a fresh process, as the console script runs it."
    return subprocess.run([sys.executable, '-c', 'from maniflow_nb.evaluate import eval_cli; eval_cli()', *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)

def eval_in_process(capsys, *args):
    "`(exit code, stdout, stderr)` of the console entry point called in this process (same code path, no start-up cost)."
    from maniflow_nb.evaluate import eval_cli as cli
    try: cli([str(a) for a in args]); code = 0
    except SystemExit as e: code = e.code
    o = capsys.readouterr(); return code, o.out, o.err

def checkpoint(config, overrides, store, path, **store_kw):
    "An untrained checkpoint of `config` on a synthetic store, with the training split's normalizer."
    make_synthetic_store(store, n_episodes=6, episode_len=12, n_points=64, **store_kw)
    cfg = compose_config(config, [f'task.dataset_path={store}', *overrides])
    train, val = make_datasets(cfg)
    torch.manual_seed(0)
    save_checkpoint({'model': make_policy(cfg, train.get_normalizer()).state_dict(), 'config': to_plain(cfg)}, path)
    return cfg, len(val)

@pytest.fixture(scope='module')
def calvin(tmp_path_factory):
    "A DP3 checkpoint of the CALVIN config (15-d state, 7-d actions, 64-point clouds), its run dir and validation size."
    d = tmp_path_factory.mktemp('calvin')
    ck = d/'run'/'checkpoints'/'latest.ckpt'
    _, n_val = checkpoint('dp3_calvin', ['task.shape_meta.obs.point_cloud.shape=[64,3]', 'task.dataset.val_ratio=0.34'],
                          d/'calvin.zarr', ck, state_dim=15, action_dim=7)
    return ck, d/'run', n_val

def test_calvin_checkpoint_is_evaluated_offline(calvin):
    "No 'unknown MetaWorld task': one stdout line naming calvin_env, eval.json with per-dimension errors."
    ck, run, n_val = calvin
    r = eval_cli(ck, '--device', 'cpu')
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()
    assert len(out) == 1 and 'simulation rollouts need calvin_env' in out[0] and 'not a success rate' in out[0], r.stdout
    assert 'MetaWorld' not in r.stdout + r.stderr
    rec = json.loads((run/'eval.json').read_text())
    assert (rec['mode'], rec['task'], rec['split'], rec['n_windows']) == ('offline', 'calvin_D', 'val', n_val) and n_val > 0
    assert rec['n_actions'] == n_val * 3                                      # Ta = 3 executed actions per window
    assert len(rec['action_mse']) == len(rec['action_mae']) == 7
    assert all(m >= a * a - 1e-9 for m, a in zip(rec['action_mse'], rec['action_mae']))   # MSE >= MAE^2 per dimension
    assert abs(rec['mse'] - sum(rec['action_mse']) / 7) < 1e-9 and rec['mse'] > 0
    assert f"mse={rec['mse']:.4g}" in out[0]

def test_offline_is_seeded(calvin, tmp_path, capsys):
    "DP3 samples its actions: the same --seeds gives the same record, another seed other numbers."
    ck, run, _ = calvin
    recs = []
    for seed, name in ((5, 'a'), (5, 'b'), (6, 'c')):
        code, _, err = eval_in_process(capsys, ck, '--device', 'cpu', '--seeds', seed, '--out', tmp_path/f'{name}.json')
        assert code == 0, err
        recs.append(json.loads((tmp_path/f'{name}.json').read_text()))
    assert recs[0]['action_mse'] == recs[1]['action_mse'] and recs[0]['seed'] == 5
    assert recs[0]['action_mse'] != recs[2]['action_mse']

def test_offline_flag_on_a_simulated_task(tmp_path, capsys):
    "--offline scores a MetaWorld checkpoint without simulating; --data points it at another store."
    ck = tmp_path/'run'/'checkpoints'/'latest.ckpt'
    cfg, n_val = checkpoint('maniflow_state_metaworld', ['policy=mlp'], tmp_path/'mw.zarr', ck, state_dim=39, action_dim=4)
    make_synthetic_store(tmp_path/'other.zarr', n_episodes=10, episode_len=12, state_dim=39, action_dim=4, seed=1)
    code, out, err = eval_in_process(capsys, ck, '--offline', '--data', tmp_path/'other.zarr', '--device', 'cpu')
    assert code == 0, err
    assert out.startswith('offline evaluation (forced with --offline)') and len(out.strip().splitlines()) == 1
    rec = json.loads((tmp_path/'run'/'eval.json').read_text())
    assert (rec['task'], rec['store'], len(rec['action_mae'])) == ('reach-v3', str(tmp_path/'other.zarr'), 4)
    assert 'episodes' not in rec                                            # nothing was simulated

def test_offline_without_validation_windows(tmp_path, capsys):
    "A store whose split has no validation episodes: one line on stderr, exit 2, no eval.json."
    ck = tmp_path/'run'/'checkpoints'/'latest.ckpt'
    checkpoint('maniflow_state_metaworld', ['policy=mlp', 'task.dataset.val_ratio=0'], tmp_path/'mw.zarr', ck, state_dim=39, action_dim=4)
    code, _, err = eval_in_process(capsys, ck, '--offline', '--device', 'cpu')
    lines = [l for l in err.splitlines() if l.startswith('maniflow-eval: ')]   # (data notes may come first)
    assert code == 2 and len(lines) == 1 and lines[0].startswith('maniflow-eval: offline evaluation needs validation windows'), err
    assert 'Traceback' not in err and not (tmp_path/'run'/'eval.json').exists()
