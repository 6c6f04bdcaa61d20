"""maniflow_nb.launch end to end: a 2-process gloo DDP step through the real Lightning path compared with one process
on the global batch, the launch paths, trainer keys the launch refuses or honours, sweeps and preemption (sbatch jobs and
`maniflow-slurm`: tests/test_slurm.py)."""
import os, sys, math, signal, socket, subprocess
from pathlib import Path
import pytest, torch
import pytorch_lightning as pl

from maniflow_nb.config import compose_config
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.launch import configure_launch, finish_launch, launch_callbacks
from maniflow_nb.lightning import fit

ROOT = Path(__file__).resolve().parents[1]
PER_RANK_BATCH, WORLD = 4, 2
OVERRIDES = ['policy=mlp', 'policy.dropout=0', 'trainer.accelerator=cpu', 'training.num_epochs=1', 'training.max_train_steps=1',
             'training.max_val_steps=1', 'training.lr_warmup_steps=0', 'training.sample_every=0', 'logger.tensorboard=false']

def _cfg(store, run_dir, batch_size):
    return compose_config('maniflow_state_metaworld', OVERRIDES + [f'task.dataset_path={store}', f'run_dir={run_dir}',
                                                                    f'training.batch_size={batch_size}'])

class Record(pl.Callback):
    "Keeps this rank's sampler shard and the gradients the optimizer steps with (after DDP's all-reduce)."
    def on_train_start(self, trainer, pl_module): self.indices = list(trainer.train_dataloader.sampler)
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.policy.named_parameters() if p.grad is not None}

def _run(cfg):
    rec = Record()
    res = fit(cfg, callbacks=[*launch_callbacks(cfg, env={}), rec])
    m = res['module']
    out = {'params': {k: v.clone() for k, v in m.policy.state_dict().items()},
           'ema': {k: v.clone() for k, v in m.ema_model.state_dict().items()}, 'grads': rec.grads, 'indices': rec.indices,
           'step': res['global_step'], 'world': res['trainer'].world_size}
    finish_launch()
    out['pg_alive_after'] = torch.distributed.is_initialized()
    return out

def _worker(rank, port, store, root):
    "One torchrun-like process: the environment says rank/world, `configure_launch` turns it into Lightning DDP over gloo."
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK='0',
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    cfg = configure_launch(_cfg(store, Path(root)/f'run_rank{rank}', PER_RANK_BATCH), cuda_count=0)
    assert (cfg.trainer.devices, cfg.trainer.strategy) == (WORLD, 'ddp')
    torch.save(_run(cfg), Path(root)/f'out{rank}.pt')

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    store = root/'s.zarr'
    make_synthetic_store(store, n_episodes=4, episode_len=20)
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(store), str(root)), nprocs=WORLD, join=True)
    ranks = [torch.load(root/f'out{r}.pt', weights_only=False) for r in range(WORLD)]
    single = _run(configure_launch(_cfg(store, root/'run_single', PER_RANK_BATCH * WORLD), env={}, cuda_count=0, quiet=True))
    return root, ranks, single

def test_ddp_ranks_agree(ddp_runs):
    root, (r0, r1), single = ddp_runs
    assert r0['world'] == r1['world'] == WORLD and single['world'] == 1
    assert r0['step'] == r1['step'] == 1
    for k in r0['params']: assert torch.equal(r0['params'][k], r1['params'][k]), k      # bitwise: same all-reduced grads
    for k in r0['ema']: assert torch.equal(r0['ema'][k], r1['ema'][k]), k
    assert not r0['pg_alive_after'] and not r1['pg_alive_after']                      # process group destroyed

def test_ddp_step_equals_single_process_global_batch(ddp_runs):
    "DDP's averaged gradient is the gradient of the mean loss over the concatenated global batch (float32 sums in another order: rtol 1e-5)."
    root, (r0, r1), single = ddp_runs
    assert r0['grads'].keys() == single['grads'].keys() and len(single['grads']) > 0
    for k, g in single['grads'].items():
        torch.testing.assert_close(r0['grads'][k], g, rtol=1e-5, atol=1e-7)
    # After one AdamW step the update is ~lr*sign(grad): elements whose gradient is ~0 may flip sign with the summation order.
    for k, p in single['params'].items():
        g = single['grads'].get(f'{k}')
        mask = g.abs() > 1e-6 if g is not None else torch.ones_like(p, dtype=torch.bool)
        torch.testing.assert_close(r0['params'][k][mask], p[mask], rtol=0, atol=1e-6)
    moved = sum((single['params'][k] - r0['params'][k]).abs().max().item() for k in single['params'])
    assert moved < 1e-5

