#!/usr/bin/env python
"""IoU and validity of generated NAMO target-goal masks after a short training run, next to every trivial baseline.

Generates seeded procedural scenes, trains a family with the packaged configs (the same `train_generative` code path
as the CLI), then, on the whole validation set, draws `--n-samples` masks per scene with a few samplers and scores
them with the metrics of `maniflow_nb.generative`:

- `iou`: IoU of the first sample with the ground truth (mean over scenes);
- `best_of_n_iou`: IoU of the best of the N samples (the metric for a model of a distribution);
- `valid`: fraction of samples inside the goal region, in free space and of the target object's area
  (`mask_validity`), with its parts `in_goal`, `free`, `area_ratio`;

each with two decodings of a sample: `threshold0` (value > 0) and `keep_area` (the target object's area worth of
highest pixels). The baselines need no model and are scored the same way: the target object where it is now, the
whole goal region, a target-sized box centred in the goal region, and N random target-sized boxes inside the goal
region. Appends rows (device, torch version, date, parameters) to bench/results/generative_iou.json.

    OMP_NUM_THREADS=1 python bench/generative_iou.py --families diffusion      # ~3.5 min of CPU per family (150 epochs)
    OMP_NUM_THREADS=1 python bench/generative_iou.py --families flow_matching --epochs 60   # the first recorded run
    python bench/generative_iou.py --baselines-only --no-write                 # the baselines alone, seconds
    python bench/generative_iou.py --device cuda --epochs 300 --image-size 64 --hidden 256 --depth 6
"""
import argparse, contextlib, datetime, io, json, os, platform, sys, tempfile, time
from pathlib import Path
import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from maniflow_nb.config import compose_config
from maniflow_nb.scenes import gen_scenes
from maniflow_nb.generative import mask_iou, best_of_n_iou, keep_area, mask_validity, train_generative

RESULTS = Path(__file__).resolve().parent / 'results' / 'generative_iou.json'
SAMPLERS = {  # family -> [(sampler config overrides, label, steps)]
    'flow_matching': [({'method': 'euler', 'steps': 10}, 'euler', 10), ({'method': 'midpoint', 'steps': 5}, 'midpoint', 5)],
    'diffusion': [({'sampler_type': 'ddim', 'steps': 20}, 'ddim', 20), ({'sampler_type': 'ddpm', 'steps': 50}, 'ddpm', 50)],
}
CONFIGS = {'flow_matching': 'train_fb_flow_matching', 'diffusion': 'train_hf_diffusion'}

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--n-scenes', type=int, default=1000, help='scenes generated (10%% validation)')
    p.add_argument('--image-size', type=int, default=32)
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument('--depth', type=int, default=3)
    p.add_argument('--epochs', type=int, default=150)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--aux-loss-weight', type=float, default=1.0)
    p.add_argument('--prediction-type', default='sample', help='diffusion only: sample (the recorded runs) | epsilon | v_prediction')
    p.add_argument('--n-samples', type=int, default=8, help='samples per validation scene (best-of-N, validity)')
    p.add_argument('--families', default='flow_matching,diffusion')
    p.add_argument('--baselines-only', action='store_true', help='score the baselines, train nothing')
    p.add_argument('--no-write', action='store_true', help='print rows without appending them to the results file')
    p.add_argument('--figure', default=None, help='PNG of the scenes, ground truth and samples of the last family and sampler trained')
    return p.parse_args()

def overrides(a, fam, run_dir, data_dir):
    "Config overrides of the bench run (one validation pass, at the end)."
    acc = 'gpu' if a.device == 'cuda' else 'cpu'
    extra = [f'model.path.prediction_type={a.prediction_type}'] if fam == 'diffusion' else []
    return [f'run_dir={run_dir}', f'gen_data.data_dir={data_dir}', f'image_size={a.image_size}', f'batch_size={a.batch_size}',
            f'max_epochs={a.epochs}', f'base_lr={a.lr}', f'model.network.hidden={a.hidden}', f'model.network.depth={a.depth}',
            'model.lr_warmup_steps=50', f'model.aux_loss_weight={a.aux_loss_weight}', f'trainer.accelerator={acc}',
            'trainer.progress_bar=none', f'trainer.check_val_every_n_epoch={a.epochs}', 'trainer.num_sanity_val_steps=0', *extra]

