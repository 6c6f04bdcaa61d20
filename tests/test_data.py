"""maniflow_nb.data / normalizer / dataset beyond the notebooks: DP3-layout v2 stores, every bad-store error, atomic
appends under crashes (exception and hard kill), the DataModule with worker processes, multi-domain proportions, and
every `task.dataset` key read by `make_datasets` (the one data factory of both trainers)."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pytest, torch, zarr, numcodecs
from torch.utils.data import DataLoader
import maniflow_nb.data as D
import maniflow_nb.dataset as DS
from maniflow_nb.data import DataError, ReplayBuffer, append_episodes, make_synthetic_store
from maniflow_nb.normalizer import LinearNormalizer
from maniflow_nb.dataset import (SequenceDataset, MultiDomainDataset, ManiFlowDataModule, EpochSampler, check_batch,
                                 collate_batch, make_datasets)
from maniflow_nb.config import UserError, ConfigError, compose_config

ROOT = Path(__file__).resolve().parents[1]
T16 = ['horizon=16', 'n_obs_steps=2', 'n_action_steps=8']    # the window these tests count in (not the task's default)
PC_META = {'obs': {'point_cloud': {'shape': [512, 3], 'type': 'point_cloud', 'store_key': 'point_cloud'},
                   'agent_pos': {'shape': [9], 'type': 'low_dim', 'store_key': 'state'}},
           'action': {'shape': [4]}}

def dp3_store(path, n_eps=3, L=12):
    "A v2 store written directly with zarr's v2 format the way DP3's ReplayBuffer writes MetaWorld demos."
    rng = np.random.default_rng(0); N = n_eps * L
    arrays = {'point_cloud': rng.normal(size=(N, 1024, 6)).astype('f4'), 'state': rng.normal(size=(N, 9)).astype('f4'),
              'full_state': rng.normal(size=(N, 39)).astype('f4'), 'action': rng.uniform(-1, 1, (N, 4)).astype('f4'),
              'img': rng.integers(0, 256, (N, 84, 84, 3), dtype=np.uint8), 'depth': rng.uniform(0, 2, (N, 84, 84)).astype('f4')}
    g = zarr.open_group(str(path), mode='w', zarr_format=2)
    comp = numcodecs.Blosc(cname='zstd', clevel=3, shuffle=1)
    for k, a in arrays.items(): g.require_group('data').create_array(k, data=a, chunks=(100, *a.shape[1:]), compressors=comp)
    g.require_group('meta').create_array('episode_ends', data=np.arange(1, n_eps + 1, dtype=np.int64) * L, compressors=comp)
    return path, arrays

def test_dp3_v2_round_trip(tmp_path):
    p, arrays = dp3_store(tmp_path / 'dp3.zarr')
    assert (p / 'data' / 'point_cloud' / '.zarray').exists() and not (p / 'zarr.json').exists()
    rb = ReplayBuffer.from_path(p)
    assert rb.n_episodes == 3 and rb.n_steps == 36 and rb.episode_ends.dtype == np.int64
    for k, a in arrays.items(): np.testing.assert_array_equal(rb[k], a); assert rb[k].dtype == a.dtype
    rb.save(tmp_path / 'v3.zarr')
    meta = json.loads((tmp_path / 'v3.zarr' / 'data' / 'point_cloud' / 'zarr.json').read_text())
    assert meta['zarr_format'] == 3 and any(c['name'] == 'zstd' for c in meta['codecs'])
    assert 16 <= meta['chunk_grid']['configuration']['chunk_shape'][0] <= 1024
    rb3 = ReplayBuffer.from_path(tmp_path / 'v3.zarr')
    for k in arrays: np.testing.assert_array_equal(rb3[k], rb[k])
    np.testing.assert_array_equal(rb3.episode_ends, rb.episode_ends)
    ds = SequenceDataset(p, PC_META | {'obs': {**PC_META['obs'], 'point_cloud': {'shape': [1024, 6], 'type': 'point_cloud'}}}, 8, 2, 4)
    b = ds.__getitems__(np.arange(4))
    assert b['obs']['point_cloud'].shape == (4, 2, 1024, 6) and b['action'].shape == (4, 8, 4)

def test_zip_store(tmp_path):
    import shutil
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=2, episode_len=5, n_points=8, zarr_format=2)
    z = shutil.make_archive(str(tmp_path / 's.zarr'), 'zip', p)      # diffusion_policy's .zarr.zip layout
    np.testing.assert_array_equal(ReplayBuffer.from_path(z)['action'], ReplayBuffer.from_path(p)['action'])
    (tmp_path / 'junk.zip').write_bytes(b'not a zip')
    with pytest.raises(DataError, match='junk.zip: not a readable Zarr store'): ReplayBuffer.from_path(tmp_path / 'junk.zip')

def _bad(tmp_path, key, value, fmt=3):
    p = make_synthetic_store(tmp_path / 'bad.zarr', n_episodes=2, episode_len=5, n_points=8, zarr_format=fmt)
    D._rewrite(p, key, value); return p

nan_action = np.zeros((10, 4), 'f4'); nan_action[7, 2] = np.inf
@pytest.mark.parametrize('key,value,msg', [
    ('meta/episode_ends', None, "no array 'meta/episode_ends'"),
    ('data', None, "no group 'data/'"),
    ('meta/episode_ends', [6, 4], 'meta/episode_ends is not strictly increasing at episode 1'),
    ('meta/episode_ends', [[5, 10]], 'meta/episode_ends has shape (1, 2)'),
    ('meta/episode_ends', [5.0, 10.0], 'expected a 1-D integer array'),
    ('meta/episode_ends', [5, 12], 'data/action has shape (10, 4), expected 12 steps'),
    ('meta/episode_ends', np.zeros(0, np.int64), 'meta/episode_ends is empty'),
    ('data/state', np.zeros((9, 9), 'f4'), 'data/state has shape (9, 9), expected 10 steps'),
    ('data/action', nan_action, 'data/action has NaN/inf at step 7'),
])
@pytest.mark.parametrize('fmt', [2, 3])
def test_bad_store_errors(tmp_path, key, value, msg, fmt):
    p = _bad(tmp_path, key, value, fmt)
    with pytest.raises(DataError) as e: ReplayBuffer.from_path(p)
    assert msg in str(e.value) and 'bad.zarr' in str(e.value)

@pytest.mark.parametrize('meta,msg', [
    ({'action': {'shape': [7]}}, "data/action has shape (10, 4) and dtype float32, expected (N, 7) float from shape_meta['action']"),
    ({'obs': {'agent_pos': {'shape': [39], 'type': 'low_dim', 'store_key': 'state'}}}, "data/state has shape (10, 9) and dtype float32, expected (N, 39) float"),
    ({'obs': {'point_cloud': {'shape': [512, 3], 'type': 'point_cloud', 'store_key': 'point_cloud'}}}, 'data/point_cloud has shape (10, 8, 3)'),
    ({'obs': {'image': {'shape': [3, 84, 84], 'type': 'rgb', 'store_key': 'state'}}}, 'expected (N, 84, 84, 3) uint8'),
    ({'obs': {'x': {'shape': [9], 'type': 'lowdim', 'store_key': 'state'}}}, "type 'lowdim', expected one of"),
    ({'obs': {'x': {'shape': [9], 'store_key': 'missing'}}}, 'no array data/missing'),
])
def test_shape_meta_errors(tmp_path, meta, msg):
    p = make_synthetic_store(tmp_path / 'bad.zarr', n_episodes=2, episode_len=5, n_points=8)
    meta8 = PC_META | {'obs': {**PC_META['obs'], 'point_cloud': {'shape': [8, 3], 'type': 'point_cloud'}}}
    with pytest.raises(DataError) as e: SequenceDataset(p, meta8 | meta, 4, 2, 2)
    assert msg in str(e.value)
    assert 'bad.zarr' in str(e.value) or "type 'lowdim'" in msg     # a bad type is a config error, not the store's

def test_wrong_dtype_and_not_a_store(tmp_path):
    p = _bad(tmp_path, 'data/action', np.zeros((10, 4), np.int32))
    with pytest.raises(DataError, match="bad.zarr: data/action has shape .10, 4. and dtype int32, expected .N, 4. float"):
        SequenceDataset(p, {'obs': {'agent_pos': PC_META['obs']['agent_pos']}, 'action': {'shape': [4]}}, 4, 2, 2)
    (tmp_path / 'plain').mkdir()
    with pytest.raises(DataError, match='plain: not a Zarr store'): ReplayBuffer.from_path(tmp_path / 'plain')
    with pytest.raises(DataError, match='nowhere.zarr: not a Zarr store'): SequenceDataset(tmp_path / 'nowhere.zarr', PC_META, 4, 2, 2)

def test_append_exception_mid_write_keeps_store(tmp_path, monkeypatch):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=2, episode_len=6, n_points=8)
    before = ReplayBuffer.from_path(p)
    eps = [before.get_episode(1)]
    def half(g, new, ends):   # writes one array of the copy, then dies
        k = new.keys()[0]; g['data'][k].append(new[k]); raise OSError('disk full')
    monkeypatch.setattr(D, '_append_arrays', half)
    with pytest.raises(OSError, match='disk full'): append_episodes(p, eps)
    after = ReplayBuffer.from_path(p)
    np.testing.assert_array_equal(after.episode_ends, before.episode_ends)
    for k in before.keys(): np.testing.assert_array_equal(after[k], before[k])
    assert sorted(os.listdir(tmp_path)) == ['s.zarr']

def test_append_hard_kill_keeps_store(tmp_path):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=2, episode_len=6, n_points=8, zarr_format=2)
    before = ReplayBuffer.from_path(p)
    code = textwrap.dedent(f"""
        import os, maniflow_nb.data as D
        orig = D._append_arrays
        def die(*a): orig(*a); os._exit(9)         # killed after every array of the copy was written
        D._append_arrays = die
        rb = D.ReplayBuffer.from_path({str(p)!r})
        D.append_episodes({str(p)!r}, [rb.get_episode(0)] * 3)
    """)
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=os.environ | {'PYTHONPATH': str(ROOT)}, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    after = ReplayBuffer.from_path(p)                      # the leftover temp copy is a hidden sibling, ignored
    np.testing.assert_array_equal(after.episode_ends, before.episode_ends)
    np.testing.assert_array_equal(after['point_cloud'], before['point_cloud'])
    new = append_episodes(p, [before.get_episode(0)])     # and the store still takes appends
    assert new.n_episodes == 1 and list(ReplayBuffer.from_path(p).episode_ends) == [6, 12, 18]

def test_datamodule_workers(tmp_path):
    p = make_synthetic_store(tmp_path / 'mw.zarr', n_episodes=6, episode_len=30)
    cfg = compose_config('maniflow_pointcloud_metaworld', [f'task.dataset_path={p}', *T16, 'training.batch_size=8', 'training.num_workers=2'])
    dm = ManiFlowDataModule.from_config(cfg)
    batches = [b for _, b in zip(range(3), dm.train_dataloader())]
    for b in batches:
        check_batch(b, cfg.task.shape_meta, cfg.horizon, cfg.n_obs_steps)
        assert b['obs']['point_cloud'].shape == (8, 2, 512, 3) and b['obs']['agent_pos'].shape == (8, 2, 9)
        assert b['action'].shape == (8, 16, 4)
    cfg0 = compose_config('maniflow_pointcloud_metaworld', [f'task.dataset_path={p}', *T16, 'training.batch_size=8'])
    b0 = next(iter(ManiFlowDataModule.from_config(cfg0).train_dataloader()))
    torch.testing.assert_close(b0['action'], batches[0]['action'])      # same seeded order with or without workers
    v = next(iter(dm.val_dataloader())); check_batch(v, cfg.task.shape_meta, 16, 2)
    n = LinearNormalizer(); n.load_state_dict(dm.normalizer.state_dict())
    torch.testing.assert_close(n.normalize(v)['action'], dm.normalizer.normalize(v)['action'])

def test_normalizer_file_weights_only(tmp_path):
    x = {'action': torch.randn(100, 4) * 3, 'point_cloud': torch.randn(50, 64, 6)}
    n = LinearNormalizer().fit(x, mode='gaussian')
    torch.save(n.state_dict(), tmp_path / 'n.pt')
    m = LinearNormalizer(); m.load_state_dict(torch.load(tmp_path / 'n.pt', weights_only=True))
    torch.testing.assert_close(m.unnormalize(m.normalize(x)), x)
    assert m['point_cloud'].scale.shape == (6,)

@pytest.mark.parametrize('sampling,expect', [('proportional', [1 / 4, 3 / 4]), ('uniform', [1 / 2, 1 / 2])])
def test_multi_domain_proportions(tmp_path, sampling, expect):
    a = make_synthetic_store(tmp_path / 'a.zarr', n_episodes=2, episode_len=23, n_points=16, seed=1)  # 2 x 20 windows
    b = make_synthetic_store(tmp_path / 'b.zarr', n_episodes=6, episode_len=23, n_points=16, seed=2)  # 6 x 20 windows
    meta = PC_META | {'obs': {**PC_META['obs'], 'point_cloud': {'shape': [16, 3], 'type': 'point_cloud'}}}
    md = MultiDomainDataset(f'{a},{b}', meta, 4, 1, 1, sampling=sampling, val_ratio=0)
    dl = DataLoader(md, batch_size=64, shuffle=True, collate_fn=collate_batch, generator=torch.Generator().manual_seed(0))
    doms = torch.cat([bt['domain'] for _, bt in zip(range(40), dl)])
    frac = torch.bincount(doms, minlength=2).float() / len(doms)
    torch.testing.assert_close(frac, torch.tensor(expect), atol=0.04, rtol=0)
    bt = md.__getitems__([0, 45, 130])
    assert bt['domain'].tolist() == ([0, 1, 1] if sampling == 'proportional' else [0, 1, 0])
    check_batch(bt, meta, 4, 1)

def test_multi_domain_shape_mismatch(tmp_path):
    a = make_synthetic_store(tmp_path / 'a.zarr', n_episodes=2, episode_len=8, n_points=16)
    c = make_synthetic_store(tmp_path / 'c.zarr', n_episodes=2, episode_len=8, n_points=16, action_dim=7)
    meta = PC_META | {'obs': {'agent_pos': PC_META['obs']['agent_pos']}}
    with pytest.raises(DataError, match=r"c.zarr: data/action has shape \(16, 7\)"): MultiDomainDataset([a, c], meta, 4, 2, 2)

@pytest.mark.slow
def test_bench_runs():
    r = subprocess.run([sys.executable, 'bench/sampler.py', '--seconds', '0.2', '--no-record'], cwd=ROOT,
                       env=os.environ | {'OMP_NUM_THREADS': '1'}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and 'windows/s' in r.stdout, r.stderr

# ---------------------------------------------------------------- make_datasets: every task.dataset key changes the data

def _cfg(path, *overrides, config='maniflow_pointcloud_metaworld'):
    return compose_config(config, [f"task.dataset_path='{path}'", *T16, 'training.batch_size=16', *overrides])

def _epoch(train, batch_size=16, seed=0):
    "Every batch of one epoch, loaded the way both trainers load (sampler over indices, batched `__getitems__`)."
    dl = DataLoader(train, batch_size=batch_size, sampler=EpochSampler(len(train), seed), collate_fn=collate_batch)
    return list(dl)

@pytest.fixture
def two_stores(tmp_path):
    a = make_synthetic_store(tmp_path / 'a.zarr', n_episodes=2, episode_len=20, seed=1)   # 2 x 13 windows (T=16, To=2, Ta=8); 1 held out
    b = make_synthetic_store(tmp_path / 'b.zarr', n_episodes=4, episode_len=40, seed=2)   # 4 x 33 windows
    return a, b

def test_single_store_default_unchanged(tmp_path):
    "One store with the packaged defaults: exactly the SequenceDataset the trainers built before."
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=6, episode_len=25)
    cfg = _cfg(p)
    train, val = make_datasets(cfg)
    ref = SequenceDataset(p, cfg.task.shape_meta, 16, 2, 8, val_ratio=cfg.task.dataset.val_ratio, max_train_episodes=None, seed=42)
    assert type(train) is SequenceDataset and 'domain' not in train[0]
    np.testing.assert_array_equal(train.sampler.table, ref.sampler.table)
    np.testing.assert_array_equal(val.sampler.table, ref.get_validation_dataset().sampler.table)
    torch.testing.assert_close(train.__getitems__([0, 5, 9]), ref.__getitems__([0, 5, 9]), rtol=0, atol=0)
    assert train.get_normalizer().state_dict().keys() == ref.get_normalizer().state_dict().keys()
    for k, v in train.get_normalizer().state_dict().items(): assert torch.equal(v, ref.get_normalizer().state_dict()[k])

def test_two_stores_batches_hold_both(two_stores):
    a, b = two_stores
    train, val = make_datasets(_cfg(f'{a},{b}'))
    assert type(train) is MultiDomainDataset and train.counts().tolist() == [13, 99] and val.counts().tolist() == [13, 33]
    batches = _epoch(train)
    doms = torch.cat([bt['domain'] for bt in batches])
    assert sorted(doms.unique().tolist()) == [0, 1] and len(doms) == len(train)
    bt = batches[0]; check_batch(bt, train.shape_meta, 16, 2)
    assert set(bt['domain'].tolist()) == {0, 1}                                  # one shuffled batch mixes the stores
    d, local = train.locate(list(EpochSampler(len(train), 0))[:16])
    for i in range(16):                                                           # each window is its store's window
        torch.testing.assert_close(bt['action'][i], train.parts[d[i]][local[i]]['action'], rtol=0, atol=0)

def test_domains_list_equals_comma_path(two_stores):
    a, b = two_stores
    t1, _ = make_datasets(_cfg(f'{a},{b}'))
    t2, _ = make_datasets(_cfg('ignored.zarr', f"task.dataset.domains=['{a}','{b}']"))
    t3, _ = make_datasets(_cfg(a, f"task.dataset_path=['{a}','{b}']"))
    assert t1.paths == t2.paths == t3.paths == [str(a), str(b)]
    torch.testing.assert_close(t1.__getitems__([0, 50]), t2.__getitems__([0, 50]), rtol=0, atol=0)

@pytest.mark.parametrize('sampling,expect', [('proportional', [13, 99]), ('uniform', [99, 99])])
def test_sampling_changes_domain_frequencies(two_stores, sampling, expect):
    a, b = two_stores
    train, _ = make_datasets(_cfg(f'{a},{b}', f'task.dataset.sampling={sampling}'))
    doms = torch.cat([bt['domain'] for bt in _epoch(train, batch_size=64)])
    assert torch.bincount(doms).tolist() == expect
    dm = ManiFlowDataModule(_cfg(f'{a},{b}', f'task.dataset.sampling={sampling}'), batch_size=64)
    assert torch.bincount(torch.cat([bt['domain'] for bt in dm.train_dataloader()])).tolist() == expect

def test_normalizer_mode_changes_normalizer(tmp_path, two_stores):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=4, episode_len=25)
    lim, gau = (make_datasets(_cfg(p, f'task.dataset.normalizer_mode={m}'))[0].get_normalizer() for m in ('limits', 'gaussian'))
    act = torch.from_numpy(ReplayBuffer.from_path(p)['action'])
    assert not torch.allclose(lim['action'].scale, gau['action'].scale)
    torch.testing.assert_close(lim['action'].normalize(act).amax(0), torch.ones(4))
    torch.testing.assert_close(gau['action'].normalize(act).mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    md, _ = make_datasets(_cfg(','.join(map(str, two_stores)), 'task.dataset.normalizer_mode=gaussian'))
    assert md.normalizer_mode == 'gaussian' and md.get_validation_dataset().get_normalizer()['action'].mean.abs().max() < 1
    with pytest.raises(ConfigError, match="task.dataset.normalizer_mode is 'minmax'"): make_datasets(_cfg(p, 'task.dataset.normalizer_mode=minmax'))

def test_max_train_episodes_and_val_ratio(tmp_path):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=10, episode_len=25)     # 10 x 18 windows
    train, val = make_datasets(_cfg(p))
    assert (len(train), len(val)) == (9 * 18, 1 * 18)
    small, val2 = make_datasets(_cfg(p, 'task.dataset.max_train_episodes=3'))
    assert (len(small), len(val2)) == (3 * 18, 7 * 18) and not (small.train_mask & small.val_mask).any()
    assert (small.holdout_mask == ~small.train_mask).all()                             # diffusion_policy: ~train_mask validates
    t4, v4 = make_datasets(_cfg(p, 'task.dataset.val_ratio=0.4'))
    assert (len(t4), len(v4)) == (6 * 18, 4 * 18)
    assert len(_epoch(small)) == -(-3 * 18 // 16)                                      # the trainer's epoch shrinks with it
    seeds = {tuple(np.flatnonzero(make_datasets(_cfg(p, f'task.dataset.seed={s}'))[0].val_mask)) for s in range(4)}
    assert len(seeds) > 1                                                               # the seed picks the split

def test_datamodule_uses_make_datasets(tmp_path, monkeypatch):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=20)
    calls = []
    def spy(cfg): calls.append(cfg); return make_datasets(cfg)
    monkeypatch.setattr(DS, 'make_datasets', spy)
    dm = ManiFlowDataModule(_cfg(p, 'task.dataset.normalizer_mode=gaussian'))
    dm.setup(); dm.setup()
    assert len(calls) == 1 and dm.normalizer['action'].mean.shape == (4,)
    torch.testing.assert_close(dm.normalizer['action'].scale, dm.train_set.get_normalizer('gaussian')['action'].scale)

def test_bad_dataset_keys_are_user_errors(tmp_path):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=2, episode_len=20)
    with pytest.raises(ConfigError, match="task.dataset.sampling is 'even'"): make_datasets(_cfg(p, 'task.dataset.sampling=even'))
    with pytest.raises(UserError, match='horizon=16, n_obs_steps=2, n_action_steps=16'): make_datasets(_cfg(p, 'n_action_steps=16'))
    assert issubclass(DataError, UserError)

# ---------------------------------------------------------------- issue 12: no silent wrong data, no zero work (through make_datasets)
import warnings

def test_nan_in_any_key_is_named(tmp_path):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=20)
    st = ReplayBuffer.from_path(p)['state'].copy(); st[33, 4] = np.inf
    D._rewrite(p, 'data/state', st)
    with pytest.raises(DataError, match=r"s.zarr: data/state has NaN/inf at step 33 \(index \[33, 4\]"): make_datasets(_cfg(p))

def test_normalizer_outlier_is_named(tmp_path):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=20)
    st = ReplayBuffer.from_path(p)['state'].copy(); st[5, 2] = 3e38
    D._rewrite(p, 'data/state', st)
    train, _ = make_datasets(_cfg(p))
    with pytest.raises(DataError, match=r"s.zarr: normalizer of 'agent_pos' channel 2: fitted scale .* subnormal"): train.get_normalizer()
    st[5, 2] = 1e7; D._rewrite(p, 'data/state', st)
    with pytest.warns(UserWarning, match="normalizer of 'agent_pos' channel 2: 93.3% of the values"):
        make_datasets(_cfg(p))[0].get_normalizer()

@pytest.mark.parametrize('fmt', [2, 3])
def test_missing_chunk_through_make_datasets(tmp_path, fmt):
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=20, zarr_format=fmt)
    f = D._corrupt(p, 'data/point_cloud', 'missing')
    with pytest.raises(DataError, match=f"missing chunk file {f}"): make_datasets(_cfg(p))

def test_unmarked_v3_store_missing_chunk_warns(tmp_path):
    "A v3 store written with zarr's defaults (no `all_chunks_written`) may omit chunks of zeros: a warning, data read as zeros."
    g = zarr.open_group(str(tmp_path / 'z.zarr'), mode='w', zarr_format=3)
    g.create_array('data/action', data=np.zeros((10, 4), 'f4'), chunks=(5, 4))
    g.create_array('meta/episode_ends', data=np.array([5, 10]))
    with pytest.warns(UserWarning, match='missing chunk file .*data/action/c/0/0 .*read as zeros'): rb = ReplayBuffer.from_path(tmp_path / 'z.zarr')
    assert (rb['action'] == 0).all()

def test_zero_work_is_an_error(tmp_path):
    short = make_synthetic_store(tmp_path / 'short.zarr', n_episodes=3, episode_len=6)      # a window needs >= 8 steps
    with pytest.raises(DataError, match='short.zarr: no training windows: its 2 training episode.s. have 6..6 steps.*needs >= 8'):
        make_datasets(_cfg(short))
    p = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=20)
    with pytest.raises(ConfigError, match='task.dataset.max_train_episodes is 0'): make_datasets(_cfg(p, 'task.dataset.max_train_episodes=0'))
    with pytest.raises(ConfigError, match='task.dataset.val_ratio is -0.5'): make_datasets(_cfg(p, 'task.dataset.val_ratio=-0.5'))
    with pytest.warns(UserWarning, match='short.zarr: no training windows.*this store is skipped'):
        train, _ = make_datasets(_cfg(f'{short},{p}'))
    assert train.counts().tolist() == [0, 26]

def test_one_episode_says_no_validation(tmp_path):
    p = make_synthetic_store(tmp_path / 'one.zarr', n_episodes=1, episode_len=20)
    with pytest.warns(UserWarning, match=r'one.zarr: no validation set \(task.dataset.val_ratio=0.02\): the store has 1 episode'):
        train, val = make_datasets(_cfg(p))
    assert (len(train), len(val)) == (13, 0)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); make_datasets(_cfg(p, 'task.dataset.val_ratio=0'))   # asked for none: silent
