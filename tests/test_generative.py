"""End-to-end tests of the generative mask models: the two CLIs, bad input through the CLI, the papermill job
notebook for both families, and every named option of path, sampler and trainer on a tiny model."""
import os, sys, subprocess, json
from pathlib import Path
import numpy as np, pytest, torch
from hydra.utils import instantiate
from maniflow_nb.config import compose_config
from maniflow_nb.flow import PATHS, ODE_METHODS
from maniflow_nb.scenes import gen_scenes, gen_scenes_cli, SceneDataModule
from maniflow_nb.generative import generative_cli

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'PATH': f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
TINY = ['image_size=16', 'batch_size=4', 'max_epochs=1', 'model.network.hidden=32', 'model.network.depth=1',
        'model.network.heads=2', 'sampling_steps=2', 'model.lr_warmup_steps=2', 'trainer.progress_bar=none',
        'trainer.log_every_n_steps=1', 'gen_data.val_ratio=0.25']

PROGS = {'gen_scenes_cli': ('scenes', 'maniflow-gen-scenes'), 'generative_cli': ('generative', 'maniflow-generative')}

def run_cli(func, *args, timeout=300):
    "Run a console entry point (`gen_scenes_cli` or `generative_cli`) in a fresh process, as its console script does."
    script = Path(os.environ.get('PYTEST_TMP', '/tmp')) / f'maniflow_test_{func}_{os.getpid()}.py'
    script.write_text(f"import sys\nfrom maniflow_nb.{PROGS[func][0]} import {func}\nif __name__ == '__main__':\n    sys.exit({func}())\n")
    try: return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=ENV,
                               timeout=timeout, cwd=ROOT)
    finally: script.unlink()

@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    return gen_scenes(12, tmp_path_factory.mktemp('gen') / 'namo', seed=3, progress=False)

def assert_one_line_error(r, *contains, prog='maniflow-generative'):
    assert r.returncode == 2, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith(f'{prog}: ')]
    assert len(err) == 1, r.stderr
    for c in contains: assert c in err[0], err[0]

# ---------------------------------------------------------------- maniflow-gen-scenes

def test_gen_scenes_cli(tmp_path):
    out = tmp_path / 'namo'
    r = run_cli('gen_scenes_cli', '--n', 3, '--out', out, '--seed', 7)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ['scene_00000.npz', 'scene_00001.npz', 'scene_00002.npz']
    first = np.load(out / 'scene_00000.npz')['target_goal']
    with pytest.raises(SystemExit) as e: gen_scenes_cli(['--n', '3', '--out', str(out)])   # refuses to overwrite, leaves the data alone
    assert e.value.code == 2
    assert_one_line_error(run_cli('gen_scenes_cli', '--n', 0, '--out', tmp_path / 'x'), '--n must be >= 1', prog='maniflow-gen-scenes')
    assert (np.load(out / 'scene_00000.npz')['target_goal'] == first).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp dirs left

# ---------------------------------------------------------------- maniflow-generative: both families

def test_flow_cli_dopri5_cosine_then_resume(tmp_path, scenes):
    run = tmp_path / 'fm'
    r = run_cli('generative_cli', '--config-name', 'train_fb_flow_matching', *TINY, f'run_dir={run}',
                f'gen_data.data_dir={scenes}', 'model.sampler.method=dopri5', 'model.path.scheduler=cosine')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'training in 32-true on the CPU' in r.stdout             # 16-mixed on CPU: a note, not an error
    ck = sorted(p.name for p in (run / 'checkpoints').iterdir())
    assert ck[-1] == 'last.ckpt' and ck[0].startswith('epoch000-val_loss') and len(ck) == 2
    cfg = (run / '.hydra' / 'config.yaml').read_text()
    assert 'method: dopri5' in cfg and 'scheduler: cosine' in cfg
    assert 'model.sampler.method=dopri5' in (run / '.hydra' / 'overrides.yaml').read_text()
    r = run_cli('generative_cli', '--config-name', 'train_fb_flow_matching', *TINY, f'run_dir={run}', 'max_epochs=2',
                f'gen_data.data_dir={scenes}', 'model.sampler.method=dopri5', 'model.path.scheduler=cosine',
                f'ckpt_path={run}/checkpoints/last.ckpt')
    assert r.returncode == 0, r.stderr[-3000:]
    sd = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert sd['epoch'] == 1 and sd['global_step'] == 2 * 3          # 9 training scenes / batch 4 = 3 steps per epoch
    assert sorted(p.name for p in run.glob('metrics*.csv')) == ['metrics.csv']   # resuming continues the one metrics file
    import pandas as pd
    m = pd.read_csv(run / 'metrics.csv')
    assert set(m['epoch'].dropna().astype(int)) == {0, 1} and m['train_loss'].notna().sum() == 2 * 3   # both epochs' steps
    assert sd['hyper_parameters']['sampler']['method'] == 'dopri5'

