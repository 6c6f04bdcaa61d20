#!/usr/bin/env python
"""IoU of generated NAMO target-goal masks after a short training run, for flow matching and diffusion.

Generates seeded procedural scenes, trains each family with the packaged configs (the same `train_generative` code
path as the CLI), then measures the IoU of the thresholded generated mask vs the ground truth on the whole validation
set for a few samplers, next to trivial baselines that need no model. Appends rows to bench/results/generative_iou.json.

    OMP_NUM_THREADS=1 python bench/generative_iou.py                 # short CPU run (~5 min of CPU, 2 x 2.5 min training)
    OMP_NUM_THREADS=1 python bench/generative_iou.py --epochs 20 --aux-loss-weight 0   # the first, shorter recorded run
    python bench/generative_iou.py --device cuda --epochs 200 --image-size 64 --hidden 256 --depth 6
"""
import argparse, contextlib, datetime, io, json, os, platform, sys, tempfile, time
from pathlib import Path
import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from maniflow_nb.config import compose_config
from maniflow_nb.scenes import gen_scenes
from maniflow_nb.generative import mask_iou, train_generative

RESULTS = Path(__file__).resolve().parent / 'results' / 'generative_iou.json'
SAMPLERS = {  # family -> [(sampler config overrides, label, steps)]
    'flow_matching': [({'method': 'euler', 'steps': 10}, 'euler', 10), ({'method': 'midpoint', 'steps': 5}, 'midpoint', 5),
                      ({'method': 'dopri5', 'steps': 1}, 'dopri5', 0)],
    'diffusion': [({'sampler_type': 'ddim', 'steps': 20}, 'ddim', 20), ({'sampler_type': 'ddim', 'steps': 50}, 'ddim', 50),
                  ({'sampler_type': 'ddpm', 'steps': 100}, 'ddpm', 100)],
}
CONFIGS = {'flow_matching': 'train_fb_flow_matching', 'diffusion': 'train_hf_diffusion'}

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--n-scenes', type=int, default=1000, help='scenes generated (10%% validation)')
    p.add_argument('--image-size', type=int, default=32)
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument('--depth', type=int, default=3)
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--aux-loss-weight', type=float, default=0.1)
    p.add_argument('--families', default='flow_matching,diffusion')
    p.add_argument('--no-write', action='store_true', help='print rows without appending them to the results file')
    return p.parse_args()

def overrides(a, run_dir, data_dir):
    "Config overrides of the bench run (one validation pass, at the end)."
    acc = 'gpu' if a.device == 'cuda' else 'cpu'
    return [f'run_dir={run_dir}', f'gen_data.data_dir={data_dir}', f'image_size={a.image_size}', f'batch_size={a.batch_size}',
            f'max_epochs={a.epochs}', f'base_lr={a.lr}', f'model.network.hidden={a.hidden}', f'model.network.depth={a.depth}',
            'model.lr_warmup_steps=50', f'model.aux_loss_weight={a.aux_loss_weight}', f'trainer.accelerator={acc}', 'trainer.progress_bar=none',
            f'trainer.check_val_every_n_epoch={a.epochs}', 'trainer.num_sanity_val_steps=0']

@torch.no_grad()
def val_iou(module, val_set, sampler_cfg, device, batch=64):
    "Mean IoU over the validation set of masks generated with `sampler_cfg`, and the sampler's NFE per batch."
    base = dict(module.hparams.sampler); base.update(sampler_cfg)
    module.sampler = instantiate(base); module.eval().to(device)
    g, ious, nfe = torch.Generator(device).manual_seed(0), [], []
    for i in range(0, len(val_set), batch):
        ctx, tgt = val_set.context[i:i+batch].to(device), val_set.target[i:i+batch].to(device)
        ious.append(mask_iou(module.generate(ctx, generator=g) > 0, tgt > 0.5)); nfe.append(module.sampler.nfe)
    return torch.cat(ious).mean().item(), max(nfe)

def baselines(val_set):
    "IoU of masks that need no model: the target object where it is now, and the whole goal region."
    tgt = val_set.target > 0.5
    return {'target_object_now': mask_iou(val_set.context[:, 4:5] > 0.5, tgt).mean().item(),
            'goal_region': mask_iou(val_set.context[:, 1:2] > 0.5, tgt).mean().item()}

def base_row(a, dm, device_name):
    return dict(device=device_name, torch=torch.__version__, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                image_size=a.image_size, train_size=len(dm.train_set), val_size=len(dm.val_set),
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                load_avg_1min=round(os.getloadavg()[0], 2), host_cpus=os.cpu_count())

def main():
    a = parse_args()
    device_name = torch.cuda.get_device_name(0) if a.device == 'cuda' else f'cpu ({platform.processor() or platform.machine()})'
    rows = []
    with tempfile.TemporaryDirectory() as d:
        data = gen_scenes(a.n_scenes, Path(d) / 'scenes', seed=1234, progress=False)
        for fam in a.families.split(','):
            cfg = compose_config(CONFIGS[fam], overrides(a, Path(d) / fam, data))
            t0, c0 = time.time(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()): trainer, module = train_generative(cfg)
            wall, cpu = time.time() - t0, time.process_time() - c0
            dm = trainer.datamodule
            if not rows:
                rows += [{**base_row(a, dm, device_name), 'family': 'baseline', 'sampler': k, 'steps': 0, 'iou': round(v, 4)}
                         for k, v in baselines(dm.val_set).items()]
            for scfg, label, steps in SAMPLERS[fam]:
                iou, nfe = val_iou(module, dm.val_set, scfg, a.device)
                rows.append({**base_row(a, dm, device_name), 'family': fam, 'sampler': label, 'steps': steps, 'nfe': nfe,
                             'iou': round(iou, 4), 'epochs': a.epochs, 'batch_size': a.batch_size, 'base_lr': a.lr,
                             'aux_loss_weight': a.aux_loss_weight,
                             'network': f'DiT hidden={a.hidden} depth={a.depth} patch=4', 'params': sum(p.numel() for p in module.net.parameters()),
                             'final_val_loss': round(float(trainer.callback_metrics['val_loss']), 4),
                             'train_wall_s': round(wall, 1), 'train_cpu_s': round(cpu, 1)})
                print(json.dumps(rows[-1]), flush=True)
    for r in rows[:2]: print(json.dumps(r))
    if not a.no_write:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix('.json.tmp'); tmp.write_text(json.dumps(old + rows, indent=1) + '\n'); os.replace(tmp, RESULTS)

if __name__ == '__main__':
    main()
