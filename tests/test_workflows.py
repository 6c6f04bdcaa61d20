"""Issue 14, the trainers: each workflow driven through `maniflow-train` (`maniflow_nb.train.main`) with both trainers on a
small synthetic store — debug runs (fast_dev_run, batch limits), one checkpoint naming and resume across trainers,
fine-tuning (pretrained_dir, freeze_trunk, last_k_checkpoints), the logged loss under accumulation, top-k ranking and
multi-domain training."""
import csv, os, re, sys
from pathlib import Path
import pytest, torch
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import tiny_store, tiny_argv
from maniflow_nb.train import main
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.checkpoint import load_checkpoint, read_checkpoint
from maniflow_nb.runlog import step_loss
from maniflow_nb.mlp import MLPPolicy

TRAINERS = ['legacy', 'lightning']
OTHER = {'legacy': 'lightning', 'lightning': 'legacy'}

@pytest.fixture(scope='module')
def store(tmp_path_factory): return tiny_store(tmp_path_factory.mktemp('data')/'s.zarr')

def argv(store, rd, trainer, *ov):
    "A tiny deterministic CPU run of the state config with the MLP policy."
    return tiny_argv(store, rd, trainer, 'training.sample_every=0', *ov)

@pytest.fixture
def calls(monkeypatch):
    "Every `MLPPolicy.compute_loss` call: (training?, batch size, loss, domains of the batch)."
    out, real = [], MLPPolicy.compute_loss
    def spy(self, batch, *a, **k):
        loss, m = real(self, batch, *a, **k)
        d = batch.get('domain')
        out.append((self.training, batch['action'].shape[0], loss.item(), None if d is None else d.tolist()))
        return loss, m
    monkeypatch.setattr(MLPPolicy, 'compute_loss', spy)
    return out

def train_calls(calls): return [c for c in calls if c[0]]
def last(rd): return read_checkpoint(Path(rd)/'checkpoints'/'last.ckpt')
def names(rd, prefix=''): return sorted(p.name for p in (Path(rd)/'checkpoints').glob(prefix + '*'))
def epochs_of(files): return sorted(int(re.match(r'(?:last-)?epoch=(\d+)', f).group(1)) for f in files)

def train_rows(rd) -> list:
    "(optimizer step counted from 1, train_loss) of each step row of metrics.csv, whichever trainer wrote it."
    rows = list(csv.DictReader(open(Path(rd)/'metrics.csv')))
    return [(int(r['global_step']) if r.get('global_step') else int(r['step']) + 1, float(r['train_loss'])) for r in rows if r.get('train_loss')]

# --- 3. every trainer option works in both trainers, or is refused -------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
def test_fast_dev_run_two_batches(store, tmp_path, capsys, calls, trainer):
    "`trainer.fast_dev_run=2` with num_epochs=100: two training and two validation batches, then stop; nothing written."
    rd = tmp_path/'r'
    main(argv(store, rd, trainer, 'training.num_epochs=100', 'trainer.fast_dev_run=2', 'training.sample_every=1', 'training.batch_size=8'))
    err = capsys.readouterr().err
    assert [c[0] for c in calls] == [True, True, False, False], calls
    assert 'fast_dev_run: 2 training and validation batch(es), nothing written' in err, err[-2000:]
    assert not (rd/'checkpoints').exists() and not (rd/'metrics.csv').exists() and not (rd/'config.yaml').exists()

@pytest.mark.parametrize('trainer', TRAINERS)
def test_fast_dev_run_does_not_resume_or_touch_a_run(store, tmp_path, capsys, calls, trainer):
    rd = tmp_path/'r'
    main(argv(store, rd, trainer, 'training.num_epochs=1')); before = (rd/'checkpoints'/'last.ckpt').read_bytes()
    calls.clear()
    main(argv(store, rd, trainer, 'training.num_epochs=1', 'trainer.fast_dev_run=true'))
    assert [c[0] for c in calls] == [True, False]                                  # ran, although the run is finished
    assert (rd/'checkpoints'/'last.ckpt').read_bytes() == before