def score(samples, ctx, tgt):
    "Metrics of `samples (N,B,1,S,S)` (bool) against the ground truth: single-sample IoU, best-of-N IoU, validity."
    v = [mask_validity(s, ctx) for s in samples]
    out = {'iou': mask_iou(samples[0], tgt).mean().item(), 'best_of_n_iou': best_of_n_iou(samples, tgt).mean().item()}
    return {**out, **{k: torch.stack([x[k] for x in v]).mean().item() for k in ('valid', 'in_goal', 'free', 'area_ratio')}}

def target_area(ctx): return (ctx[:, 4] > 0.5).flatten(1).sum(1)

@torch.no_grad()
def model_samples(module, val_set, sampler_cfg, n, device, batch=100):
    "Raw samples `(N,V,1,S,S)` of the validation set with `sampler_cfg`, and the sampler's NFE per batch."
    base = dict(module.hparams.sampler); base.update(sampler_cfg)
    module.sampler = instantiate(base); module.eval().to(device)
    g, out = torch.Generator(device).manual_seed(0), []
    for _ in range(n):
        out.append(torch.cat([module.generate(val_set.context[i:i+batch].to(device), generator=g).cpu()
                              for i in range(0, len(val_set), batch)]))
    return torch.stack(out), module.sampler.nfe

def bbox(m):
    "(y0, x0, h, w) of a 2-D boolean mask's bounding box (an empty mask: a 1x1 box at 0)."
    ys, xs = m.nonzero(as_tuple=True)
    if len(ys) == 0: return 0, 0, 1, 1
    return ys.min().item(), xs.min().item(), ys.max().item() - ys.min().item() + 1, xs.max().item() - xs.min().item() + 1

def box_masks(ctx, n, g=None):
    "Target-sized boxes in the goal region: centred (g None, `(1,B,1,S,S)`) or `n` at random positions (`(n,B,1,S,S)`)."
    S = ctx.shape[-1]; out = torch.zeros(n, ctx.shape[0], 1, S, S, dtype=torch.bool)
    for b in range(ctx.shape[0]):
        (_, _, h, w), (gy, gx, gh, gw) = bbox(ctx[b, 4] > 0.5), bbox(ctx[b, 1] > 0.5)
        for i in range(n):
            ry, rx = max(gh - h, 0), max(gw - w, 0)
            dy, dx = (ry // 2, rx // 2) if g is None else (int(torch.randint(0, ry + 1, (1,), generator=g)), int(torch.randint(0, rx + 1, (1,), generator=g)))
            out[i, b, 0, gy + dy:gy + dy + h, gx + dx:gx + dx + w] = True
    return out

def baselines(val_set, n):
    "Masks that need no model, as `(N,V,1,S,S)` samples."
    ctx = val_set.context; rep = lambda m: m[None].expand(n, *m.shape)
    return {'target_object_now': rep(ctx[:, 4:5] > 0.5), 'goal_region': rep(ctx[:, 1:2] > 0.5),
            'goal_center_box': rep(box_masks(ctx, 1)[0]), 'random_box_in_goal': box_masks(ctx, n, torch.Generator().manual_seed(0))}

def save_figure(path, ctx, tgt, masks, title:str, n_scenes:int=6, n_samples:int=4):
    "Rows of scenes: the scene (goal region, static and movable objects, target object), the ground truth, samples."
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(n_scenes, 2 + n_samples, figsize=(1.3 * (2 + n_samples), 1.3 * n_scenes), squeeze=False)
    for b in range(n_scenes):
        scene = torch.stack([ctx[b, 1] * 0.35 + ctx[b, 4], ctx[b, 2] * 0.8 + ctx[b, 0] * 0.5, ctx[b, 3] * 0.8]).permute(1, 2, 0).clamp(0, 1)
        for j, (im, name) in enumerate([(scene, 'scene'), (tgt[b, 0], 'ground truth')] + [(masks[i, b, 0], f'sample {i + 1}') for i in range(n_samples)]):
            ax[b, j].imshow(im.float().numpy(), cmap=None if im.ndim == 3 else 'gray', vmin=0, vmax=1, interpolation='nearest')
            ax[b, j].set_xticks([]); ax[b, j].set_yticks([])
            if b == 0: ax[b, j].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=8); fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True); fig.savefig(path, dpi=70); plt.close(fig)

