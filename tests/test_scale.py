"""Storage modes (issue 17): memory / shared / stream give the same windows; shared keeps one copy per node and
cleans up after itself; `auto` chooses by size; the fast FPS keeps coverage."""
import os, sys, signal, subprocess, textwrap, time
from pathlib import Path
import numpy as np, pytest, torch
from maniflow_nb import storage
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.dataset import SequenceDataset, MultiDomainDataset, EpochSampler, collate_batch

ROOT = Path(__file__).resolve().parents[1]
META = {'obs': {'point_cloud': {'shape': [64, 3], 'type': 'point_cloud'}, 'agent_pos': {'shape': [9], 'store_key': 'state'}},
        'action': {'shape': [4]}}

@pytest.fixture
def store(tmp_path):
    return make_synthetic_store(tmp_path/'s.zarr', n_episodes=6, episode_len=[30, 45, 25, 60, 40, 35], n_points=64, pc_channels=6)

@pytest.fixture
def shm(tmp_path, monkeypatch):
    d = tmp_path/'shm'; d.mkdir(); monkeypatch.setattr(storage, 'SHM_ROOT', d); monkeypatch.setenv('MANIFLOW_SHM_DIR', str(d))
    return d

def ds(path, storage='memory', **kw): return SequenceDataset(path, META, 16, 2, 8, val_ratio=0.2, seed=3, storage=storage, **kw)

def windows(d, order):
    "Every window of `order`, as one flat float64 vector per window."
    b = d.__getitems__(np.asarray(order))
    return torch.cat([b["obs"]["point_cloud"].flatten(1), b["obs"]["agent_pos"].flatten(1), b["action"].flatten(1)], 1).numpy()

def small_chunks(d, n=7):
    for a in [d.action, *d.obs.values()]: a.chunk_len = n
    return d

def test_shared_same_windows_same_order(store, shm):
    mem, sh = ds(store), ds(store, 'shared')
    assert isinstance(sh.obs['point_cloud'], np.memmap) and sh.segment.parent == shm
    for e in range(2):
        o1, o2 = EpochSampler(mem, seed=5), EpochSampler(sh, seed=5)
        o1.set_epoch(e); o2.set_epoch(e)
        a, b = list(o1), list(o2)
        assert a == b == EpochSampler(len(mem), seed=5).order(e).tolist()          # the order memory always had
        np.testing.assert_array_equal(windows(mem, a), windows(sh, b))
    for k, f in mem.get_normalizer().fields.items():
        torch.testing.assert_close(f.scale, sh.get_normalizer()[k].scale, rtol=0, atol=0)
    val = sh.get_validation_dataset()
    np.testing.assert_array_equal(windows(mem.get_validation_dataset(), range(len(val))), windows(val, range(len(val))))

def test_stream_same_set_chunk_local_order(store):
    mem, st = ds(store), small_chunks(ds(store, 'stream', mix_chunks=1))
    ref = windows(mem, range(len(mem)))
    seen = []
    for e in range(2):
        s = EpochSampler(st, seed=5); s.set_epoch(e); order = list(s); seen.append(order)
        assert sorted(order) == list(range(len(mem)))                               # the SET of windows per epoch
        np.testing.assert_array_equal(windows(st, order), ref[order])              # each window's values
        ch = st.window_chunks()[order]
        assert (np.diff(ch) != 0).sum() == len(np.unique(ch)) - 1                   # chunk by chunk (mix_chunks=1)
    assert seen[0] != seen[1]
    for k, f in mem.get_normalizer().fields.items():                               # statistics bit for bit
        for b in ('scale', 'offset', 'min', 'max', 'mean', 'std'):
            torch.testing.assert_close(getattr(f, b), getattr(st.get_normalizer()[k], b), rtol=0, atol=0)

def test_stream_cache_is_bounded(store):
    st = small_chunks(ds(store, 'stream', cache_mb=1e-6))
    st.__getitems__(np.arange(len(st)))
    assert all(len(a._cache) <= 2 for a in [st.action, *st.obs.values()])

def test_stream_loader_workers(store):
    st = small_chunks(ds(store, 'stream'))
    dl = torch.utils.data.DataLoader(st, batch_size=16, sampler=EpochSampler(st, seed=1), num_workers=2, collate_fn=collate_batch)
    acts = torch.cat([b['action'] for b in dl])
    mem = ds(store)
    torch.testing.assert_close(acts, mem.__getitems__(np.asarray(EpochSampler(st, seed=1).order(0)))['action'])

