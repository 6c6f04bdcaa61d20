"""Issue 12, the trainers: each fault driven through `maniflow-train` (`maniflow_nb.train.main`) with both trainers ends
cleanly — exit code, one line naming the file / key / step, nothing deleted or half-written."""
import errno, json, os, signal, subprocess, sys
from pathlib import Path
import pytest, torch, yaml
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import tiny_store, tiny_argv
from maniflow_nb.train import main
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.checkpoint import load_checkpoint, first_non_finite
from maniflow_nb.runlog import RunLock
from maniflow_nb.workspace import TrainWorkspace

TRAINERS = ['legacy', 'lightning']

@pytest.fixture(scope='module')
def store(tmp_path_factory): return tiny_store(tmp_path_factory.mktemp('data')/'s.zarr')

def argv(store, rd, trainer, *ov):
    "A tiny deterministic CPU run of the state config with the MLP policy."
    return tiny_argv(store, rd, trainer, *ov)

def refused(capsys, args, code=2) -> str:
    "Run `args`; expect exit `code` and exactly one `maniflow-train:` line, no traceback; return that line."
    with pytest.raises(SystemExit) as e: main(args)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith('maniflow-train:')]
    assert e.value.code == code and len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    return lines[0]

def ckpts(rd): return sorted(p.name for p in (Path(rd)/'checkpoints').glob('*')) if (Path(rd)/'checkpoints').exists() else []

def all_finite(rd):
    for f in (Path(rd)/'checkpoints').glob('*.ckpt'):
        ck = load_checkpoint(f); sd = ck.get('state_dict') or ck['model']
        assert first_non_finite(sd) is None and 'nan' not in f.name and 'inf' not in f.name, f

# --- 3. NaN guard -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
def test_divergent_loss_stops_naming_step(store, tmp_path, capsys, trainer):
    msg = refused(capsys, argv(store, tmp_path/'r', trainer, 'training.learning_rate=1e30'))
    assert 'training diverged: loss is' in msg and ' at step ' in msg and ', batch ' in msg, msg
    all_finite(tmp_path/'r')
    assert not [n for n in ckpts(tmp_path/'r') if n.startswith('epoch=')]      # nothing ranked best

@pytest.mark.parametrize('trainer', TRAINERS)
def test_nan_val_loss_never_ranked_best(store, tmp_path, capsys, monkeypatch, trainer):
    from maniflow_nb.lightning import PolicyModule
    monkeypatch.setattr(TrainWorkspace, 'validate', lambda self: float('nan'))
    monkeypatch.setattr(PolicyModule, 'validation_step',
                        lambda self, b, i: self.log('val_loss', torch.tensor(float('nan')), on_epoch=True, batch_size=1))
    msg = refused(capsys, argv(store, tmp_path/'r', trainer))
    assert 'training diverged: val_loss is nan at step' in msg, msg
    assert not [n for n in ckpts(tmp_path/'r') if 'val_loss' in n]

def test_grad_norm_checked_when_clipping(store, tmp_path, capsys, monkeypatch):
    "With clipping on, a non-finite gradient norm is named (the loss itself is finite here)."
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', lambda *a, **k: real(*a, **k) * float('inf'))
    msg = refused(capsys, argv(store, tmp_path/'r', 'legacy', 'training.max_grad_norm=1.0'))
    assert 'training diverged: gradient norm is inf at step 0 (epoch 0, batch 0)' in msg, msg
    assert ckpts(tmp_path/'r') == []

# --- 5. one writer per run dir --------------------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
def test_second_writer_refused(store, tmp_path, capsys, trainer):
    rd = tmp_path/'r'
    with RunLock(rd):
        msg = refused(capsys, argv(store, rd, trainer))
    assert f'run dir {rd} is in use by pid {os.getpid()} on ' in msg, msg
    assert sorted(p.name for p in rd.iterdir()) == ['run.lock']               # nothing written by the refused run

@pytest.mark.parametrize('trainer', TRAINERS)
def test_stale_lock_taken_over(store, tmp_path, capsys, trainer):
    from maniflow_nb.config import _HOST
    rd = tmp_path/'r'; rd.mkdir()
    dead = subprocess.Popen(['true']); dead.wait()
    (rd/'run.lock').write_text(json.dumps({'pid': dead.pid, 'host': _HOST, 'start': '2026-01-01 00:00:00'}))
    main(argv(store, rd, trainer, 'training.num_epochs=1'))
    err = capsys.readouterr().err
    assert [l for l in err.splitlines() if 'taking over the lock' in l] == \
           [f'note: run dir {rd}: taking over the lock of pid {dead.pid} on {_HOST} (started 2026-01-01 00:00:00), which is no longer running']
    assert RunLock(rd).holder() is None and (rd/'config.yaml').exists()      # released at the end

