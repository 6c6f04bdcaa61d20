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