def test_diffusion_cli_ddpm(tmp_path, scenes):
    run = tmp_path / 'df'
    r = run_cli('generative_cli', '--config_name', 'train_hf_diffusion', *TINY, f'run_dir={run}', f'gen_data.data_dir={scenes}',
                'model.sampler.sampler_type=ddpm', 'model.path.beta_schedule=linear', 'model.aux_loss_weight=0.05')
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = (run / 'metrics.csv').read_text().splitlines()[0].split(',')
    assert {'train_loss', 'train_loss_epoch', 'val_loss', 'val_loss_best', 'val_iou', 'train_aux_loss'} <= set(metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / 'tensorboard')); acc.Reload()    # the guide's names in TensorBoard
    assert {'train_loss', 'val_loss', 'val_loss_best'} <= set(acc.Tags()['scalars'])
    assert sorted(acc.Tags()['images']) == [f'Validation_Samples_{i}' for i in range(3)]   # 3 validation scenes
    assert (run / 'checkpoints' / 'last.ckpt').exists()

@pytest.mark.slow
def test_multi_gpu_trainer_on_cpu(tmp_path, scenes):
    "The DDP trainer group runs on CPU processes (gloo) outside a notebook when trainer.accelerator=cpu asks for it."
    run = tmp_path / 'ddp'
    r = run_cli('generative_cli', '--config-name', 'train_fb_flow_matching', *TINY, f'run_dir={run}',
                f'gen_data.data_dir={scenes}', 'trainer=multi_gpu', 'trainer.accelerator=cpu', 'trainer.devices=1')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'DDP over CPU processes (gloo)' in r.stdout
    assert (run / 'checkpoints' / 'last.ckpt').exists()

# ---------------------------------------------------------------- bad input

def error_args(case, tmp_path, scenes):
    "CLI arguments for a bad-input case and the fragments its one-line error must contain."
    args = ['--config-name', 'train_fb_flow_matching', *TINY, f'run_dir={tmp_path}/run', f'gen_data.data_dir={scenes}']
    if case == 'unknown_key': return args + ['model.sampler.methd=rk4'], ["unknown config key 'model.sampler.methd'"]
    if case == 'bad_value': return args + ['model.sampler.method=heun'], ["model.sampler.method is 'heun'"]
    if case == 'bad_scheduler': return args + ['model.path.scheduler=sigmoid'], ["model.path.scheduler is 'sigmoid'"]
    if case == 'no_scenes': return args + [f'gen_data.data_dir={tmp_path}/empty'], ['no .npz scene files in', 'maniflow-gen-scenes']
    if case == 'missing_ckpt': return args + ['ckpt_path=/no/such/last.ckpt'], ['ckpt_path /no/such/last.ckpt does not exist']
    if case == 'unknown_config': return ['--config-name', 'train_nope'], ["no config named 'train_nope'"]
    if case == 'ddp_without_gpu': return args + ['trainer=multi_gpu'], ['trainer=multi_gpu is DDP over CUDA GPUs, but no GPU is available', 'trainer=single_gpu']
    bad = tmp_path / 'bad'; bad.mkdir()
    z = dict(np.load(next(Path(scenes).glob('*.npz')))); z['goal_image'] = z['goal_image'][:100]
    np.savez(bad / 'scene_x.npz', **z)
    return args + [f'gen_data.data_dir={bad}'], ['scene_x.npz', "key 'goal_image' has shape (100, 224), expected (224, 224)"]