def base_row(a, dm, device_name):
    return dict(device=device_name, torch=torch.__version__, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                image_size=a.image_size, train_size=len(dm.train_set), val_size=len(dm.val_set), n_samples=a.n_samples,
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                load_avg_1min=round(os.getloadavg()[0], 2), host_cpus=os.cpu_count())

def r4(d): return {k: round(v, 4) for k, v in d.items()}

def main():
    a = parse_args()
    device_name = torch.cuda.get_device_name(0) if a.device == 'cuda' else f'cpu ({platform.processor() or platform.machine()})'
    rows = []
    with tempfile.TemporaryDirectory() as d:
        data = gen_scenes(a.n_scenes, Path(d) / 'scenes', seed=1234, progress=False)
        from maniflow_nb.scenes import SceneDataModule
        dm = SceneDataModule(data, image_size=a.image_size, batch_size=a.batch_size, seed=42); dm.setup()
        vs = dm.val_set; tgt = vs.target > 0.5
        for k, m in baselines(vs, a.n_samples).items():
            rows.append({**base_row(a, dm, device_name), 'family': 'baseline', 'sampler': k, 'steps': 0, 'decoding': 'mask',
                         **r4(score(m, vs.context, tgt))}); print(json.dumps(rows[-1]), flush=True)
        for fam in ([] if a.baselines_only else a.families.split(',')):
            cfg = compose_config(CONFIGS[fam], overrides(a, fam, Path(d) / fam, data))
            t0, c0 = time.time(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()): trainer, module = train_generative(cfg)
            wall, cpu = time.time() - t0, time.process_time() - c0
            for scfg, label, steps in SAMPLERS[fam]:
                raw, nfe = model_samples(module, vs, scfg, a.n_samples, a.device)
                area = target_area(vs.context)
                for dec, masks in (('threshold0', raw > 0), ('keep_area', torch.stack([keep_area(x, area) for x in raw]))):
                    rows.append({**base_row(a, dm, device_name), 'family': fam, 'sampler': label, 'steps': steps, 'nfe': nfe,
                                 'decoding': dec, **r4(score(masks, vs.context, tgt)), 'epochs': a.epochs, 'batch_size': a.batch_size,
                                 'base_lr': a.lr, 'aux_loss_weight': a.aux_loss_weight,
                                 **({'prediction_type': a.prediction_type} if fam == 'diffusion' else {}),
                                 'network': f'DiT hidden={a.hidden} depth={a.depth} patch=4', 'params': sum(p.numel() for p in module.net.parameters()),
                                 'final_val_loss': round(float(trainer.callback_metrics['val_loss']), 4),
                                 'train_wall_s': round(wall, 1), 'train_cpu_s': round(cpu, 1)})
                    print(json.dumps(rows[-1]), flush=True)
                if a.figure: save_figure(a.figure, vs.context, tgt, raw > 0, f'{fam}, {label} {steps} steps, {a.epochs} epochs: '
                                         f"best-of-{a.n_samples} IoU {rows[-2]['best_of_n_iou']:.2f}")
    if not a.no_write:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix('.json.tmp'); tmp.write_text(json.dumps(old + rows, indent=1) + '\n'); os.replace(tmp, RESULTS)

if __name__ == '__main__':
    main()
