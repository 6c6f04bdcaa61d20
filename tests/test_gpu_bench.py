"""bench/gpu_bench.py (issue 17) on the CPU: `--smoke` writes every kind of row it writes on a GPU, into a given results
dir (never the committed JSONs), a failing part is recorded and the rest still run; `GraphedPredict`'s buffers, fresh
noise and copies hold with a CPU stand-in for the CUDA graph calls; on a GPU (--rungpu) the CUDA-graph
inference matches eager on the same noise, draws fresh noise per call, and the device sampler's CUDA batches are the
DataLoader's."""
import json, os, subprocess, sys, argparse
from pathlib import Path
import pytest, torch
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore'}
sys.path.insert(0, str(ROOT/'bench'))

def bench(*args, check=True):
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu_bench.py'), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check: assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r

def committed(name): return json.loads((ROOT/'bench'/'results'/name).read_text())

def test_smoke_writes_every_row(tmp_path):
    before = {n: (ROOT/'bench'/'results'/n).read_bytes() for n in ('latency.json', 'train_throughput.json')}
    bench('--device', 'cpu', '--smoke', '--results', str(tmp_path))
    assert all((ROOT/'bench'/'results'/n).read_bytes() == b for n, b in before.items())       # the committed files untouched
    lat, tr = json.loads((tmp_path/'latency.json').read_text()), json.loads((tmp_path/'train_throughput.json').read_text())
    for r in lat + tr: assert {'device', 'torch', 'cuda', 'date', 'part'} <= set(r), r
    # latency: the row format of bench/latency.py; eager ManiFlow 1/2/10 steps and DP3 10 DDIM steps timed, graphs refused on CPU
    keys = set(committed('latency.json')[-1])
    eager = [r for r in lat if r.get('graph') == 'none']
    assert sorted((r['policy'], r['steps']) for r in eager) == [('dp3', 10), ('maniflow', 1), ('maniflow', 2), ('maniflow', 10)]
    assert all(keys <= set(r) and r['ms_median'] > 0 and r['batch'] == 1 for r in eager)
    graphs = [r for r in lat if r.get('graph') == 'capture']
    assert sorted(r['steps'] for r in graphs) == [1, 2, 10] and all('needs a CUDA device' in r['error'] for r in graphs)
    # training: the row format of bench/train_throughput.py, both trainers, reference style and fast path
    keys = set(committed('train_throughput.json')[-1]) - {'lightning_over_legacy'}
    got = {(r['trainer'], r['sampler'], r['precision'], r['compile']): r for r in tr}
    assert set(got) == {(t, 'dataloader', '32-true', False) for t in ('legacy', 'lightning')} | \
                       {(t, 'device', 'bf16-mixed', True) for t in ('legacy', 'lightning')}
    assert all(keys <= set(r) and r['samples_per_s'] > 0 and 'error' not in r for r in tr)
    assert all('speedup_over_reference' in r for r in tr if r['sampler'] == 'device')
    assert all('lightning_over_legacy' in r for r in tr if r['trainer'] == 'lightning')

def test_smoke_refuses_the_committed_results():
    r = bench('--device', 'cpu', '--smoke', check=False)
    assert r.returncode != 0 and 'give --results DIR' in r.stderr

def test_out_of_budget_parts_are_recorded(tmp_path):
    bench('--device', 'cpu', '--smoke', '--results', str(tmp_path), '--budget', '1')
    rows = json.loads((tmp_path/'latency.json').read_text()) + json.loads((tmp_path/'train_throughput.json').read_text())
    assert len(rows) == 6 and all(r['error'].startswith('skipped:') for r in rows), rows

def test_a_failing_part_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    "A part that raises, and one whose process dies, each leave an error row; the part after them still runs."
    import gpu_bench as G
    def fake(name, a, s):
        if name == 'latency_dp3': raise RuntimeError('CUDA error: out of memory')
        if name == 'train_legacy_ref': os._exit(3)
        return [{'trainer': 'legacy', 'sampler': 'device', 'samples_per_s': 1.0}]
    monkeypatch.setattr(G, 'run_part', fake)
    a = argparse.Namespace(parts=['latency_dp3', 'train_legacy_ref', 'train_legacy_fast'], budget=450, tmp=str(tmp_path), device='cpu')
    rows = G.run_parts(a, {})
    assert [(r['part'], r.get('error')) for r in rows] == [('latency_dp3', 'RuntimeError: CUDA error: out of memory'),
           ('train_legacy_ref', 'the child process died (exit code 3)'), ('train_legacy_fast', None)]
    assert rows[2]['samples_per_s'] == 1.0

def tiny(tmp_path):
    from maniflow_nb.config import compose_config
    from maniflow_nb.data import make_synthetic_store
    from maniflow_nb.dataset import make_datasets
    store = make_synthetic_store(tmp_path/'s.zarr', n_episodes=4, episode_len=20, n_points=64)
    cfg = compose_config('maniflow_pointcloud_metaworld', [f'task.dataset_path={store}', 'task.shape_meta.obs.point_cloud.shape=[64,3]',
                                                           'policy.n_point_tokens=16', 'task.dataset.val_ratio=0.25', 'task.dataset.storage=memory'])
    return cfg, make_datasets(cfg)[0]

