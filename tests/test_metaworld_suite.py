"""bench/metaworld_suite.py: task groups, run parameters, resume planning, budget stop and the table (no training),
plus one slow end-to-end smoke run (2 optimizer steps, 1 evaluation episode)."""
import importlib.util, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def ms():
    spec = importlib.util.spec_from_file_location('metaworld_suite', ROOT/'bench'/'metaworld_suite.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_groups(ms):
    assert {g: len(ts) for g, ts in ms.GROUPS.items()} == {'easy': 28, 'medium': 11, 'hard': 6, 'very_hard': 5}
    assert len(ms.GROUP_OF) == 50                                   # every task in exactly one group
    from maniflow_nb.envs import metaworld_tasks
    assert set(ms.GROUP_OF) <= set(metaworld_tasks())               # all have a scripted expert
    groups = [ms.GROUP_OF[t] for t in ms.DEFAULT_TASKS]
    assert groups.count('easy') == 8 and groups.count('medium') == 2

def test_resolve_tasks(ms):
    assert ms.resolve_tasks('reach,reach-v3,medium')[:2] == ['reach-v3', 'basketball-v3']
    assert len(ms.resolve_tasks('all')) == 50 and ms.resolve_tasks('default') == ms.DEFAULT_TASKS
    with pytest.raises(SystemExit): ms.resolve_tasks('not-a-task')

def test_params_and_plan(ms, tmp_path):
    res = tmp_path/'r.json'
    a = ms.parse(['--tasks', 'reach,door-close', '--results', str(res)])
    assert a.seeds == [0] and ms.parse(['--paper-size']).seeds == [0, 1, 2]
    p = ms.run_params('dp3', a)
    assert p['size'] == 'cpu' and p['steps'] == ms.CPU_SIZE['dp3']['steps'] and p['eval_seeds'] == [0, 1, 2]
    pp = ms.run_params('dp3', ms.parse(['--paper-size']))
    assert pp['epochs'] == 3000 and 'policy.unet.down_dims=[512,1024,2048]' in pp['overrides']
    assert ms.params_id(p) == ms.params_id(dict(p)) != ms.params_id(pp)
    assert ms.params_id(ms.run_params('dp3', ms.parse(['--steps', '7']))) != ms.params_id(p)
    todo = ms.plan(a)
    assert [(q, t) for q, t, _, _ in todo] == [('maniflow', 'reach-v3'), ('dp3', 'reach-v3'),
                                              ('maniflow', 'door-close-v3'), ('dp3', 'door-close-v3')]
    row = {'policy': 'dp3', 'task': 'reach-v3', 'train_seed': 0, 'params_id': ms.params_id(p)}
    stale = {**row, 'task': 'door-close-v3', 'params_id': 'other'}     # other parameters: not a resume hit
    res.write_text(json.dumps([row, stale]))
    assert [(q, t) for q, t, _, _ in ms.plan(a)] == [('maniflow', 'reach-v3'), ('maniflow', 'door-close-v3'),
                                                    ('dp3', 'door-close-v3')]

def test_budget_stops(ms, tmp_path, monkeypatch, capsys):
    a = ms.parse(['--tasks', 'reach,door-close', '--results', str(tmp_path/'r.json'), '--budget-minutes', '1'])
    clock = [0, 0, 40]                                              # t0, then before each run
    monkeypatch.setattr(ms.time, 'time', lambda: clock.pop(0) if clock else 90)
    monkeypatch.setattr(ms, 'bench_one', lambda *x: {'success_mean': 1.0})
    monkeypatch.setattr(ms, 'append_rows', lambda rows, path: None)
    rows = ms.run_suite(a)                                          # run 1 took 40 s: a second would end at 80 s > 60 s
    assert len(rows) == 1 and '3 left' in capsys.readouterr().out

def fake_row(ms, policy, task, s, seed=0, size='cpu'):
    return {'policy': policy, 'task': task, 'train_seed': seed, 'size': size, 'success_mean': s, 'params_id': 'p',
            'device': 'cpu: test', 'group': ms.GROUP_OF[task]}

def test_table(ms, tmp_path):
    rows = [fake_row(ms, 'dp3', 'reach-v3', 0.5), fake_row(ms, 'dp3', 'reach-v3', 1.0, seed=1),
            fake_row(ms, 'dp3', 'door-close-v3', 1.0), fake_row(ms, 'maniflow', 'box-close-v3', 0.2),
            {**fake_row(ms, 'dp3', 'door-close-v3', 0.0, seed=2), 'params_id': 'other'}]   # left out: other parameters
    md = ms.render_table(rows, {'dp3': 'p', 'maniflow': 'p'})
    assert '| reach-v3 | easy | – (0 seeds) | 75.0 (2 seeds) |' in md and '| door-close-v3 | easy | – (0 seeds) | 100.0 (1 seed) |' in md
    assert '| easy | 2/28 | – | 87.5 | 90.9 |' in md              # group mean: mean over tasks of per-task means
    assert '| medium | 1/11 | 20.0 | – | 72.7 |' in md and '| hard | 0/6 | – | – | 38.0 |' in md
    assert '1 recorded row(s) with other parameters' in md
    res = tmp_path/'r.json'
    a = ms.parse(['--results', str(res)]); ids = {q: ms.params_id(ms.run_params(q, a)) for q in ms.CONFIGS}
    res.write_text(json.dumps([{**r, 'params_id': ids[r['policy']] if r['params_id'] == 'p' else 'x'} for r in rows]))
    out = subprocess.run([sys.executable, 'bench/metaworld_suite.py', '--table', '--results', str(res)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert '| easy | 2/28 | – | 87.5 | 90.9 |' in out and (tmp_path/'r.md').read_text() == out

@pytest.mark.slow
def test_smoke_run(tmp_path):
    res = tmp_path/'r.json'
    subprocess.run([sys.executable, 'bench/metaworld_suite.py', '--tasks', 'reach', '--policies', 'dp3', '--steps', '2',
                    '--episodes', '1', '--eval-seeds', '0', '--results', str(res), '--data-dir', str(tmp_path/'data'),
                    '--out-dir', str(tmp_path/'runs')], cwd=ROOT, check=True)
    (row,) = json.loads(res.read_text())
    assert row['policy'] == 'dp3' and row['steps'] == 2 and 0 <= row['success_mean'] <= 1
    assert (tmp_path/'data'/'pc_reach-v3_10x512.zarr').exists()
    out = subprocess.run([sys.executable, 'bench/metaworld_suite.py', '--tasks', 'reach', '--policies', 'dp3', '--steps',
                          '2', '--episodes', '1', '--eval-seeds', '0', '--results', str(res), '--dry-run'], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert '0 run(s) to do' in out                                  # resumable: the recorded row is skipped
