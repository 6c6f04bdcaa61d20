"""Lightning trainer end to end: a CPU run killed with SIGKILL mid-epoch resumes to the uninterrupted run's weights."""
import os, sys, json, subprocess, textwrap
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore'}

def overrides(store, run_dir, epochs=3):
    return ['policy=mlp', f'task.dataset_path={store}', 'task.shape_meta.obs.point_cloud.shape=[64,3]', 'horizon=4',
            'n_action_steps=2', 'training.batch_size=8', f'training.num_epochs={epochs}', 'training.lr_warmup_steps=2',
            'training.checkpoint_every_steps=1', 'trainer.deterministic=true', 'trainer.accelerator=cpu',
            'trainer.progress_bar=false', 'logger.tensorboard=false', f'run_dir={run_dir}']

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    from maniflow_nb.data import make_synthetic_store
    return make_synthetic_store(tmp_path_factory.mktemp('data')/'s.zarr', n_episodes=4, episode_len=20, n_points=64)

def cli(*args, check=True):
    r = subprocess.run([PY, '-m', 'maniflow_nb.train', '--config-name', 'maniflow_pointcloud_metaworld', *args],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if check: assert r.returncode == 0, r.stderr[-3000:]
    return r

KILL_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    from pytorch_lightning.callbacks import Callback
    from maniflow_nb.config import compose_config
    from maniflow_nb.lightning import fit
    class KillAt(Callback):
        "SIGKILL this process at optimizer step `step` (before that step's checkpoint is written)."
        def __init__(self, step): self.step = step
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == self.step: os.kill(os.getpid(), signal.SIGKILL)
    fit(compose_config('maniflow_pointcloud_metaworld', sys.argv[2:]), callbacks=[KillAt(int(sys.argv[1]))])
''')

def load(run_dir): return torch.load(Path(run_dir)/'checkpoints'/'last.ckpt', weights_only=True)

def test_sigkill_resume_is_exact(store, tmp_path):
    straight, killed = tmp_path/'straight', tmp_path/'killed'
    r = cli(*overrides(store, straight))
    assert 'best checkpoint:' in r.stdout
    k = subprocess.run([PY, '-c', KILL_SCRIPT, '13', *overrides(store, killed)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and k.returncode == -9, k.stderr[-2000:]
    mid = load(killed)
    assert mid['global_step'] == 12 and mid['maniflow']['loop']['batch_idx'] > 0      # killed in the middle of an epoch
    assert not [p for p in (killed/'checkpoints').iterdir() if '.tmp-' in p.name]        # no half-written files left visible
    cli(*overrides(store, killed))                                                      # resumes from last.ckpt
    a, b = load(straight), load(killed)
    assert a['global_step'] == b['global_step'] and a['maniflow']['ema_step'] == b['maniflow']['ema_step']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for n in a['state_dict']: assert torch.equal(a['state_dict'][n], b['state_dict'][n]), n
    sa, sb = a['optimizer_states'][0]['state'], b['optimizer_states'][0]['state']
    for i in sa: assert torch.equal(sa[i]['exp_avg'], sb[i]['exp_avg'])
    assert a['lr_schedulers'] == b['lr_schedulers']
    assert (killed/'config.yaml').exists() and not (killed/'lightning_logs').exists()

DDP_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from pytorch_lightning.callbacks import Callback
    from maniflow_nb.config import compose_config
    from maniflow_nb.lightning import fit
    class SameOnAllRanks(Callback):
        "After training, gather the weights, the EMA weights and each rank's first sample indices."
        def on_train_end(self, trainer, pl_module):
            flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
            g = lambda x: trainer.strategy.all_gather(x)
            w, e = g(flat(pl_module.policy)), g(flat(pl_module.ema_model))
            idx = g(torch.tensor(list(trainer.train_dataloader.sampler)[:8]))
            if trainer.is_global_zero:
                Path(sys.argv[1]).write_text(json.dumps({'weights_equal': bool(torch.equal(w[0], w[1])),
                    'ema_equal': bool(torch.equal(e[0], e[1])), 'shards_differ': not torch.equal(idx[0], idx[1])}))
    fit(compose_config('maniflow_pointcloud_metaworld', sys.argv[2:]), callbacks=[SameOnAllRanks()])
''')