def test_sampler_shards_disjoint(ddp_runs):
    root, (r0, r1), single = ddp_runs
    n = len(single['indices'])
    assert len(r0['indices']) == len(r1['indices']) == math.ceil(n / WORLD)
    assert set(r0['indices']) | set(r1['indices']) == set(range(n))
    assert len(set(r0['indices']) & set(r1['indices'])) == WORLD * math.ceil(n / WORLD) - n     # only the padding repeats
    assert sorted(r0['indices'][:PER_RANK_BATCH] + r1['indices'][:PER_RANK_BATCH]) == sorted(single['indices'][:PER_RANK_BATCH * WORLD])

def test_only_rank0_writes(ddp_runs):
    root = ddp_runs[0]
    assert (root/'run_rank0'/'config.yaml').exists() and (root/'run_rank0'/'checkpoints'/'last.ckpt').exists()
    assert not [p for p in (root/'run_rank1').rglob('*') if p.is_file()]

# --- the launch paths agree: python -m, the console script, torchrun with one process ---
def _tiny_overrides(store, run_dir):
    "A tiny training (the override set of tests/test_slurm.py) on CPU."
    return ['policy=mlp', f'task.dataset_path={store}', 'training.num_epochs=1', 'training.batch_size=4', 'training.max_train_steps=2',
            'training.max_val_steps=1', 'logger.tensorboard=false', 'trainer.accelerator=cpu', f'run_dir={run_dir}']

def _last_weights(run_dir) -> dict:
    return torch.load(Path(run_dir)/'checkpoints'/'last.ckpt', weights_only=False)['state_dict']

