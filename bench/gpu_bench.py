"""The GPU fast path measured (issue 17): training throughput of the reference style against the fast path, in both
trainers, and inference latency eager against CUDA graphs. `bench/gpu.sh` runs it; rows are appended to
bench/results/train_throughput.json and bench/results/latency.json (the row formats of bench/train_throughput.py and
bench/latency.py, plus `cuda`, `part` and, for a part that failed, `error`).

    python bench/gpu_bench.py [--device cuda] [--budget 450] [--results bench/results] [--parts a,b,...]
    python bench/gpu_bench.py --device cpu --smoke --results DIR     # tiny sizes, seconds (CI: tests/test_gpu_bench.py)

Parts, in this order, each in a forked child process with its own time box (a part that fails, crashes or runs out
of time is recorded as a row with `error`, and the next part runs):
  latency_maniflow     ManiFlow at batch 1, 1/2/10 Euler steps, eager and as one captured CUDA graph (fastpath.GraphedPredict;
                       each graph row also records its largest difference to eager on the same noise, and that two
                       calls drew fresh noise)
  latency_dp3          DP3 with 10 DDIM steps, eager
  train_legacy_ref     legacy loop, fp32, DataLoader (the reference style: ManiFlow's / DP3's own loop)
  train_legacy_fast    legacy loop, bf16-mixed + training.compile + training.device_sampler
  train_lightning_ref  Lightning, fp32, DataLoader
  train_lightning_fast Lightning, bf16-mixed + compile + device sampler
Training: `policy=maniflow_pointcloud_paper` (~180 M), batch 256, MetaWorld shapes (512 x 3 points, state 9, action 4,
T/To/Ta 4/2/3) on a synthetic store written here; the first epoch (compilation, allocator warm-up) is not timed, the
others are (data, steps, EMA, logging; no validation, sampling or checkpoints). Smoke: the CPU-sized ManiFlow, batch 8.
"""
import time
T0 = time.monotonic()                                         # --budget counts from here (imports and the store included)
import argparse, datetime, json, multiprocessing as mp, os, platform, sys, tempfile, traceback
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))
RESULTS = ROOT/'bench'/'results'
PARTS = ('latency_maniflow', 'latency_dp3', 'train_legacy_ref', 'train_legacy_fast', 'train_lightning_ref', 'train_lightning_fast')
BUDGET = {'latency_maniflow': 40, 'latency_dp3': 20, 'train_legacy_ref': 45, 'train_legacy_fast': 160,
          'train_lightning_ref': 45, 'train_lightning_fast': 140}            # seconds (GPU; the fast parts compile); 450 in all

# --- sizes ----------------------------------------------------------------------------------------------------------
def sizes(a) -> dict:
    "What each part runs: paper sizes on the GPU, tiny ones for --smoke."
    if a.smoke: return dict(policy='maniflow_pointcloud', n_points=64, batch=8, steps=3, epochs=2, episodes=6, episode_len=20,
                            repeats=3, latency_size='cpu_default', dp3_size='cpu_default', compile_backend='eager',
                            policy_ov=['policy.n_point_tokens=8', 'policy.n_layer=1'])   # less for dynamo to trace
    return dict(policy='maniflow_pointcloud_paper', n_points=512, batch=256, steps=12, epochs=3, episodes=42, episode_len=120,
                repeats=30, latency_size='maniflow_paper', dp3_size='dp3_paper', compile_backend='inductor', policy_ov=[])

def env_info(device) -> dict:
    "device, torch and CUDA versions, date: the fields every row carries."
    import torch
    from _common import cpu_name
    dev = torch.cuda.get_device_name() if str(device).startswith('cuda') else cpu_name()
    return {'device': dev, 'torch': torch.__version__, 'cuda': torch.version.cuda,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}

# --- latency ----------------------------------------------------------------------------------------------------------
def _lat_args(a, s):
    return argparse.Namespace(device=a.device, batch=1, repeats=s['repeats'], horizon=None, n_obs_steps=None,
                              n_action_steps=None, no_cuda_graphs=True)

class _Graphed:
    "A `GraphedPredict` as `latency.time_policy` / `latency.row` see a policy."
    def __init__(self, g, p): self.g, self.p, self.bench_cuda_graphs = g, p, True
    def predict_action(self, obs): return self.g(obs)
    def parameters(self): return self.p.parameters()

def graph_checks(g, p, obs, K) -> dict:
    "Largest |graph - eager| on the same noise, and whether two graph calls drew different noise."
    import torch
    eager = p.predict_action(obs, generator=torch.Generator().manual_seed(0), num_steps=K)['action_pred']
    same = g(obs, generator=torch.Generator().manual_seed(0))['action_pred']
    fresh = not torch.equal(g(obs)['action_pred'], g(obs)['action_pred'])
    return {'graph_max_abs_diff': float((same - eager).abs().max()), 'fresh_noise': bool(fresh)}

