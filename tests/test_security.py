"""Files are data, never code: a checkpoint whose embedded config names any callable outside our allow-list of
policy classes is refused by every command that reads checkpoints (eval, rl, compare, resume), with one line naming
the target, and nothing it names is ever called (the marker files stay absent, the victim directory stays whole)."""
import sys, shutil
from pathlib import Path
import pytest
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.checkpoint import load_checkpoint, save_checkpoint
from maniflow_nb.train import main as train_main

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny legacy run of the state config (MLP policy) and its store."
    d = tmp_path_factory.mktemp('sec')
    store = make_synthetic_store(d/'s.zarr', n_episodes=4, episode_len=20, seed=0)
    rd = d/'run'
    train_main(['--config-name', 'maniflow_state_metaworld', 'trainer=legacy', 'policy=mlp', 'policy.hidden=16',
                f'task.dataset_path={store}', f'run_dir={rd}', 'training.num_epochs=1', 'training.batch_size=8',
                'logger.tensorboard=false', 'trainer.progress_bar=false', 'trainer.accelerator=cpu'])
    ckpt = sorted((rd/'checkpoints').glob('last*.ckpt')) or sorted((rd/'checkpoints').glob('*.ckpt'))
    return store, rd, ckpt[0]

def payloads(tmp):
    "Crafted `policy` configs: each would write, delete or run something if it were ever resolved."
    victim = tmp/'victim'; victim.mkdir(exist_ok=True); (victim/'thesis.tex').write_text('years of work')
    return victim, {
        'os.system': {'_target_': 'os.system', 'command': f'touch {tmp}/marker_system'},
        'builtins.open': {'_target_': 'builtins.open', 'file': str(tmp/'marker_open'), 'mode': 'w'},
        'shutil.rmtree': {'_target_': 'shutil.rmtree', 'path': str(victim)},
        'torch.load': {'_target_': 'torch.load', 'f': str(tmp/'x.pt'), 'weights_only': False},
        'our own writer': {'_target_': 'maniflow_nb.data.write_store', 'path': str(victim), 'data': {}, 'episode_ends': []},
        'nested': {'_target_': 'maniflow_nb.mlp.MLPPolicy', 'hidden': {'_target_': 'os.system', 'command': f'touch {tmp}/marker_nested'}},
    }

def craft(src, dst, policy_cfg):
    ck = load_checkpoint(src); ck['config']['policy'] = policy_cfg; save_checkpoint(ck, dst); return dst

def nothing_happened(tmp, victim):
    assert not list(tmp.glob('marker_*')), list(tmp.glob('marker_*'))
    assert (victim/'thesis.tex').read_text() == 'years of work'

def one_line_exit_2(capsys, fn, prog):
    with pytest.raises(SystemExit) as e: fn()
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith(f'{prog}:')]
    assert e.value.code == 2 and len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    return lines[0]

@pytest.mark.parametrize('name', ['os.system', 'builtins.open', 'shutil.rmtree', 'torch.load', 'our own writer', 'nested'])
def test_eval_refuses_crafted_checkpoint(trained, tmp_path, capsys, name):
    from maniflow_nb.evaluate import eval_cli
    victim, p = payloads(tmp_path)
    ck = craft(trained[2], tmp_path/'crafted.ckpt', p[name])
    msg = one_line_exit_2(capsys, lambda: eval_cli([str(ck), '--episodes', '1']), 'maniflow-eval')
    assert 'not an allowed class' in msg, msg
    nothing_happened(tmp_path, victim)

def test_rl_refuses_crafted_checkpoint(trained, tmp_path, capsys):
    from maniflow_nb.rl import rl_cli
    victim, p = payloads(tmp_path)
    ck = craft(trained[2], tmp_path/'crafted.ckpt', p['os.system'])
    msg = one_line_exit_2(capsys, lambda: rl_cli(['--config-name', 'train_maniflow_state_rl', f'policy.checkpoint={ck}',
                                                  f'run_dir={tmp_path}/rl', 'training.device=cpu']), 'maniflow-rl')
    assert 'not an allowed class' in msg, msg
    nothing_happened(tmp_path, victim)

def test_resume_refuses_crafted_checkpoint(trained, tmp_path, capsys):
    store, rd, src = trained
    victim, p = payloads(tmp_path)
    run = tmp_path/'run'; shutil.copytree(rd, run)
    for f in (run/'checkpoints').glob('*.ckpt'): craft(f, f, p['os.system'])
    args = ['--config-name', 'maniflow_state_metaworld', 'trainer=legacy', 'policy=mlp', 'policy.hidden=16',
            f'task.dataset_path={store}', f'run_dir={run}', 'training.num_epochs=2', 'training.batch_size=8',
            'logger.tensorboard=false', 'trainer.progress_bar=false', 'trainer.accelerator=cpu']
    msg = one_line_exit_2(capsys, lambda: train_main(args), 'maniflow-train')
    assert 'os.system' in msg, msg                       # named: either not allowed, or an unsafe change on resume
    nothing_happened(tmp_path, victim)

def test_compare_refuses_crafted_checkpoint(trained, tmp_path, capsys):
    from maniflow_nb.parity import compare_cli
    victim, p = payloads(tmp_path)
    runs = []
    for n in 'ab':
        run = tmp_path/n; shutil.copytree(trained[1], run); runs.append(str(run))
        for f in (run/'checkpoints').glob('*.ckpt'): craft(f, f, p['os.system'])
    with pytest.raises(SystemExit) as e: compare_cli([*runs, '--out', str(tmp_path/'report.md')])
    out = capsys.readouterr()
    assert e.value.code in (1, 2), out.err[-2000:]
    assert 'not an allowed class' in out.out + out.err
    nothing_happened(tmp_path, victim)