def test_launch_paths_train_identically(tmp_path):
    "The same tiny config through `python -m maniflow_nb.train`, `maniflow-train` and `torchrun --nproc_per_node 1`: identical weights."
    store = tmp_path/'s.zarr'
    make_synthetic_store(store, n_episodes=3, episode_len=12)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', WANDB_MODE='offline')
    cmds = {'python_m': [sys.executable, '-m', 'maniflow_nb.train'], 'console': [str(bindir/'maniflow-train')],
            'torchrun': [str(bindir/'torchrun'), '--nproc_per_node', '1', '--master_port', str(_free_port()), '-m', 'maniflow_nb.train']}
    for name, cmd in cmds.items():
        r = subprocess.run([*cmd, '--config-name', 'maniflow_state_metaworld', *_tiny_overrides(store, tmp_path/name)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert ('via torchrun' if name == 'torchrun' else 'launch: single via none') in r.stdout, (name, r.stdout)
    steps = {n: torch.load(tmp_path/n/'checkpoints'/'last.ckpt', weights_only=False)['global_step'] for n in cmds}
    assert steps == {n: 2 for n in cmds}, steps
    ref = _last_weights(tmp_path/'python_m')
    assert ref and any(k.startswith('policy.') for k in ref)
    for name in ('console', 'torchrun'):
        got = _last_weights(tmp_path/name)
        assert got.keys() == ref.keys()
        for k in ref: assert torch.equal(got[k], ref[k]), (name, k)


# --- multirun sweeps ---
def test_train_multirun(tmp_path, capsys):
    "`maniflow-train -m` trains each combination in its own run dir and prints the table (in-process: no extra interpreter)."
    from maniflow_nb.train import main
    store = tmp_path/'s.zarr'
    make_synthetic_store(store, n_episodes=3, episode_len=12)
    main(['--config-name', 'maniflow_state_metaworld', '--multirun', *_tiny_overrides(store, tmp_path/'mr'), 'training.seed=0,1'])
    out = capsys.readouterr().out
    dirs = sorted(p.name for p in (tmp_path/'mr').iterdir())
    assert dirs == ['0_seed=0', '1_seed=1'], dirs
    assert all((tmp_path/'mr'/d/'checkpoints'/'last.ckpt').exists() for d in dirs)
    table = out[out.index('run dir'):].splitlines()[1:]
    assert len(table) == 2 and {l.split()[0] for l in table} == {'0', '1'}, out

# --- trainer.devices / num_nodes / strategy given by the user: honoured or refused, in both trainers ---
@pytest.mark.parametrize('trainer', ['lightning', 'legacy'])
@pytest.mark.parametrize('ov,expect', [
    ('trainer.devices=2', 'trainer.devices=2 but '),
    ('trainer.num_nodes=2', 'trainer.num_nodes=2 but '),
    ('trainer.strategy=ddp', 'trainer.strategy=ddp but ')])
def test_trainer_keys_not_replaced(tmp_path, capsys, trainer, ov, expect):
    "`maniflow-train ... trainer.devices=2` on one CPU process is refused in one line naming the key (it used to train on one device)."
    from maniflow_nb.train import main
    with pytest.raises(SystemExit) as e:
        main(['--config-name', 'maniflow_state_metaworld', f'trainer={trainer}', ov, *_tiny_overrides(tmp_path/'s.zarr', tmp_path/'r')])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and expect in err[0], err
    assert ('trainer=legacy runs on one device' if trainer == 'legacy' else 'launch resolved single mode with 1 process') in err[0], err
    assert not (tmp_path/'r').exists()

def test_trainer_devices_honoured(tmp_path, capsys):
    "A request that agrees with the launch is kept: 2 CPU processes asked both ways (dry run: nothing is spawned)."
    from maniflow_nb.train import main
    main(['--config-name', 'maniflow_state_metaworld', '--dry-run', 'trainer.devices=2', 'trainer.strategy=ddp', 'launch.train_mode=distributed',
          'launch.world_size=2', *_tiny_overrides(tmp_path/'s.zarr', tmp_path/'r')])
    out = capsys.readouterr().out
    assert 'launch: distributed via spawn, world_size=2 (1 node(s) x 2)' in out and 'strategy=ddp' in out, out

# --- preemption: SIGUSR1 in every window of a step resumes to exactly the uninterrupted run ---
class _RaiseAt(pl.Callback):
    "Sends SIGUSR1 to this process once, from inside `hook`, when the trainer is at global step `step`."
    def __init__(self, hook, step): self.hook, self.step, self.sent = hook, step, False
    def _at(self, trainer, hook):
        if hook == self.hook and trainer.global_step == self.step and not self.sent:
            self.sent = True; os.kill(os.getpid(), signal.SIGUSR1)
    def on_before_optimizer_step(self, trainer, *a): self._at(trainer, 'on_before_optimizer_step')
    def on_train_batch_end(self, trainer, *a): self._at(trainer, 'on_train_batch_end')
    def on_validation_batch_start(self, trainer, *a): self._at(trainer, 'on_validation_batch_start')
    def on_save_checkpoint(self, trainer, *a): self._at(trainer, 'on_save_checkpoint')
    def on_train_epoch_end(self, trainer, *a): self._at(trainer, 'on_train_epoch_end')

def _preempt_cfg(store, run_dir, accumulate):
    return compose_config('maniflow_state_metaworld', ['policy=mlp', f'task.dataset_path={store}', f'run_dir={run_dir}', 'trainer.accelerator=cpu',
        'training.num_epochs=3', 'training.batch_size=4', f'training.max_train_steps={2 * accumulate}', f'training.gradient_accumulate_every={accumulate}',
        'training.max_val_steps=1', 'logger.tensorboard=false', 'trainer.progress_bar=false'])

def _fit_weights(cfg, *extra):
    res = fit(cfg, callbacks=[*launch_callbacks(cfg, env={}), *extra])
    return res['global_step'], {k: v.clone() for k, v in res['module'].policy.state_dict().items()}

@pytest.fixture(scope='module')
def preempt_ref(tmp_path_factory):
    root = tmp_path_factory.mktemp('preempt')
    make_synthetic_store(root/'s.zarr', n_episodes=4, episode_len=20)
    return root, {a: _fit_weights(_preempt_cfg(root/'s.zarr', root/f'ref{a}', a)) for a in (1, 2)}

# 3 epochs x 2 optimizer steps; each window is hit at global step 2 (end of epoch 0) or 3 (inside epoch 1): the
# checkpoint then lands mid-epoch, the case that lost a step (Lightning finished the epoch and overwrote last.ckpt).
@pytest.mark.parametrize('hook,step,accumulate', [
    ('on_before_optimizer_step', 2, 1),    # mid-step: between backward and the optimizer step
    ('on_validation_batch_start', 2, 1),   # during validation
    ('on_save_checkpoint', 2, 1),          # during the epoch-end checkpoint write
    ('on_train_epoch_end', 2, 1),          # at the epoch boundary
    ('on_train_batch_end', 3, 1),          # at a batch end inside an epoch
    ('on_train_batch_end', 2, 2)])         # between the micro-batches of a gradient accumulation
def test_preemption_window_resumes_exactly(preempt_ref, hook, step, accumulate):
    root, ref = preempt_ref
    cfg = _preempt_cfg(root/'s.zarr', root/f'{hook}_{step}_{accumulate}', accumulate)
    stopped, _ = _fit_weights(cfg, _RaiseAt(hook, step))
    assert 0 < stopped < 6
    assert torch.load(Path(cfg.run_dir)/'checkpoints'/'last.ckpt', weights_only=True)['global_step'] == stopped
    final, weights = _fit_weights(cfg)                                  # the requeued job: same command, resumes
    assert final == ref[accumulate][0] == 6
    for k, v in ref[accumulate][1].items(): assert torch.equal(weights[k], v), k