def test_limit_batches_same_in_both(store, tmp_path, calls):
    "`trainer.limit_train_batches` (int, or a fraction) and `limit_val_batches` cap both trainers alike."
    for lim, val in (('2', '1'), ('0.5', '1.0')):
        got = {}
        for trainer in TRAINERS:
            calls.clear(); rd = tmp_path/f'{trainer}{lim}'
            main(argv(store, rd, trainer, f'trainer.limit_train_batches={lim}', f'trainer.limit_val_batches={val}'))
            got[trainer] = (len(train_calls(calls)), len(calls) - len(train_calls(calls)), last(rd)['loop']['global_step'])
        assert got['legacy'] == got['lightning'], got
        if lim == '2': assert got['legacy'] == (4, 2, 4)                             # 2 epochs x (2 train, 1 val)

def test_limit_fraction_of_zero_batches_refused(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(argv(store, tmp_path/'r', 'legacy', 'trainer.limit_train_batches=0.01'))
    assert e.value.code == 2 and 'trainer.limit_train_batches=0.01 of' in capsys.readouterr().err

@pytest.mark.parametrize('ov', ['trainer.devices=2', 'trainer.num_nodes=2', 'trainer.strategy=ddp'])
def test_legacy_refuses_what_it_cannot_run(store, tmp_path, ov):
    "The legacy loop's own check (maniflow-train's launch layer sets these keys and refuses a distributed legacy launch itself)."
    from maniflow_nb.config import compose_config, ConfigError
    from maniflow_nb.workspace import TrainWorkspace
    cfg = compose_config('maniflow_state_metaworld', argv(store, tmp_path/'r', 'legacy', ov)[2:])
    with pytest.raises(ConfigError, match=re.escape(ov.split('=')[0]) + '.*the legacy loop runs on one device'): TrainWorkspace(cfg)

def test_log_every_n_steps_same_rows(store, tmp_path):
    for trainer in TRAINERS: main(argv(store, tmp_path/trainer, trainer, 'trainer.log_every_n_steps=3', 'training.batch_size=8'))
    a, b = train_rows(tmp_path/'legacy'), train_rows(tmp_path/'lightning')
    assert [s for s, _ in a] == [s for s, _ in b] and a and all(s % 3 == 0 for s, _ in a), (a, b)

# --- 4. one checkpoint name; resume across trainers ------------------------------------------------------------------
@pytest.mark.parametrize('first', TRAINERS)
def test_resume_across_trainers(store, tmp_path, capsys, calls, first):
    "One epoch with one trainer, then the other continues the run at the right step: it trains one epoch, not two, ends"
    " with the weights of a straight two-epoch run, and the run dir holds one last.ckpt and one top-k file (k=1)."
    second, rd, ov = OTHER[first], tmp_path/'run', ('checkpoint.topk.k=1', 'training.lr_scheduler=constant')   # LR not sized by num_epochs
    main(argv(store, tmp_path/'straight', second, *ov)); straight = last(tmp_path/'straight')
    main(argv(store, rd, first, 'training.num_epochs=1', *ov))
    steps = last(rd)['loop']['global_step']; calls.clear()
    main(argv(store, rd, second, *ov))
    assert len(train_calls(calls)) == steps                                        # one more epoch, not a restart at 0
    ck = last(rd)
    assert ck['loop']['global_step'] == 2 * steps == straight['loop']['global_step'] and ck['ema']['step'] == 2 * steps
    for k, v in straight['model'].items(): assert torch.equal(v, ck['model'][k]), k
    files = names(rd)
    assert len([f for f in files if f.startswith('epoch=')]) == 1 and 'last.ckpt' in files and 'from_legacy.ckpt' not in files, files
    assert [f for f in files if f.startswith('epoch=')] == [f for f in names(tmp_path/'straight') if f.startswith('epoch=')]

def test_lightning_resumes_an_older_legacy_latest_ckpt(store, tmp_path, calls):
    "A legacy run dir from before the one naming (only checkpoints/latest.ckpt) is continued by either trainer."
    for trainer in TRAINERS:
        rd = tmp_path/trainer
        main(argv(store, rd, 'legacy', 'training.num_epochs=1'))
        ck = rd/'checkpoints'; (ck/'latest.ckpt').unlink(); (ck/'last.ckpt').rename(ck/'latest.ckpt')
        steps = read_checkpoint(ck/'latest.ckpt')['loop']['global_step']; calls.clear()
        main(argv(store, rd, trainer))
        assert len(train_calls(calls)) == steps and last(rd)['loop']['global_step'] == 2 * steps, trainer

def test_legacy_writes_last_ckpt_with_old_name_link(store, tmp_path):
    main(argv(store, tmp_path/'r', 'legacy', 'training.num_epochs=1'))
    ck = tmp_path/'r'/'checkpoints'
    assert (ck/'last.ckpt').is_file() and os.readlink(ck/'latest.ckpt') == 'last.ckpt'

# --- 5. pretrained_dir, freeze_trunk, last_k_checkpoints --------------------------------------------------------------
@pytest.fixture(scope='module')
def pretrained(store, tmp_path_factory):
    rd = tmp_path_factory.mktemp('pre')/'run'
    main(argv(store, rd, 'legacy', 'training.num_epochs=1'))
    return rd

@pytest.mark.parametrize('trainer', TRAINERS)
def test_pretrained_frozen_trunk(store, pretrained, tmp_path, capsys, trainer):
    "A new run from a run dir's weights with the trunk frozen: the trunk (all but the MLP's last Linear) keeps the"
    " pretrained weights bit for bit, the head trains, and the run starts at step 0."
    pre = last(pretrained)
    main(argv(store, tmp_path/'ft', trainer, f'training.pretrained_dir={pretrained}', 'training.freeze_trunk=true', 'training.num_epochs=1'))
    assert f'starting from the weights of {pretrained}/checkpoints/last.ckpt' in capsys.readouterr().err
    ck = last(tmp_path/'ft')
    assert ck['loop']['global_step'] == pre['loop']['global_step']                  # one epoch from step 0
    trunk = [k for k in pre['model'] if k.startswith('net.0.')]
    head = [k for k in pre['model'] if k.startswith('net.3.')]
    assert trunk and head
    for k in trunk: assert torch.equal(ck['model'][k], pre['model'][k]) and torch.equal(ck['ema']['model'][k], pre['model'][k]), k
    for k in head: assert not torch.equal(ck['model'][k], pre['model'][k]), k

@pytest.mark.parametrize('trainer', TRAINERS)
def test_pretrained_file_without_freeze(store, pretrained, tmp_path, trainer):
    "A checkpoint file works too. One optimizer step at LR 0 (warm-up step 0) leaves the loaded weights as they are:"
    " the run's weights are the pretrained ones, every layer, and so is the EMA copy after its first (decay 0) step."
    f = pretrained/'checkpoints'/'last.ckpt'
    main(argv(store, tmp_path/'a', trainer, f'training.pretrained_dir={f}', 'training.num_epochs=1', 'trainer.limit_train_batches=1',
              'training.lr_warmup_steps=1000'))
    pre, ck = last(pretrained), last(tmp_path/'a')
    assert ck['loop']['global_step'] == 1
    for k, v in pre['model'].items(): assert torch.equal(ck['model'][k], v) and torch.equal(ck['ema']['model'][k], v), k

@pytest.mark.parametrize('trainer', TRAINERS)
def test_pretrained_shape_mismatch_refused(store, pretrained, tmp_path, capsys, trainer):
    with pytest.raises(SystemExit) as e:
        main(argv(store, tmp_path/'r', trainer, f'training.pretrained_dir={pretrained}', 'policy.hidden=64'))
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'do not fit this policy: shape (checkpoint vs policy): net.0.weight' in err, err[-2000:]
    assert not (tmp_path/'r'/'checkpoints').exists()

@pytest.mark.parametrize('trainer', TRAINERS)
def test_freeze_trunk_needs_pretrained(store, tmp_path, capsys, trainer):
    with pytest.raises(SystemExit) as e: main(argv(store, tmp_path/'r', trainer, 'training.freeze_trunk=true'))
    assert e.value.code == 2 and 'training.freeze_trunk is true without training.pretrained_dir' in capsys.readouterr().err

def test_last_k_checkpoints_same_in_both(store, tmp_path):
    "`last_k_checkpoints=2` with `checkpoint_every=2` over 6 epochs: last-epoch=0003 and 0005 kept (0001 removed), besides the top-k."
    for trainer in TRAINERS:
        rd = tmp_path/trainer
        main(argv(store, rd, trainer, 'training.num_epochs=6', 'training.checkpoint_every=2', 'training.last_k_checkpoints=2'))
        assert names(rd, 'last-epoch=') == ['last-epoch=0003.ckpt', 'last-epoch=0005.ckpt'], (trainer, names(rd))
        assert read_checkpoint(rd/'checkpoints'/'last-epoch=0003.ckpt')['loop']['epoch'] == 4
        assert names(rd, 'epoch=') and 'last.ckpt' in names(rd)

# --- 9. the logged training loss under gradient accumulation -------------------------------------------------------------
def test_accumulation_logs_group_mean_in_both(store, tmp_path, calls):
    "With gradient_accumulate_every=2 both trainers log, per optimizer step, the mean of its micro-batch losses: the"
    " train_loss columns are identical (the last partial group of an epoch included)."
    logged, micro = {}, {}
    for trainer in TRAINERS:
        calls.clear()
        main(argv(store, tmp_path/trainer, trainer, 'training.batch_size=8', 'training.gradient_accumulate_every=2'))
        logged[trainer], micro[trainer] = train_rows(tmp_path/trainer), [c[2] for c in train_calls(calls)]
    assert logged['legacy'] == logged['lightning'] and micro['legacy'] == micro['lightning']
    n = len(micro['legacy']) // 2                                                    # batches per epoch
    groups = [g for e in range(2) for g in (lambda m: [m[i:i + 2] for i in range(0, len(m), 2)])(micro['legacy'][e * n:(e + 1) * n])]
    assert n % 2 == 1 and [l for _, l in logged['legacy']] == [step_loss(g) for g in groups]   # odd: a partial group per epoch

# --- 11. top-k ranked on every validated epoch ----------------------------------------------------------------------------
def test_same_best_epoch_with_checkpoint_every_2(store, tmp_path, capsys):
    "checkpoint_every=2: both trainers rank every validated epoch (k=-1 keeps all) and name the same best epoch."
    ranked, best = {}, {}
    for trainer in TRAINERS:
        rd = tmp_path/trainer
        main(argv(store, rd, trainer, 'training.num_epochs=5', 'training.checkpoint_every=2', 'checkpoint.topk.k=-1',
                  'training.learning_rate=3e-3'))
        out = capsys.readouterr().out
        ranked[trainer] = epochs_of(names(rd, 'epoch='))
        best[trainer] = int(re.search(r'best checkpoint: .*epoch=(\d+)-val_loss', out).group(1))
    assert ranked['legacy'] == ranked['lightning'] == [0, 1, 2, 3, 4], ranked
    assert best['legacy'] == best['lightning'], best

# --- 1. several stores from the command line ------------------------------------------------------------------------------
@pytest.mark.parametrize('trainer', TRAINERS)
@pytest.mark.parametrize('form', ['comma', 'domains'])
def test_two_stores_both_domains(store, tmp_path, calls, trainer, form):
    "Two stores on the command line: both trainers train on windows of both (batches carry `domain`)."
    other = make_synthetic_store(tmp_path/'b.zarr', n_episodes=4, episode_len=20, seed=1)
    ov = f"task.dataset_path='{store},{other}'" if form == 'comma' else f'+task.dataset.domains=[{store},{other}]'
    main(argv(store, tmp_path/'r', trainer, ov, 'training.num_epochs=1'))
    seen = [d for c in train_calls(calls) for d in c[3]]
    assert set(seen) == {0, 1} and any(len(set(c[3])) == 2 for c in train_calls(calls)), seen
    assert read_checkpoint(tmp_path/'r'/'checkpoints'/'last.ckpt')['config']['task']['dataset_path'] == f'{store},{other}' or form == 'domains'