def latency_maniflow(a, s) -> list:
    "ManiFlow at batch 1: 1, 2 and 10 steps, eager and CUDA graph (a graph that cannot be made is an error row)."
    import torch, latency as L
    from maniflow_nb.fastpath import GraphedPredict
    la, tl = _lat_args(a, s), (16, 2, 8)
    p, sm = L.build('maniflow_pointcloud_metaworld', L.MANIFLOW_SIZES[s['latency_size']], tl, la)
    with torch.no_grad():                       # random weights (the same kernels): a new DiT-X's output is constant,
        for q in p.model.parameters(): q.normal_(0, 0.02)   # which would make graph_max_abs_diff 0 whatever the graph did
    obs, rows = L.random_obs(sm, 1, tl[1], a.device), []
    for K in (1, 2, 10):
        p.num_inference_steps = K; p.bench_cuda_graphs = False
        ms, cpu = L.time_policy(p, obs, la.repeats, a.device)
        rows.append(L.row('maniflow', s['latency_size'], p, K, tl, ms, cpu, la) | {'graph': 'none'})
        try:
            g = GraphedPredict(p, obs, K); gp = _Graphed(g, p)
            with torch.inference_mode(): checks = graph_checks(g, p, obs, K)
            ms, cpu = L.time_policy(gp, obs, la.repeats, a.device)
            rows.append(L.row('maniflow', s['latency_size'], gp, K, tl, ms, cpu, la) | {'graph': 'capture'} | checks)
        except Exception as e: rows.append({'policy': 'maniflow', 'size': s['latency_size'], 'steps': K, 'batch': 1, 'graph': 'capture', 'error': _err(e)})
    return rows

def latency_dp3(a, s) -> list:
    "DP3, 10 DDIM steps, batch 1, eager."
    import latency as L
    la, tl = _lat_args(a, s), (4, 2, 3)
    p, sm = L.build('dp3_metaworld', L.DP3_SIZES[s['dp3_size']] + ['policy.scheduler.type=ddim', 'policy.num_inference_steps=10'], tl, la)
    ms, cpu = L.time_policy(p, L.random_obs(sm, 1, tl[1], a.device), la.repeats, a.device)
    return [L.row('dp3', s['dp3_size'], p, p.num_inference_steps, tl, ms, cpu, la) | {'graph': 'none'}]

# --- training ---------------------------------------------------------------------------------------------------------
FAST = ['training.compile=true', 'training.device_sampler=true']

def train_part(a, s, trainer:str, fast:bool) -> list:
    "Samples/s and steps/s of one trainer, reference style or fast path, after the first (warm-up) epoch."
    import torch, maniflow_nb.fastpath as fp, train_throughput as T
    fp.COMPILE_BACKEND = s['compile_backend']
    precision = 'bf16-mixed' if fast else '32-true'
    ov = [f'task.shape_meta.obs.point_cloud.shape=[{s["n_points"]},3]', 'task.dataset.storage=memory', 'task.dataset.val_ratio=0.02',
          'training.val_every=1000', 'checkpoint.save_last=false', 'training.num_workers=0', *s['policy_ov'], *(FAST if fast else [])]
    ta = argparse.Namespace(config='maniflow_pointcloud_metaworld', policy=s['policy'], batch=s['batch'], epochs=s['epochs'],
                            steps=s['steps'], device=a.device, precision=precision, overrides=ov)
    torch.manual_seed(0)
    rate = (T.legacy_rate if trainer == 'legacy' else T.lightning_rate)(T.bench_cfg(a.store, Path(a.tmp)/f'{trainer}_{fast}', ta))
    return [{'trainer': trainer, 'load_avg_1m': round(os.getloadavg()[0], 2), 'precision': precision,
             'samples_per_s': round(rate, 2), 'steps_per_s': round(rate / s['batch'], 3), 'batch': s['batch'],
             'compile': fast, 'sampler': 'device' if fast else 'dataloader',
             'config': f"maniflow_pointcloud_metaworld policy={s['policy']} steps/epoch={s['steps']} epochs={s['epochs']} "
                       f"(first epoch excluded){' ' + ' '.join(FAST) if fast else ''}", 'runs': [round(rate, 2)]}]

def run_part(name, a, s) -> list:
    if name.startswith('latency_'): return globals()[name](a, s)
    _, trainer, kind = name.split('_')
    return train_part(a, s, trainer, kind == 'fast')

# --- driver -----------------------------------------------------------------------------------------------------------
def _err(e) -> str: return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"