def scrambled(cfg, train):
    "A tiny ManiFlow policy with random weights (a new DiT-X is zero-initialised to a constant output, which hides wrong inputs)."
    from maniflow_nb.policies import make_policy
    pol = make_policy(cfg, train.get_normalizer())
    torch.manual_seed(0)
    with torch.no_grad():
        for q in pol.model.parameters(): q.normal_(0, 0.2)
    return pol.eval()

class FakeGraph:
    "A CUDA graph's semantics on the CPU: replay re-runs the recorded body on the same buffers, into the recorded outputs, with the RNG\n"
    "state of the capture (random numbers drawn inside a graph would come back the same: the frozen-noise bug)."
    owner = None
    def replay(self):
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0); new = self.owner._run()
        for k, v in self.owner.out.items(): v.copy_(new[k])

def test_graphed_predict_semantics_on_cpu(tmp_path, monkeypatch):
    "GraphedPredict's buffers, fresh noise, input copies and output clones, with the CUDA calls replaced by a CPU stand-in."
    import contextlib, maniflow_nb.fastpath as fp
    from maniflow_nb.config import UserError
    monkeypatch.setattr(fp, '_check_graphable', lambda p: p)
    monkeypatch.setattr(torch.cuda, 'CUDAGraph', FakeGraph)
    monkeypatch.setattr(torch.cuda, 'graph', lambda g: contextlib.nullcontext())
    stream = type('Stream', (), {'wait_stream': lambda self, other: None})
    monkeypatch.setattr(torch.cuda, 'Stream', stream)
    monkeypatch.setattr(torch.cuda, 'stream', lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, 'current_stream', stream)
    cfg, train = tiny(tmp_path); pol = scrambled(cfg, train)
    obs = {k: v[:1] for k, v in train.__getitems__([0])['obs'].items()}
    other = {k: v[:1] for k, v in train.__getitems__([9])['obs'].items()}
    for K in (1, 2):
        g = fp.GraphedPredict(pol, obs, K); g.graph.owner = g
        eager = lambda o, seed: pol.predict_action(o, generator=torch.Generator().manual_seed(seed), num_steps=K)['action_pred']
        torch.testing.assert_close(g(obs, generator=torch.Generator().manual_seed(7))['action_pred'], eager(obs, 7))
        torch.testing.assert_close(g(other, generator=torch.Generator().manual_seed(8))['action_pred'], eager(other, 8))   # new inputs reach it
        a = g(obs)['action_pred']; b = g(obs)['action_pred']
        assert not torch.equal(a, b)                                 # fresh noise per call, drawn outside the graph
        a.zero_(); assert not torch.equal(g(obs)['action_pred'], a) # the caller gets a copy, not the graph's output buffer
        with pytest.raises(UserError, match=r"obs\['point_cloud'\] has shape \(2, 2, 64, 3\); this graph was captured for \(1, 2, 64, 3\)"):
            g({k: v.expand(2, *v.shape[1:]) for k, v in obs.items()})

# --- on a GPU only ------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize('K', [1, 2])
def test_cuda_graph_matches_eager_with_fresh_noise(tmp_path, K):
    from maniflow_nb.fastpath import GraphedPredict
    cfg, train = tiny(tmp_path)
    pol = scrambled(cfg, train).cuda()
    obs = {k: v[:1].cuda() for k, v in train.__getitems__([0])['obs'].items()}
    g = GraphedPredict(pol, obs, K)
    eager = pol.predict_action(obs, generator=torch.Generator().manual_seed(7), num_steps=K)['action_pred']
    torch.testing.assert_close(g(obs, generator=torch.Generator().manual_seed(7))['action_pred'], eager, atol=1e-4, rtol=1e-4)
    other = {k: v + 0.01 for k, v in obs.items()}                   # new inputs reach the graph
    torch.testing.assert_close(g(other, generator=torch.Generator().manual_seed(7))['action_pred'],
                               pol.predict_action(other, generator=torch.Generator().manual_seed(7), num_steps=K)['action_pred'], atol=1e-4, rtol=1e-4)
    assert not torch.equal(g(obs)['action_pred'], g(obs)['action_pred'])   # fresh noise per call (not frozen in the graph)

@pytest.mark.gpu
def test_device_sampler_on_cuda_gives_the_dataloader_batches(tmp_path):
    from maniflow_nb.dataset import EpochSampler, collate_batch
    from maniflow_nb.fastpath import DeviceLoader
    _, train = tiny(tmp_path)
    dl = DeviceLoader(train, 8, EpochSampler(train, seed=1), device='cuda')
    ref = torch.utils.data.DataLoader(train, batch_size=8, sampler=EpochSampler(train, seed=1), collate_fn=collate_batch)
    n = 0
    for a, b in zip(dl, ref):
        assert a['action'].is_cuda and torch.equal(a['action'].cpu(), b['action']); n += 1
        for k in b['obs']: assert torch.equal(a['obs'][k].cpu(), b['obs'][k])
    assert n == len(ref)