def test_multi_domain_stream(store, tmp_path):
    p2 = make_synthetic_store(tmp_path/'b.zarr', n_episodes=3, episode_len=30, n_points=64, pc_channels=6, seed=1)
    kw = dict(val_ratio=0.2, seed=3)
    mem = MultiDomainDataset([store, p2], META, 16, 2, 8, **kw)
    st = MultiDomainDataset([store, p2], META, 16, 2, 8, storage='stream', **kw)
    for p in st.parts: small_chunks(p)
    order = list(EpochSampler(st, seed=2))
    assert sorted(order) == list(range(len(mem)))
    torch.testing.assert_close(st.__getitems__(order)['action'], mem.__getitems__(order)['action'])
    torch.testing.assert_close(st.get_normalizer()['point_cloud'].scale, mem.get_normalizer()['point_cloud'].scale, rtol=0, atol=0)

def test_auto_picks_memory_for_small_store_and_says_so(store, capsys, monkeypatch):
    storage._NOTED.clear()
    a = ds(store, 'auto'); ds(store, 'auto')
    assert a.storage == 'memory' and isinstance(a.obs['point_cloud'], np.ndarray) and not isinstance(a.obs['point_cloud'], np.memmap)
    err = capsys.readouterr().err
    assert err.count('task.dataset.storage=auto -> memory') == 1
    monkeypatch.setattr(storage, 'available_memory', lambda: 1 << 10)
    assert ds(store, 'auto').storage == 'stream'

def test_bad_storage_is_a_config_error(store):
    with pytest.raises(ValueError, match="task.dataset.storage is 'disk', expected one of auto, memory, shared, stream"): ds(store, 'disk')

def test_make_datasets_storage_key(store, shm):
    from maniflow_nb.config import compose_config
    from maniflow_nb.dataset import make_datasets
    cfg = compose_config('maniflow_pointcloud_metaworld', [f'task.dataset_path={store}', 'task.dataset.storage=stream'])
    cfg.task.shape_meta.obs.point_cloud.shape = [64, 3]
    tr, va = make_datasets(cfg)
    assert tr.storage == 'stream' and va.storage == 'stream'

RANK = textwrap.dedent('''
    import sys, time
    from maniflow_nb.storage import ChunkedArray, shared_arrays
    ca = ChunkedArray(sys.argv[1], 'data/point_cloud')
    def build(k, out): out[:] = ca.take(range(len(ca)))
    seg, arrs = shared_arrays(sys.argv[1], {'point_cloud': (ca.shape, ca.dtype, 'all')}, build)
    print(seg, float(arrs['point_cloud'].sum()), flush=True)
    if sys.argv[2] == 'wait': time.sleep(60)
''')

def rank(store, mode, env):
    return subprocess.Popen([sys.executable, '-c', RANK, str(store), mode], env=env, stdout=subprocess.PIPE, text=True)

def test_two_ranks_one_segment_cleaned_on_exit_and_after_kill(store, shm):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'MANIFLOW_JOB_ID': 'job7'}
    a, b = rank(store, 'wait', env), rank(store, 'wait', env)
    (seg_a, sum_a), (seg_b, sum_b) = a.stdout.readline().split(), b.stdout.readline().split()
    assert seg_a == seg_b and sum_a == sum_b and 'job7' in seg_a                                      # one segment, found by both
    assert len([p for p in shm.iterdir() if p.is_dir()]) == 1
    assert len(os.listdir(Path(seg_a)/'users')) == 2
    a.send_signal(signal.SIGTERM); a.wait(20)
    assert Path(seg_a).exists()                                                      # b still maps it
    b.kill(); b.wait(20)                                                             # crash: no clean-up ran
    assert Path(seg_a).exists()
    (shm/'not_ours').mkdir()
    removed = storage.sweep_segments(shm)                                            # the next job's sweep
    assert [str(p) for p in removed] == [seg_a] and (shm/'not_ours').exists()
    c = rank(store, 'exit', env); c.stdout.readline(); c.wait(30)
    assert sorted(p.name for p in shm.iterdir()) == ['not_ours']                     # normal exit removes it