@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(store, tmp_path):
    "Two gloo ranks see different data; the loss goes through forward, so gradients sync and weights and EMA agree."
    out = tmp_path/'ddp.json'
    ov = overrides(store, tmp_path/'ddp', epochs=1) + ['trainer.strategy=ddp', 'trainer.devices=2', 'training.checkpoint_every_steps=0']
    script = tmp_path/'ddp.py'; script.write_text(DDP_SCRIPT)     # Lightning's ddp launcher re-runs this script per rank
    r = subprocess.run([PY, str(script), str(out), *ov], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text()) == {'weights_equal': True, 'ema_equal': True, 'shards_differ': True}

def test_metaworld_eval_callback_and_topk_on_score(tmp_path):
    "EnvEval rolls the EMA policy out with the real MetaWorldRunner; top-k checkpoints are named by test_mean_score."
    import csv
    from maniflow_nb.config import compose_config
    from maniflow_nb.data import make_synthetic_store
    from maniflow_nb.lightning import fit
    store = make_synthetic_store(tmp_path/'s.zarr', n_episodes=4, episode_len=20, n_points=512)
    r = fit(compose_config('maniflow_pointcloud_metaworld', [
        'policy=mlp', f'task.dataset_path={store}', f'run_dir={tmp_path/"ev"}', 'horizon=4', 'n_action_steps=2',
        'training.batch_size=8', 'training.num_epochs=1', 'training.max_train_steps=2', 'training.eval_every=1',
        'task.env_runner.n_episodes=1', 'task.env_runner.max_steps=10', 'checkpoint.topk.monitor_key=test_mean_score',
        'checkpoint.topk.mode=max', 'trainer.accelerator=cpu', 'logger.tensorboard=false', 'trainer.progress_bar=false']))
    assert Path(r['best_path']).name.startswith('epoch=0000-test_mean_score=') and 0 <= r['best_score'] <= 1
    rows = list(csv.DictReader(open(tmp_path/'ev'/'metrics.csv')))
    assert [float(x['test_mean_score']) for x in rows if x.get('test_mean_score')] == [r['best_score']]

def test_precision_rule_and_wandb_id(store, tmp_path):
    "Lightning takes config.resolve_precision (16-mixed without CUDA -> 32-true) and runlog's wandb run id."
    from maniflow_nb.config import compose_config
    from maniflow_nb.lightning import make_trainer, make_loggers
    from maniflow_nb.runlog import wandb_run_id
    cfg = compose_config('maniflow_pointcloud_metaworld', overrides(store, tmp_path/'p') + ['trainer.precision=16-mixed', 'logger.wandb.enabled=true'])
    assert make_trainer(cfg).precision == '32-true'
    wb = make_loggers(cfg, tmp_path/'p')[-1]
    assert type(wb).__name__ == 'WandbLogger' and wb._wandb_init['id'] == wandb_run_id(tmp_path/'p')

# --- the GPU fast path (nbs/22a_fastpath): each key acts in both trainers, or both refuse it alike ----------------------
TRAINERS = ['legacy', 'lightning']

def tiny_train(store, rd, trainer, *ov):
    "A 2-epoch tiny CPU run through `maniflow-train`; returns the (step, train_loss) rows of its metrics.csv."
    import csv
    from maniflow_nb.train import main
    sys.path.insert(0, str(Path(__file__).parent)); from tiny_run import tiny_argv
    main(tiny_argv(store, rd, trainer, 'training.sample_every=0', *ov))
    rows = list(csv.DictReader(open(Path(rd)/'metrics.csv')))
    return [(int(r['global_step']) if r.get('global_step') else int(r['step']) + 1, float(r['train_loss'])) for r in rows if r.get('train_loss')]

@pytest.fixture(scope='module')
def state_store(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent)); from tiny_run import tiny_store
    return tiny_store(tmp_path_factory.mktemp('state')/'s.zarr')

@pytest.mark.parametrize('trainer', TRAINERS)
def test_device_sampler_trains_on_the_same_batches(state_store, tmp_path, trainer):
    "training.device_sampler=true (gathered on the device, here CPU tensors) logs exactly the losses of the DataLoader run."
    ref = tiny_train(state_store, tmp_path/'ref', trainer)
    dev = tiny_train(state_store, tmp_path/'dev', trainer, 'training.device_sampler=true')
    assert ref and dev == ref, (dev, ref)

