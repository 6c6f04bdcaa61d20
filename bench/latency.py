"""Inference latency of `policy.predict_action` (one observation to one action chunk).

    python bench/latency.py [--policy maniflow|dp3|all] [--device cpu|cuda] [--batch 1] [--repeats 20] [--no-record]
                            [--no-cuda-graphs]

Appends one row per (policy, size) to bench/results/latency.json: device, torch, date, threads, policy, size, params,
steps, batch, horizon/n_obs_steps/n_action_steps, ms_median, ms_p90 (wall), cpu_ms_median (process CPU
time; far below wall time when other jobs share the cores), cuda_graphs (True where the network ran as a
torch.compile 'reduce-overhead' CUDA graph). Each policy part is a function
`<policy>_cases(args)` yielding (size, policy, shape_meta, steps, (T, To, Ta)) registered in CASES; the timing loop is shared.
"""
import argparse, datetime, json, os, platform, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
import numpy as np, torch, hydra
from maniflow_nb.config import compose_config, to_plain
from maniflow_nb.normalizer import LinearNormalizer

RESULTS = Path(__file__).parent / 'results' / 'latency.json'

def random_obs(shape_meta, batch, n_obs_steps, device):
    "A random observation dict `{key: (B,To,*shape)}` for `shape_meta`."
    return {k: torch.randn(batch, n_obs_steps, *m['shape'], device=device) for k, m in shape_meta['obs'].items()}

def timeline(a, default):
    "(T, To, Ta): the command line's where given, else the policy's usual one."
    return tuple(d if v is None else v for v, d in zip((a.horizon, a.n_obs_steps, a.n_action_steps), default))

def build(config_name, overrides, tl, a):
    "Instantiate the config's policy for timeline `tl`=(T,To,Ta) with a normalizer fitted on random data, on `a.device`, in eval mode."
    cfg = compose_config(config_name, overrides)
    sm = to_plain(cfg.task.shape_meta)
    p = hydra.utils.instantiate(cfg.policy, shape_meta=sm, horizon=tl[0], n_obs_steps=tl[1], n_action_steps=tl[2])
    data = {'action': torch.randn(64, sm['action']['shape'][0]), **{k: v[:, 0] for k, v in random_obs(sm, 64, 1, 'cpu').items()}}
    p.set_normalizer(LinearNormalizer().fit(data))
    return p.to(a.device).eval(), sm

# --- DP3 (helper dp3) ---------------------------------------------------------------------------------------------
DP3_SIZES = {'cpu_default': [],   # conf/policy/dp3.yaml as shipped
             'dp3_paper': ['policy.unet.down_dims=[512,1024,2048]', 'policy.unet.diffusion_step_embed_dim=128']}

def dp3_cases(a):
    "DP3 with 10 DDIM steps, at the packaged (CPU) size and at DP3's published size; DP3's timeline T=4, To=2, Ta=3."
    tl = timeline(a, (4, 2, 3))
    for size, ov in DP3_SIZES.items():
        p, sm = build('dp3_metaworld', ov + ['policy.scheduler.type=ddim', 'policy.num_inference_steps=10'], tl, a)
        yield size, p, sm, p.num_inference_steps, tl

# --- ManiFlow (helper maniflow) --------------------------------------------------------------------------------------
MANIFLOW_SIZES = {'cpu_default': [],   # conf/policy/maniflow_pointcloud.yaml as shipped (2 x 64)
                  'maniflow_paper': ['policy.n_layer=12', 'policy.n_head=8', 'policy.n_emb=768', 'policy.p_drop_attn=0.1',
                                     'policy.time_freq_dim=128', 'policy.token_dim=128', 'policy.n_point_tokens=64']}

def cuda_graphs(p, a):
    "On CUDA, compile the DiT-X network with mode='reduce-overhead' (CUDA graphs); returns whether it worked."
    if not str(a.device).startswith('cuda') or a.no_cuda_graphs: return False
    try:
        p.model = torch.compile(p.model, mode='reduce-overhead', dynamic=False)
        with torch.inference_mode():
            for _ in range(3): p.predict_action(random_obs(p.obs_encoder.meta, a.batch, p.n_obs_steps, a.device))
        return True
    except Exception as e:
        print(f"maniflow: CUDA graphs unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); timing eager")
        p.model = getattr(p.model, '_orig_mod', p.model)
        return False