def test_cli_bad_scene_file(tmp_path, scenes):
    "In a real process: one line on stderr, exit code 2, no traceback, no run dir."
    args, want = error_args('bad_scene', tmp_path, scenes)
    assert_one_line_error(run_cli('generative_cli', *args), *want)
    assert not (tmp_path / 'run').exists()

@pytest.mark.parametrize('case', ['unknown_key', 'bad_value', 'bad_scheduler', 'no_scenes', 'missing_ckpt', 'unknown_config', 'ddp_without_gpu'])
def test_cli_errors(tmp_path, scenes, case, capsys):
    "The same checks in process for the other kinds of bad input (same code path as the console script)."
    if case == 'ddp_without_gpu' and torch.cuda.is_available(): pytest.skip('a GPU is available: multi_gpu runs')
    args, want = error_args(case, tmp_path, scenes)
    with pytest.raises(SystemExit) as e: generative_cli(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('maniflow-generative: ') and all(w in err[0] for w in want), err
    assert not (tmp_path / 'run').exists()                             # nothing written on bad input

# ---------------------------------------------------------------- the papermill job notebook

@pytest.mark.parametrize('config_name', ['train_fb_flow_matching', pytest.param('train_hf_diffusion', marks=pytest.mark.slow)])
def test_papermill_job(tmp_path, scenes, config_name):
    pm = pytest.importorskip('papermill')
    run = tmp_path / 'run'; run.mkdir()
    out = run / 'train_generative.ipynb'
    pm.execute_notebook(str(ROOT / 'nbs' / 'train_generative.ipynb'), str(out), kernel_name='python3', language='python',
                        cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(config_name=config_name, run_dir=str(run), data_dir=str(scenes), n_scenes=0))
    nb = json.loads(out.read_text())
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert 'val_loss_best' in text and 'last.ckpt' in text
    assert (run / 'checkpoints' / 'last.ckpt').exists() and (run / '.hydra' / 'config.yaml').exists()
    assert not list((ROOT / 'nbs').glob('runs')) and not (ROOT / 'nbs' / 'data').exists()
    pngs = [o['data']['image/png'] for c in nb['cells'] for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert (run / 'curves.png').exists() and len(pngs) >= 2, len(pngs)         # the record ends with the curves and samples

# ---------------------------------------------------------------- every option on a tiny model, in process

def tiny_module(config_name, *overrides):
    cfg = compose_config(config_name, [*TINY, *overrides])
    return instantiate(cfg.model)

@pytest.fixture(scope='module')
def batch(scenes):
    dm = SceneDataModule(scenes, image_size=16, batch_size=3); dm.setup()
    return next(iter(dm.val_dataloader()))

@pytest.mark.parametrize('scheduler', list(PATHS))
@pytest.mark.parametrize('method', ODE_METHODS)
def test_flow_options(batch, scheduler, method):
    torch.manual_seed(0)
    m = tiny_module('train_fb_flow_matching', f'model.path.scheduler={scheduler}', f'model.sampler.method={method}')
    loss, _ = m.compute_loss(batch); loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.net.parameters())
    out = m.generate(batch['context'])
    assert out.shape == batch['target'].shape and torch.isfinite(out).all()
    assert m.sampler.nfe == {'euler': 2, 'midpoint': 4, 'rk4': 8}.get(method, m.sampler.nfe) and m.sampler.nfe > 0

@pytest.mark.parametrize('beta_schedule', ['squaredcos_cap_v2', 'linear'])
@pytest.mark.parametrize('sampler_type', ['ddim', 'ddpm'])
def test_diffusion_options(batch, beta_schedule, sampler_type):
    torch.manual_seed(0)
    m = tiny_module('train_hf_diffusion', f'model.path.beta_schedule={beta_schedule}', f'model.sampler.sampler_type={sampler_type}')
    with torch.no_grad(): m.net.out.weight.normal_(std=0.1)
    loss, _ = m.compute_loss(batch)
    assert torch.isfinite(loss)
    a = m.generate(batch['context'], generator=torch.Generator().manual_seed(1))
    b = m.generate(batch['context'], generator=torch.Generator().manual_seed(2))
    assert m.sampler.nfe == 2 and a.shape == batch['target'].shape
    assert not torch.equal(a, b)                                       # different seeds, different samples
    if sampler_type == 'ddim':                                         # eta 0: a fixed start gives a fixed sample
        assert torch.equal(a, m.generate(batch['context'], generator=torch.Generator().manual_seed(1)))

@pytest.mark.parametrize('config_name', ['train_fb_flow_matching', 'train_hf_diffusion'])
def test_aux_loss(batch, config_name):
    torch.manual_seed(0)
    m = tiny_module(config_name, 'model.aux_loss_weight=0.1')
    with torch.no_grad(): m.net.out.weight.normal_(std=0.1)
    g = lambda: torch.Generator().manual_seed(0)
    loss, parts = m.compute_loss(batch, generator=g())
    assert 0 < parts['aux'] <= 1 and torch.allclose(loss, parts['mse'] + 0.1 * parts['aux'])

# ---------------------------------------------------------------- golden outputs of a tiny fixed-seed DiT, both families
# Regenerate (only after an intended numerical change, and say so in the commit):
#     .venv/bin/python tests/test_generative.py --regenerate

GOLDEN = Path(__file__).parent / 'golden' / 'generative_tiny.pt'

TINY_NET = ['image_size=16', 'batch_size=4', 'model.network.hidden=32', 'model.network.depth=1', 'model.network.heads=2',
            'model.aux_loss_weight=0.1']
FAMILIES = {'flow': ('train_fb_flow_matching', 'model.sampler.method', ['euler', 'midpoint', 'rk4', 'dopri5']),
            'diffusion': ('train_hf_diffusion', 'model.sampler.sampler_type', ['ddim', 'ddpm'])}

def golden_batch(B=3, S=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'context': (torch.rand(B, 5, S, S, generator=g) > 0.7).float(),
            'target': (torch.rand(B, 1, S, S, generator=g) > 0.5).float()}

def golden_module(config_name, *overrides):
    "The tiny module with every weight drawn from a fixed generator (by sorted name), so nothing is zero."
    torch.manual_seed(0)
    m = instantiate(compose_config(config_name, [*TINY_NET, 'sampling_steps=3', *overrides]).model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(m.net.named_parameters()): p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m

def golden_outputs() -> dict:
    "Forward pass, training loss on a fixed batch and a 3-step sample from fixed noise, for every sampler."
    torch.set_num_threads(1)
    b, out = golden_batch(), {}
    for fam, (config_name, key, methods) in FAMILIES.items():
        m = golden_module(config_name)
        x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([0.0, 0.3, 0.9])
        with torch.no_grad(): out[f'{fam}_forward'] = m.net(x, t)
        loss, parts = m.compute_loss(b, generator=torch.Generator().manual_seed(3))
        out[f'{fam}_loss'], out[f'{fam}_mse'], out[f'{fam}_aux'] = loss.detach(), parts['mse'].detach(), parts['aux'].detach()
        for meth in methods:
            m = golden_module(config_name, f'{key}={meth}')
            out[f'{fam}_sample_{meth}'] = m.generate(b['context'], generator=torch.Generator().manual_seed(4))
            out[f'{fam}_nfe_{meth}'] = torch.tensor(m.sampler.nfe)
    return out

def test_golden_outputs():
    want, got = torch.load(GOLDEN, weights_only=True), golden_outputs()
    assert sorted(got) == sorted(want)
    for k in want:
        if '_nfe_' in k and 'dopri5' not in k: assert int(got[k]) == int(want[k]), k
        elif '_nfe_' not in k: torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5, msg=lambda s: f'{k}: {s}')

if __name__ == '__main__' and '--regenerate' in sys.argv:
    torch.save(golden_outputs(), GOLDEN)
    print(f'wrote {GOLDEN}')