def _child(name, a, s, out):
    "Run part `name` in this (forked) process; its rows, or its error, go to the JSON file `out`."
    import logging, warnings
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR); warnings.filterwarnings('ignore')
    try: rows = [env_info(a.device) | {'part': name} | r for r in run_part(name, a, s)]
    except BaseException as e:
        traceback.print_exc(); rows = [{'part': name, 'error': _err(e)}]
    Path(out).write_text(json.dumps(rows))

def run_parts(a, s) -> list:
    "Each part in a forked child, time-boxed by its budget and by what is left of `--budget`; rows of all parts."
    import torch
    ctx = mp.get_context('spawn' if torch.cuda.is_initialized() else 'fork')   # a CUDA context cannot cross a fork
    rows, end = [], getattr(a, 't0', time.monotonic()) + a.budget
    for name in a.parts:
        left = end - time.monotonic(); box = min(BUDGET[name] * a.budget / sum(BUDGET.values()), left)
        if box < 5: rows.append({'part': name, 'error': f'skipped: {left:.0f} s of the {a.budget} s budget left'}); continue
        out = Path(a.tmp)/f'{name}.json'; t0 = time.monotonic()
        p = ctx.Process(target=_child, args=(name, a, s, out)); p.start(); p.join(box)
        if p.is_alive(): p.kill(); p.join(); rows.append({'part': name, 'error': f'timed out after {box:.0f} s'})
        elif out.exists(): rows += json.loads(out.read_text())
        else: rows.append({'part': name, 'error': f'the child process died (exit code {p.exitcode})'})
        rows[-1].setdefault('part_s', round(time.monotonic() - t0, 1))
        errs = [r['error'] for r in rows if r.get('part') == name and 'error' in r]
        print(f"{name}: {f'{len(errs)} error(s), first: ' + errs[0] if errs else 'ok'} ({time.monotonic() - t0:.0f} s)", flush=True)
    return rows

def summarize(rows) -> list:
    "Fast over reference per trainer, and Lightning over legacy per style, added to the training rows."
    tr = {(r['trainer'], r['sampler']): r for r in rows if 'samples_per_s' in r}
    for (t, kind), r in tr.items():
        if kind == 'device' and (t, 'dataloader') in tr: r['speedup_over_reference'] = round(r['samples_per_s'] / tr[t, 'dataloader']['samples_per_s'], 3)
        if t == 'lightning' and ('legacy', kind) in tr: r['lightning_over_legacy'] = round(r['samples_per_s'] / tr['legacy', kind]['samples_per_s'], 4)
    return rows

def append_rows(path:Path, rows:list):
    "Append `rows` to the JSON list at `path` (temp file, then rename)."
    old = json.loads(path.read_text()) if path.exists() else []
    tmp = path.with_suffix('.tmp'); tmp.write_text(json.dumps(old + rows, indent=1)); os.replace(tmp, path)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--budget', type=float, default=440, help='seconds for everything (from the start of the script; bench/gpu.sh cuts at 475)')
    ap.add_argument('--results', default=str(RESULTS)); ap.add_argument('--parts', default=','.join(PARTS))
    a = ap.parse_args(argv)
    a.parts = [p for p in a.parts.split(',') if p]
    if a.device not in ('cuda', 'cpu'): sys.exit(f'gpu_bench.py: --device is {a.device!r}, expected cuda or cpu')
    if bad := [p for p in a.parts if p not in PARTS]: sys.exit(f'gpu_bench.py: unknown part {bad[0]!r} (parts: {", ".join(PARTS)})')
    res = Path(a.results)
    if a.smoke and res.resolve() == RESULTS.resolve(): sys.exit('gpu_bench.py: --smoke writes tiny-size rows; give --results DIR (not bench/results)')
    if not a.smoke and a.device == 'cpu': sys.exit('gpu_bench.py: paper sizes need a GPU; use --device cpu --smoke for the CPU check')
    s, a.tmp, a.t0 = sizes(a), tempfile.mkdtemp(prefix='gpu_bench_'), T0
    from maniflow_nb.data import make_synthetic_store
    import latency, train_throughput, maniflow_nb.workspace, maniflow_nb.lightning   # imported once, before the forks (no CUDA yet:
                                                                                    # each child starts its own)
    a.store = str(make_synthetic_store(Path(a.tmp)/'metaworld.zarr', n_episodes=s['episodes'], episode_len=s['episode_len'], n_points=s['n_points']))
    rows = summarize(run_parts(a, s))
    info = env_info(a.device)
    rows = [info | r if 'device' not in r else r for r in rows]
    res.mkdir(parents=True, exist_ok=True)
    append_rows(res/'latency.json', [r for r in rows if r['part'].startswith('latency_')])
    append_rows(res/'train_throughput.json', [r for r in rows if r['part'].startswith('train_')])
    for r in rows: print(json.dumps({k: r[k] for k in r if k not in ('runs', 'config')}))
    return rows

if __name__ == '__main__': main()
