"""Parity harness end to end: the parity job through the CLI (identical first 200 training losses and LR schedule on CPU
fp32 deterministic), bad input through the CLI, reports, the dashboard driven headlessly, and the compare_runs job notebook."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT/'tests'/'fixtures'/'runs'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore'}
CLI = 'from maniflow_nb.parity import compare_cli; compare_cli()'

def cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-c', CLI, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    from maniflow_nb.data import make_synthetic_store
    return make_synthetic_store(tmp_path_factory.mktemp('data')/'s.zarr', n_episodes=6, episode_len=20, seed=0)

def tiny(store, epochs, batch_size, val_every):
    "MLP policy (dropout on) on the synthetic store, CPU; validation every `val_every` epochs."
    return [f'task.dataset_path={store}', 'policy=mlp', 'policy.hidden=32', f'training.num_epochs={epochs}',
            f'training.batch_size={batch_size}', f'training.val_every={val_every}', f'training.sample_every={epochs}',
            f'training.checkpoint_every={epochs}', 'training.lr_warmup_steps=20', 'trainer.accelerator=cpu']

def train_rows(run_dir, n):
    from maniflow_nb.parity import read_metrics
    return read_metrics(run_dir).dropna(subset=['train_loss']).head(n)

def test_parity_first_200_steps_identical(store, tmp_path):
    """The parity job via the CLI: on CPU fp32 deterministic (dropout on, validation after every epoch), per-step training
    loss and LR are identical for 200+ steps, and so are the EMA weights and predictions and the final val_loss."""
    work, out = tmp_path/'parity', tmp_path/'report.md'
    r = cli('--parity', '--config-name', 'maniflow_state_metaworld', '--workdir', work, '--out', out,
            '--loss-atol', '0', *tiny(store, epochs=12, batch_size=4, val_every=1))
    assert r.returncode in (0, 1), r.stderr[-3000:]
    a, b = train_rows(work/'legacy', 200), train_rows(work/'lightning', 200)
    assert len(a) == len(b) == 200
    assert list(a.step) == list(b.step) == list(range(1, 201))
    assert (a.train_loss.values == b.train_loss.values).all()            # bit-identical
    assert (a.lr.values == b.lr.values).all() and a.lr.nunique() > 20     # the warm-up and cosine, step by step
    report = out.read_text()
    for line in ('| train_loss curves |', '| LR schedule |', '| EMA weights |', '| EMA predictions |',
                 '| legacy checkpoint loads in lightning |', '| lightning checkpoint loads in legacy |', '| final val_loss |'):
        assert line in report and report.split(line)[1].split('\n')[0].count('| pass |') == 1, line
    assert json.loads((work/'legacy'/'resources.json').read_text())['peak_rss_mb'] > 0

def run_cli(argv, capsys):
    "`compare_cli(argv)` in this process: (exit code, stdout, stderr)."
    from maniflow_nb.parity import compare_cli
    try: compare_cli([str(a) for a in argv]); code = 0
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err

def test_cli_report_of_fixture(tmp_path, capsys):
    out = tmp_path/'r.html'
    code, stdout, _ = run_cli([FIXTURES/'legacy', FIXTURES/'lightning', '--out', out], capsys)
    assert code == 1                 # the fixture's wall-clock differs by more than 10%: a failed check
    assert '| train_loss curves | max 0, mean 0 over 54 steps |' in stdout and '| wall-clock |' in stdout
    html = out.read_text()
    assert html.count('<tr') == 12 and html.count('>FAIL<') == 1 and 'median time per optimizer step' in html

@pytest.mark.parametrize('args,msg', [
    (['RUN_A_ONLY'], 'expected two run dirs RUN_A RUN_B, got 1'),
    ([FIXTURES/'legacy', 'no/such/run'], 'no/such/run is not a run dir (no metrics.csv)'),
    ([FIXTURES/'legacy', FIXTURES/'lightning', '--out', 'OUT/report.txt'], "expected a .md or .html file"),
    (['--parity', 'training.no_such_key=1', '--workdir', 'OUT/p'], "unknown config key 'training.no_such_key'"),
])
def test_cli_bad_input(tmp_path, capsys, args, msg):
    args = [str(a).replace('OUT', str(tmp_path)) for a in args]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 2 and stdout == ''
    assert msg in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path/'report.txt').exists() and not (tmp_path/'p'/'legacy').exists()

def test_cli_bad_input_subprocess(tmp_path):
    "The real process: one line on stderr, no traceback, exit code 2, no report written."
    r = cli(FIXTURES/'legacy', tmp_path/'missing', '--out', tmp_path/'r.md')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'is not a run dir' in r.stderr and not (tmp_path/'r.md').exists()

def test_load_runs_nested_with_papermill(tmp_path):
    import shutil
    from maniflow_nb.dashboard import load_runs, config_diff
    shutil.copytree(FIXTURES/'legacy', tmp_path/'sweep'/'a')
    shutil.copytree(FIXTURES/'lightning', tmp_path/'sweep'/'b')
    nb = {'cells': [], 'metadata': {'papermill': {'parameters': {'overrides': ['x=1']}, 'exception': None, 'duration': 2.0}}}
    (tmp_path/'sweep'/'b'/'train.ipynb').write_text(json.dumps(nb))
    (tmp_path/'sweep'/'b'/'checkpoints').mkdir(); (tmp_path/'sweep'/'b'/'checkpoints'/'last.ckpt').write_bytes(b'')
    df = load_runs(tmp_path)
    assert sorted(df.run.unique()) == ['sweep/a', 'sweep/b']
    runs = df.attrs['runs']
    assert runs['sweep/b']['papermill']['parameters'] == {'overrides': ['x=1']} and runs['sweep/a']['papermill'] is None
    assert runs['sweep/b']['checkpoints'] == ['last.ckpt'] and runs['sweep/a']['checkpoints'] == []
    assert config_diff(tmp_path/'sweep'/'a', tmp_path/'sweep'/'b')['trainer.name'] == ('legacy', 'lightning')

def test_dashboard_headless():
    from maniflow_nb.dashboard import dashboard
    db = dashboard(FIXTURES)
    fig0, html0 = db.figure, db.diff.value
    assert len(fig0.axes[0].lines) == 2 and 'trainer.name' in html0
    db.metric.value = 'val_loss'
    assert db.figure is not fig0 and db.figure.axes[0].get_ylabel() == 'val_loss'
    db.x.value = 'epoch'
    assert len(db.figure.axes[0].lines[0].get_xdata()) == 6
    y = db.figure.axes[0].lines[0].get_ydata().copy()
    db.smooth.value = 0.8
    assert not (db.figure.axes[0].lines[0].get_ydata() == y).all()
    db.runs.value = ('lightning',)
    assert len(db.figure.axes[0].lines) == 1 and db.diff.value != html0
    assert len(db.out.outputs) == 1       # the figure, displayed in the Output widget

def test_compare_runs_notebook(tmp_path):
    "The papermill job: two run dirs in, a report out, the executed notebook as the record."
    out_nb, report = tmp_path/'compare_runs.ipynb', tmp_path/'report.md'
    r = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT/'nbs'/'compare_runs.ipynb'), str(out_nb),
                        '-p', 'run_a', str(FIXTURES/'legacy'), '-p', 'run_b', str(FIXTURES/'lightning'), '-p', 'out', str(report),
                        '--kernel', 'python3'], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '| LR schedule |' in report.read_text()
    assert json.loads(out_nb.read_text())['metadata']['papermill']['parameters']['run_b'] == str(FIXTURES/'lightning')

def test_cli_report_accumulation_and_no_sampling_are_not_fails(tmp_path, capsys):
    "`maniflow-compare A B` on runs with gradient accumulation (different per-step loss definitions) that never sampled:"
    " train_loss curves and sampling MSE are 'n/a' (not measured), not FAIL."
    import shutil, yaml
    runs = {}
    for name in ('legacy', 'lightning'):
        d = runs[name] = tmp_path/name
        shutil.copytree(FIXTURES/name, d)
        cfg = yaml.safe_load((d/'config.yaml').read_text()); cfg['training']['gradient_accumulate_every'] = 2
        (d/'config.yaml').write_text(yaml.safe_dump(cfg))
        m = pd.read_csv(d/'metrics.csv')
        if name == 'lightning': m['train_loss'] = m['train_loss'] + 0.5            # last micro-batch, not the mean
        m.drop(columns=[c for c in m if c == 'train_action_mse_error']).to_csv(d/'metrics.csv', index=False)
    code, stdout, _ = run_cli([runs['legacy'], runs['lightning']], capsys)
    row = lambda name: next(l for l in stdout.splitlines() if l.startswith(f'| {name} |'))
    assert '| n/a |' in row('train_loss curves') and 'gradient_accumulate_every=2' in row('train_loss curves'), stdout
    assert '| not measured |' in row('sampling MSE logged') and '| n/a |' in row('sampling MSE logged'), stdout

def test_plot_cli_pngs(tmp_path):
    "`maniflow-plot RUN`: curves.png in the run dir, 1000x400; a run without eval.json still plots its losses; several runs; bad input."
    import shutil
    from PIL import Image
    exe = Path(sys.executable).parent/'maniflow-plot'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'from maniflow_nb.dashboard import plot_cli; plot_cli()']
    shutil.copytree(FIXTURES/'legacy', tmp_path/'a')
    (tmp_path/'a'/'eval.json').unlink()                               # never evaluated
    r = subprocess.run([*cmd, str(tmp_path/'a')], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"curves of 1 run(s): {tmp_path/'a'/'curves.png'}", (r.stdout, r.stderr)
    assert Image.open(tmp_path/'a'/'curves.png').size == (1000, 400)
    from maniflow_nb.dashboard import plot_summary, runs_table
    fig = plot_summary(runs_table({'a': tmp_path/'a'}))
    assert [l.get_label() for l in fig.axes[0].lines] == ['train_loss', 'val_loss'] and 'no eval.json' in fig.axes[1].texts[0].get_text()
    r = subprocess.run([*cmd, str(FIXTURES/'legacy'), str(FIXTURES/'lightning'), '--out', str(tmp_path/'both.png')],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and Image.open(tmp_path/'both.png').size == (1000, 400), r.stderr
    r = subprocess.run([*cmd, str(tmp_path/'nope')], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"maniflow-plot: {tmp_path/'nope'} is not a run dir: no metrics.csv", r.stderr

def test_dashboard_axes_and_messages(tmp_path):
    "x offers only the axes every selected run has; an error replaces the figure with a message; success rates shown."
    import shutil
    from maniflow_nb.dashboard import dashboard
    shutil.copytree(FIXTURES/'legacy', tmp_path/'timed'); shutil.copytree(FIXTURES/'lightning', tmp_path/'untimed')
    (tmp_path/'untimed'/'timing.csv').unlink()
    db = dashboard(tmp_path)
    assert list(db.x.options) == ['step', 'epoch'] and db.figure is not None
    assert 'success rate: 0.750' in db.evals.value and 'success rate: 0.500' in db.evals.value
    db.runs.value = ('timed',)
    assert list(db.x.options) == ['step', 'epoch', 'time']
    db.x.value = 'time'; assert db.figure.axes[0].get_xlabel() == 'seconds'
    db.runs.value = ('timed', 'untimed')
    assert db.x.value == 'step' and db.figure.axes[0].get_xlabel() == 'step'
    db.runs.value = ()
    assert db.figure is None and len(db.out.outputs) == 1 and 'select at least one run' in db.out.outputs[0]['data']['text/html']