@pytest.mark.parametrize('trainer', TRAINERS)
def test_compile_acts_in_both_trainers(state_store, tmp_path, monkeypatch, trainer):
    "training.compile=true compiles the policy's networks and the EMA copy's (aot_eager here: the same graphs without a C++ build); losses as eager."
    import torch.nn as nn, maniflow_nb.fastpath as fp
    compiled, real = [], nn.Module.compile
    def spy(self, *a, **k): compiled.append((type(self).__name__, id(self))); return real(self, *a, **k)
    monkeypatch.setattr(fp, 'COMPILE_BACKEND', 'aot_eager'); monkeypatch.setattr(nn.Module, 'compile', spy)
    ref = tiny_train(state_store, tmp_path/'ref', trainer)
    assert not compiled
    got = tiny_train(state_store, tmp_path/'c', trainer, 'training.compile=true')
    assert len(compiled) == 2 and len({i for _, i in compiled}) == 2, compiled     # the policy's network and its EMA copy's
    assert [s for s, _ in got] == [s for s, _ in ref]
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for (_, a), (_, b) in zip(got, ref)), (got, ref)

@pytest.mark.slow
@pytest.mark.parametrize('trainer', TRAINERS)
def test_compile_inductor_in_both_trainers(state_store, tmp_path, trainer):
    "The real backend (inductor, C++ kernels on the CPU): the same losses within float tolerance."
    ref = tiny_train(state_store, tmp_path/'ref', trainer)
    got = tiny_train(state_store, tmp_path/'c', trainer, 'training.compile=true')
    assert all(abs(a - b) <= 1e-4 * max(1, abs(b)) for (_, a), (_, b) in zip(got, ref)), (got, ref)

@pytest.mark.parametrize('trainer', TRAINERS)
@pytest.mark.parametrize('ov,msg', [
    (['training.compile=fast'], "training.compile is 'fast', expected false, true or a torch.compile mode"),
    (['training.device_sampler=1'], 'training.device_sampler is 1, expected one of True, False'),
    (['training.device_sampler=true', 'task.dataset.storage=stream'], 'training.device_sampler=true needs'),
    (['training.device_sampler=true', 'TWO_STORES'], 'training.device_sampler=true works on one store, not 2'),
])
def test_fastpath_refused_alike(state_store, tmp_path, capsys, trainer, ov, msg):
    "What the fast path cannot do is refused with the same one line by both trainers (exit 2, nothing trained)."
    from maniflow_nb.train import main
    sys.path.insert(0, str(Path(__file__).parent)); from tiny_run import tiny_argv
    ov = [f"task.dataset_path='{state_store},{state_store}'" if o == 'TWO_STORES' else o for o in ov]
    with pytest.raises(SystemExit) as e: main(tiny_argv(state_store, tmp_path/'r', trainer, *ov))
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and len([l for l in err.splitlines() if msg in l]) == 1, err
    assert not (tmp_path/'r'/'checkpoints').exists()

def test_device_sampler_too_big_for_the_device_refused(state_store, tmp_path, monkeypatch):
    "A store that needs more than half the device's free memory: the same UserError from both trainers."
    import maniflow_nb.fastpath as fp
    from maniflow_nb.config import compose_config, UserError
    from maniflow_nb.workspace import TrainWorkspace
    from maniflow_nb.lightning import build
    sys.path.insert(0, str(Path(__file__).parent)); from tiny_run import tiny_argv
    monkeypatch.setattr(fp, 'device_free', lambda device: 1024)
    msgs = []
    for trainer in TRAINERS:
        cfg = compose_config('maniflow_state_metaworld', tiny_argv(state_store, tmp_path/trainer, trainer, 'training.device_sampler=true')[2:])
        with pytest.raises(UserError, match='training.device_sampler=true: the arrays of .* which has 0.00 MiB free') as e:
            TrainWorkspace(cfg) if trainer == 'legacy' else next(iter(build(cfg)[2]))
        msgs.append(str(e.value).replace(str(tmp_path/trainer), ''))
    assert msgs[0] == msgs[1]

def test_progress_bar_shows_the_lr_the_step_used(store, tmp_path):
    "Issue 15: the bar's lr is the one the last optimizer step used (as the legacy bar), not the scheduler's next (0 at the end of cosine)."
    from pytorch_lightning.callbacks import Callback
    from maniflow_nb.config import compose_config
    from maniflow_nb.lightning import fit, StepProgressBar
    class StepLR(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer): self.lr = optimizer.param_groups[0]['lr']
    spy = StepLR()
    r = fit(compose_config('maniflow_pointcloud_metaworld', overrides(store, tmp_path/'b', epochs=2) + ['trainer.progress_bar=true']), callbacks=[spy])
    t = r['trainer']; bar = next(c for c in t.callbacks if isinstance(c, StepProgressBar))
    assert t.optimizers[0].param_groups[0]['lr'] == 0.0 < spy.lr               # the post-step rate is 0 at the end of cosine
    assert bar.get_metrics(t, r['module'])['lr'] == f'{spy.lr:.2e}'