def test_read_only_run_dir(store, tmp_path, capsys, monkeypatch):
    def ro(path): raise PermissionError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr('maniflow_nb.runlog._open_lock', ro)
    for trainer in TRAINERS:
        msg = refused(capsys, argv(store, tmp_path/'ro', trainer))
        assert msg == f'maniflow-train: run dir {tmp_path/"ro"} is not writable (Read-only file system)', msg

# --- 6. zero work ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
@pytest.mark.parametrize('n', [0, -3])
def test_zero_epochs_refused(store, tmp_path, capsys, trainer, n):
    msg = refused(capsys, argv(store, tmp_path/'r', trainer, f'training.num_epochs={n}'))
    assert f'training.num_epochs is {n}, expected an integer >= 1' in msg
    assert not (tmp_path/'r').exists()

@pytest.mark.parametrize('trainer', TRAINERS)
def test_no_training_windows_refused(tmp_path, capsys, trainer):
    args = argv(make_synthetic_store(tmp_path/'s.zarr', n_episodes=2), tmp_path/'r', trainer, 'task.dataset.max_train_episodes=0')
    msg = refused(capsys, args)
    assert 'max_train_episodes' in msg, msg
    assert not (tmp_path/'r'/'checkpoints').exists()

@pytest.mark.parametrize('trainer', TRAINERS)
def test_one_episode_no_validation(tmp_path, capsys, trainer):
    one = make_synthetic_store(tmp_path/'one.zarr', n_episodes=1, episode_len=30)
    main(argv(one, tmp_path/'r', trainer, 'training.num_epochs=1'))
    out, err = capsys.readouterr()
    assert err.count('note: training without validation data') == 1, err
    assert 'best checkpoint' not in out and not [n for n in ckpts(tmp_path/'r') if n.startswith('epoch=')]
    assert (tmp_path/'r'/'checkpoints'/'last.ckpt').exists()

# --- 7. resume with a changed config ----------------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
def test_resume_refuses_unsafe_changes(store, tmp_path, capsys, trainer):
    rd = tmp_path/'r'
    main(argv(store, rd, trainer, 'training.num_epochs=1')); capsys.readouterr()
    before, files = (rd/'config.yaml').read_bytes(), ckpts(rd)
    msg = refused(capsys, argv(store, rd, trainer, 'training.num_epochs=2', 'training.learning_rate=1e-3', 'horizon=12', 'n_action_steps=4'))
    assert 'cannot resume' in msg and 'training.learning_rate 0.0001 -> 0.001' in msg and 'horizon 16 -> 12' in msg and 'n_action_steps 8 -> 4' in msg, msg
    assert 'num_epochs' not in msg                                          # a safe change is not listed
    assert (rd/'config.yaml').read_bytes() == before and ckpts(rd) == files  # the refused run wrote nothing
    main(argv(store, rd, trainer, 'training.num_epochs=2', 'training.val_every=2'))   # safe changes continue the run
    assert yaml.safe_load((rd/'config.yaml').read_text())['training']['num_epochs'] == 2

# --- 9. one line instead of a traceback -----------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
@pytest.mark.parametrize('ov,msg', [
    ('training.batch_size=abc', "training.batch_size is 'abc', expected an integer >= 1"),
    ('training.batch_size=0', 'training.batch_size is 0, expected an integer >= 1'),
    ('training.learning_rate=-1', 'training.learning_rate is -1, expected a number > 0'),
    ('training.gradient_accumulate_every=0', 'training.gradient_accumulate_every is 0, expected an integer >= 1'),
    ('training.num_workers=-1', 'training.num_workers is -1, expected an integer >= 0'),
    ('task.dataset.normalizer_mode=gauss', "task.dataset.normalizer_mode is 'gauss', expected one of limits, gaussian"),
])
def test_bad_values_one_line(store, tmp_path, capsys, trainer, ov, msg):
    assert msg in refused(capsys, argv(store, tmp_path/'r', trainer, ov))
    assert not (tmp_path/'r').exists()

@pytest.mark.parametrize('trainer', TRAINERS)
def test_resume_path_not_a_checkpoint(store, tmp_path, capsys, trainer):
    bad = tmp_path/'notes.txt'; bad.write_text('not a checkpoint')
    msg = refused(capsys, argv(store, tmp_path/'r', trainer, f'training.resume_checkpoint_path={bad}'))
    assert f'{bad} is not a maniflow_nb checkpoint' in msg, msg