def maniflow_cases(a):
    "ManiFlow point-cloud policy with 1, 2 and 10 Euler steps at the packaged size and at ManiFlow's (12 x 768); T=16, To=2, Ta=8."
    tl = timeline(a, (16, 2, 8))
    for size, ov in MANIFLOW_SIZES.items():
        for steps in (1, 2, 10):
            p, sm = build('maniflow_pointcloud_metaworld', ov + [f'policy.num_inference_steps={steps}'], tl, a)
            p.bench_cuda_graphs = cuda_graphs(p, a)
            yield size, p, sm, steps, tl

CASES = {'dp3': dp3_cases, 'maniflow': maniflow_cases}

def time_policy(p, obs, repeats, device, warmup=3):
    "Per-call wall and process-CPU times (ms) of `p.predict_action(obs)`, after `warmup` calls."
    sync = torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)
    ms, cpu = [], []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync(); t0, c0 = time.perf_counter(), time.process_time(); p.predict_action(obs); sync()
            if i >= warmup: ms.append((time.perf_counter() - t0) * 1e3); cpu.append((time.process_time() - c0) * 1e3)
    return np.array(ms), np.array(cpu)

def device_name(device):
    if str(device).startswith('cuda'): return torch.cuda.get_device_name()
    try: model = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): model = platform.processor() or platform.machine()
    return f'cpu: {model} ({os.cpu_count()} cores)'

def row(policy, size, p, steps, tl, ms, cpu, a):
    return {'device': device_name(a.device), 'torch': torch.__version__,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'threads': torch.get_num_threads(), 'policy': policy, 'size': size,
            'params': sum(x.numel() for x in p.parameters()), 'steps': steps, 'batch': a.batch,
            'horizon': tl[0], 'n_obs_steps': tl[1], 'n_action_steps': tl[2],
            'repeats': len(ms), 'ms_median': round(float(np.median(ms)), 2), 'ms_p90': round(float(np.percentile(ms, 90)), 2),
            'cpu_ms_median': round(float(np.median(cpu)), 2),   # process CPU time: shows contention on a shared machine
            'cuda_graphs': bool(getattr(p, 'bench_cuda_graphs', False))}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--policy', default='all', choices=['maniflow', 'dp3', 'all'])
    ap.add_argument('--device', default='cpu'); ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=20)
    ap.add_argument('--horizon', type=int); ap.add_argument('--n-obs-steps', type=int)   # default: each policy's own
    ap.add_argument('--n-action-steps', type=int); ap.add_argument('--no-record', action='store_true')
    ap.add_argument('--no-cuda-graphs', action='store_true')   # on CUDA, time the eager model only
    a = ap.parse_args()
    names = list(CASES) if a.policy == 'all' else [a.policy]
    missing = [n for n in names if n not in CASES]
    if missing: sys.exit(f"bench/latency.py: no benchmark for policy {missing[0]!r} yet (available: {list(CASES)})")
    torch.manual_seed(0); rows = []
    for name in names:
        for size, p, sm, steps, tl in CASES[name](a):
            ms, cpu = time_policy(p, random_obs(sm, a.batch, tl[1], a.device), a.repeats, a.device)
            rows.append(row(name, size, p, steps, tl, ms, cpu, a))
            print(f"{name} {size}: median {rows[-1]['ms_median']} ms, p90 {rows[-1]['ms_p90']} ms "
                  f"(cpu {rows[-1]['cpu_ms_median']} ms; {steps} steps, batch {a.batch}, {rows[-1]['params']/1e6:.1f}M params, {rows[-1]['device']})")
    if not a.no_record:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.parent.mkdir(exist_ok=True)
        tmp = RESULTS.with_suffix('.tmp'); tmp.write_text(json.dumps(old + rows, indent=1)); os.replace(tmp, RESULTS)

if __name__ == '__main__': main()
