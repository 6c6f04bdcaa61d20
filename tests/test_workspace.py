"""The legacy trainer end to end: kill -9 and exact resume, EMA warm-up, LR per optimizer step, plain checkpoints,
top-k, and the `maniflow-eval` CLI (bad input and a real MetaWorld rollout)."""
import json, math, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))    # also without a working editable install
from maniflow_nb.config import compose_config, save_config
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.workspace import TrainWorkspace
from maniflow_nb.checkpoint import TopK, load_checkpoint, save_checkpoint, legacy_to_lightning
from maniflow_nb.runlog import MetricsCSV
from maniflow_nb.ema import ema_decay
from maniflow_nb.optim import lr_factor, optimizer_steps

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MUJOCO_GL': 'egl', 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'offline'}
TRAIN = 'from maniflow_nb.config import load_config; from maniflow_nb.workspace import TrainWorkspace; ' \
        'import sys; TrainWorkspace(load_config(sys.argv[1])).run()'

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp('data')/'s.zarr'
    make_synthetic_store(path, n_episodes=6, episode_len=20, seed=0)
    return path

def tiny_cfg(store, run_dir, *overrides):
    "State config on the synthetic store, MLP policy, deterministic CPU."
    return compose_config('maniflow_state_metaworld', [
        f'task.dataset_path={store}', f'run_dir={run_dir}', 'policy=mlp', 'policy.hidden=32',
        'training.num_epochs=4', 'training.batch_size=16', 'training.lr_warmup_steps=3', 'training.checkpoint_every=1',
        'training.sample_every=2', 'logger.tensorboard=false', 'trainer.progress_bar=false', 'trainer.deterministic=true',
        'trainer.accelerator=cpu', *overrides])