@pytest.mark.parametrize('trainer', TRAINERS)
@pytest.mark.parametrize('err', [OSError(errno.ENOSPC, 'No space left on device'),
                                 RuntimeError('[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed')])
def test_disk_full_during_checkpoint(store, tmp_path, capsys, monkeypatch, trainer, err):
    rd = tmp_path/'r'
    main(argv(store, rd, trainer, 'training.num_epochs=1')); capsys.readouterr()
    name = 'last.ckpt'
    before = (rd/'checkpoints'/name).read_bytes()
    def full(obj, f, *a, **k): raise err
    monkeypatch.setattr(torch, 'save', full)
    msg = refused(capsys, argv(store, rd, trainer, 'training.num_epochs=2'))
    assert 'disk full writing ' in msg and str(rd/'checkpoints') in msg, msg
    assert (rd/'checkpoints'/name).read_bytes() == before                     # the last good checkpoint is intact
    assert not [p for p in (rd/'checkpoints').iterdir() if '.tmp-' in p.name]
    assert RunLock(rd).holder() is None                                       # released on the error

# --- 10. signals ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_legacy_signal_checkpoints_and_resumes_exactly(store, tmp_path, capsys, monkeypatch, sig):
    "A signal at step 5 (sent from inside the loop): last.ckpt at the exact position, one line, exit 128+sig; the resumed run matches an uninterrupted one bit for bit."
    ov = ('training.num_epochs=3', 'training.checkpoint_every=2')
    before = signal.getsignal(signal.SIGINT)             # default_int_handler, or SIG_IGN in a background job
    main(argv(store, tmp_path/'ref', 'legacy', *ov)); capsys.readouterr()
    real = TrainWorkspace.optimizer_step
    def step(self):
        real(self)
        if self.global_step == 5: os.kill(os.getpid(), sig)
    monkeypatch.setattr(TrainWorkspace, 'optimizer_step', step)
    with pytest.raises(SystemExit) as e: main(argv(store, tmp_path/'run', 'legacy', *ov))
    err = capsys.readouterr().err
    assert e.value.code == 128 + sig and 'Traceback' not in err
    loop = load_checkpoint(tmp_path/'run'/'checkpoints'/'last.ckpt')['loop']
    assert loop['global_step'] == 6 and loop['batch_idx'] > 0                     # the exact position, mid-epoch
    assert [l for l in err.splitlines() if l.startswith('stopped')] == [f'stopped by {signal.Signals(sig).name} at step 6 '
           f'(epoch {loop["epoch"]}, batch {loop["batch_idx"]}); resume from {tmp_path/"run"/"checkpoints"/"last.ckpt"}'], err
    assert signal.getsignal(signal.SIGINT) is before and RunLock(tmp_path/'run').holder() is None      # handlers restored
    monkeypatch.setattr(TrainWorkspace, 'optimizer_step', real)
    main(argv(store, tmp_path/'run', 'legacy', *ov))
    a, b = (load_checkpoint(tmp_path/d/'checkpoints'/'last.ckpt') for d in ('ref', 'run'))
    assert a['loop'] == b['loop']
    for k, v in a['model'].items(): assert torch.equal(v, b['model'][k]), k
    for k, v in a['ema']['model'].items(): assert torch.equal(v, b['ema']['model'][k]), k
    assert (tmp_path/'ref'/'metrics.csv').read_text() == (tmp_path/'run'/'metrics.csv').read_text()

# --- runner allow-list ------------------------------------------------------------------------------------------------
def test_env_runner_target_allow_list(store, tmp_path):
    from omegaconf import open_dict
    from maniflow_nb.config import compose_config, ConfigError
    from maniflow_nb.policies import make_runner, runner_class
    cfg = compose_config('maniflow_state_metaworld', [f'task.dataset_path={store}', f'run_dir={tmp_path}'])
    with open_dict(cfg): cfg.task.env_runner._target_ = 'subprocess.Popen'
    with pytest.raises(ConfigError, match="task.env_runner._target_ is 'subprocess.Popen', expected one of maniflow_nb.envs.MetaWorldRunner"):
        make_runner(cfg)
    cfg.task.env_runner._target_ = 'maniflow_nb.envs.MetaWorldRunner'
    assert runner_class(cfg).__name__ == 'MetaWorldRunner'