def train_subprocess(cfg, cfg_path) -> subprocess.Popen:
    save_config(cfg, cfg_path)
    return subprocess.Popen([sys.executable, '-c', TRAIN, str(cfg_path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def n_rows(path) -> int:
    try: return max(0, len(Path(path).read_text().splitlines()) - 1)
    except FileNotFoundError: return 0

def test_kill9_resume_is_exact(store, tmp_path):
    "SIGKILL a CPU run at an arbitrary step; the resumed run ends with the uninterrupted run's weights, bit for bit."
    ov = ['training.num_epochs=30', 'training.checkpoint_every_steps=2', 'training.checkpoint_every=7',
          'training.gradient_accumulate_every=2', 'training.max_grad_norm=1.0', 'policy.hidden=128']
    threads = torch.get_num_threads(); torch.set_num_threads(1)          # as the subprocesses (OMP_NUM_THREADS=1)
    try: TrainWorkspace(tiny_cfg(store, tmp_path/'ref', *ov)).run()      # the uninterrupted run, in this process
    finally: torch.set_num_threads(threads)
    n_total = n_rows(tmp_path/'ref'/'metrics.csv')
    kill_at = random.Random(time.time_ns()).randint(10, n_total // 2)      # metrics rows, ~ optimizer steps
    p = train_subprocess(tiny_cfg(store, tmp_path/'run', *ov), tmp_path/'run.yaml')
    while n_rows(tmp_path/'run'/'metrics.csv') < kill_at and p.poll() is None: time.sleep(0.005)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, f'run ended before the kill (row {kill_at} of {n_total})'
    killed = load_checkpoint(tmp_path/'run'/'checkpoints'/'last.ckpt')['loop']
    p = train_subprocess(tiny_cfg(store, tmp_path/'run', *ov), tmp_path/'run.yaml')
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert 'resumed from' in p.stderr.read()
    a, b = (load_checkpoint(tmp_path/d/'checkpoints'/'last.ckpt') for d in ('ref', 'run'))
    assert 0 < killed['global_step'] < a['loop']['global_step']
    for part in ('model', ):
        for k, v in a[part].items(): assert torch.equal(v, b[part][k]), (k, killed)
    for k, v in a['ema']['model'].items(): assert torch.equal(v, b['ema']['model'][k]), (k, killed)
    assert a['ema']['step'] == b['ema']['step'] == a['loop']['global_step']
    assert (tmp_path/'ref'/'metrics.csv').read_text() == (tmp_path/'run'/'metrics.csv').read_text()

def test_ema_decay_values():
    assert ema_decay(0) == 0.0 and ema_decay(1) == 0.0
    assert math.isclose(ema_decay(10), 1 - 10 ** -0.75) and math.isclose(ema_decay(1000), 1 - 1000 ** -0.75)
    assert ema_decay(10 ** 9, max_decay=0.9999) == 0.9999

def test_lr_per_optimizer_step_with_accumulation(store, tmp_path):
    "The LR column follows the schedule per optimizer step; batch 8 x accumulate 2 matches batch 16 x accumulate 1."
    lrs = {}
    for acc, bs in ((1, 16), (2, 8)):
        ws = TrainWorkspace(tiny_cfg(store, tmp_path/f'acc{acc}', f'training.batch_size={bs}',
                                     f'training.gradient_accumulate_every={acc}'))
        ws.run()
        assert ws.total_steps == optimizer_steps(ws.n_batches, acc, 4) == ws.scheduler.last_epoch
        lrs[acc] = [float(r['lr']) for r in MetricsCSV(tmp_path/f'acc{acc}'/'metrics.csv').rows if r['lr']]
        assert lrs[acc] == pytest.approx([1e-4 * lr_factor(s, 3, ws.total_steps) for s in range(ws.total_steps)], rel=1e-9)
    assert lrs[1] == lrs[2]

def test_checkpoints_plain_and_topk(store, tmp_path):
    "Checkpoints load with weights_only=True; exactly the k best val_loss epochs keep their files."
    cfg = tiny_cfg(store, tmp_path/'run', 'training.num_epochs=6', 'checkpoint.topk.k=2', 'training.learning_rate=3e-3')
    out = TrainWorkspace(cfg).run()
    files = sorted(f.name for f in (tmp_path/'run'/'checkpoints').glob('epoch=*.ckpt'))
    vals = {int(r['epoch']): float(r['val_loss']) for r in MetricsCSV(tmp_path/'run'/'metrics.csv').rows if r['val_loss']}
    best2 = sorted(vals, key=vals.get)[:2]
    assert files == sorted(TopK().filename(e, {'val_loss': vals[e]}) for e in best2)
    for f in (tmp_path/'run'/'checkpoints').iterdir():
        ck = torch.load(f, weights_only=True)
        assert set(ck) >= {'model', 'ema', 'optimizer', 'scheduler', 'rng', 'loop', 'topk', 'config'}
    assert Path(out['best_path']).name == TopK().filename(best2[0], {'val_loss': vals[best2[0]]})
    assert out['best_score'] == pytest.approx(vals[best2[0]])

def test_resume_checkpoint_path_missing(store, tmp_path):
    ws = TrainWorkspace(tiny_cfg(store, tmp_path/'run', f'training.resume_checkpoint_path={tmp_path}/nope.ckpt'))
    with pytest.raises(ValueError, match='does not exist'): ws.run()

def eval_cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-c', 'from maniflow_nb.evaluate import eval_cli; eval_cli()', *map(str, args)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)

@pytest.mark.parametrize('args,msg', [
    (['{ck}', '--seeds', '0,x'], "--seeds is '0,x', expected comma-separated integers"),
    (['{ck}', '--episodes', '0'], '--episodes is 0, expected a positive integer'),
    (['{ck}', '--n-procs', '0'], '--n-procs is 0, expected a positive integer'),
    (['{bad}'], 'is not a maniflow_nb checkpoint'),
    (['{noconf}'], "holds no resolved config"),
])
def test_eval_cli_bad_input(tmp_path, capsys, args, msg):
    "Bad input: one line on stderr naming the problem, exit code 2, no eval.json."
    from maniflow_nb.evaluate import eval_cli as cli
    (tmp_path/'bad.ckpt').write_text('not a checkpoint')
    ck = tmp_path/'x.ckpt'; torch.save({'model': {}, 'config': {'a': 1}}, ck)
    torch.save({'model': {}}, tmp_path/'noconf.ckpt')
    with pytest.raises(SystemExit) as e: cli([a.format(ck=ck, bad=tmp_path/'bad.ckpt', noconf=tmp_path/'noconf.ckpt') for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'eval.json').exists()

def test_eval_cli_missing_checkpoint_subprocess(tmp_path):
    r = eval_cli(tmp_path/'nope.ckpt')
    assert r.returncode == 2 and r.stderr.strip() == f'maniflow-eval: checkpoint {tmp_path}/nope.ckpt does not exist', r.stderr

def test_eval_cli_rollout(store, tmp_path):
    "A trained checkpoint evaluates in MetaWorld; eval.json, a grid video per seed and each recorded episode's video land in the run dir."
    TrainWorkspace(tiny_cfg(store, tmp_path/'run', 'training.num_epochs=1', 'task.env_runner.max_steps=10')).run()
    r = eval_cli(tmp_path/'run'/'checkpoints'/'last.ckpt', '--episodes', 1, '--seeds', '0,1', '--video', '--n-procs', 1)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path/'run'/'eval.json').read_text())
    assert rec['seeds'] == [0, 1] and rec['n_episodes'] == 1 and 0 <= rec['test_mean_score'] <= 1
    assert len(rec['episodes']) == 2 and all(e['length'] == 10 for e in rec['episodes'])
    names = sorted(Path(v).name for v in rec['video_paths'])      # per seed: the grid, then the episodes
    assert names == ['reach-v3_seed0.mp4', 'reach-v3_seed0_ep0.mp4', 'reach-v3_seed1.mp4', 'reach-v3_seed1_ep0.mp4'], names
    assert all(Path(v).stat().st_size > 0 for v in rec['video_paths'])

def test_resume_from_lightning_format_is_exact(store, tmp_path):
    "A mid-epoch legacy checkpoint converted to Lightning's layout (last.ckpt) resumes the legacy loop exactly."
    ref = TrainWorkspace(tiny_cfg(store, tmp_path/'ref')); ref.run()
    ws = TrainWorkspace(tiny_cfg(store, tmp_path/'a')); step = ws.optimizer_step
    def stop_at_7():
        step()
        if ws.global_step == 7: ws.stop_requested = True
    ws.optimizer_step = stop_at_7; ws.run()
    ck = load_checkpoint(tmp_path/'a'/'checkpoints'/'last.ckpt'); assert ck['loop']['batch_idx'] > 0
    save_checkpoint(legacy_to_lightning(ck), tmp_path/'b'/'checkpoints'/'last.ckpt')
    ws2 = TrainWorkspace(tiny_cfg(store, tmp_path/'b')); ws2.run()
    for k, v in ref.model.state_dict().items(): assert torch.equal(v, ws2.model.state_dict()[k]), k
    assert ws2.ema.optimization_step == ref.ema.optimization_step

def test_tensorboard_logging(store, tmp_path):
    TrainWorkspace(tiny_cfg(store, tmp_path/'run', 'training.num_epochs=1', 'logger.tensorboard=true')).run()
    assert list((tmp_path/'run'/'tensorboard'/'train').glob('events.out.tfevents.*'))   # a named TensorBoard run, not '.'

def test_bf16_mixed_runs(store, tmp_path):
    out = TrainWorkspace(tiny_cfg(store, tmp_path/'run', 'training.num_epochs=1', 'trainer.precision=bf16-mixed')).run()
    assert out['finished'] and math.isfinite(out['best_score'])

def test_16_mixed_on_cpu_trains_in_32_true(store, tmp_path):
    "The one precision rule (config.resolve_precision): no float16 without CUDA, 32-true instead (it used to raise)."
    ws = TrainWorkspace(tiny_cfg(store, tmp_path/'run', 'training.num_epochs=1', 'trainer.precision=16-mixed'))
    assert ws.precision == '32-true' and ws.run()['finished']

def test_legacy_refuses_64_true(store, tmp_path):
    with pytest.raises(ValueError, match='use trainer=lightning for 64-true'):
        TrainWorkspace(tiny_cfg(store, tmp_path/'run', 'trainer.precision=64-true'))

def test_device_sampler_same_weights(store, tmp_path):
    "training.device_sampler=true (CPU tensors here) trains the legacy loop to exactly the DataLoader run's weights, sampling MSE included."
    a = TrainWorkspace(tiny_cfg(store, tmp_path/'a', 'training.num_epochs=2')); a.run()
    b = TrainWorkspace(tiny_cfg(store, tmp_path/'b', 'training.num_epochs=2', 'training.device_sampler=true')); b.run()
    assert b.device_loader is not None and a.device_loader is None
    for k, v in a.model.state_dict().items(): assert torch.equal(v, b.model.state_dict()[k]), k

def test_compiled_run_resumes_eager(store, tmp_path, monkeypatch):
    "A compiled run's checkpoint has the eager parameter names: an eager run resumes it (training.compile is safe on resume)."
    import maniflow_nb.fastpath as fp
    from maniflow_nb.fastpath import is_compiled
    monkeypatch.setattr(fp, 'COMPILE_BACKEND', 'aot_eager')
    ws = TrainWorkspace(tiny_cfg(store, tmp_path/'r', 'training.num_epochs=1', 'training.compile=true'))
    assert is_compiled(ws.model.net) and is_compiled(ws.ema.averaged_model.net)
    ws.run()
    eager = TrainWorkspace(tiny_cfg(store, tmp_path/'r', 'training.num_epochs=2'))
    assert eager.resume() == tmp_path/'r'/'checkpoints'/'last.ckpt' and eager.epoch == 1
    for k, v in ws.model.state_dict().items(): assert torch.equal(v, eager.model.state_dict()[k]), k
