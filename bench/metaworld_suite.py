"""MetaWorld suite in DP3's / ManiFlow's protocol: ManiFlow and DP3 on point clouds, per task and per difficulty group.

    python bench/metaworld_suite.py [--tasks default|easy|medium|hard|very_hard|all|T1,T2,...] [--policies maniflow,dp3]
                                    [--device cpu|cuda] [--paper-size] [--seeds 0] [--budget-minutes 90] [--steps N]
                                    [--episodes 20] [--eval-seeds 0,1,2] [--n-procs 1] [--trainer lightning|legacy]
                                    [--data-dir data/metaworld_suite] [--out-dir runs/metaworld_suite]
                                    [--override KEY=VALUE ...] [--dry-run] [--no-save] [--table]

Protocol (DP3, arXiv 2403.03954; ManiFlow, arXiv 2509.01819): 10 scripted-expert demos per task (`maniflow-demos
--point-cloud`, 512 XYZ points from one camera (corner4) + the 9-d agent state, cached in `--data-dir`), one training
run per (policy, task, training seed), success rate of the last checkpoint's EMA weights over 20 episodes on each of
the evaluation seeds 0, 1, 2 (`evaluate_checkpoint`). Timeline T/To/Ta = 4/2/3 for both (the configs
`maniflow_pointcloud_metaworld` and `dp3_metaworld`). One JSON row per (policy, task, training seed) is appended to
bench/results/metaworld_suite.json as soon as it finishes (read-modify-write through a temp file under a lock); a rerun
skips every row already recorded with the same parameters (`params_id`), so the suite resumes task by task, and an
interrupted training resumes from its run dir's last checkpoint. `--table` renders the Markdown table (per task, per
difficulty group, ours next to the published aggregates) of the rows recorded with the parameters the other options
give (`--table --paper-size` for the paper-size rows) to stdout and bench/results/metaworld_suite.md.

Difficulty groups: DP3's paper (Appendix, following Seo et al. 2022, "Masked World Models") classifies the 50 MetaWorld
tasks as easy (28), medium (11), hard (6) and very hard (5); `GROUPS` below is that split (v3 names). The DP3 repository
(github:YanjieZe/3D-Diffusion-Policy @ 47385d9d6f5bde3f2ebdf2400ecb8261cc9e6b97) and ManiFlow's (github:geyan21/
ManiFlow_Policy @ c631661a5ea4948e13f5ac0c2ec8026576c1f191) ship one task config per MetaWorld task
(3D-Diffusion-Policy/diffusion_policy_3d/config/task/metaworld_<task>.yaml) but no difficulty list; the split is the
paper's table. Default tasks (`--tasks default`): 8 easy + 2 medium with short expert episodes (cheap rollouts).

Differences from the papers, on purpose: DP3 reports the mean of the 5 best of the periodic evaluations (every 200
epochs) of each seed; we evaluate the final EMA checkpoint once (no selection on the test episodes), which can only be
lower. MetaWorld v3 (the papers used v2); ManiFlow without its T5 language tokens (no hub weights here).

Sizes
-----
`--paper-size` (for `--device cuda`; training seeds 0,1,2 by default): ManiFlow = `policy=maniflow_pointcloud_paper`
(DiT-X 12 x 768, ~180 M parameters) with ManiFlow's MetaWorld training (batch 384, AdamW 1e-4, 500 warm-up steps,
3010 epochs); DP3 = UNet down_dims [512,1024,2048], step embedding 128, DP3's training (batch 128, lr 1e-4, weight decay
1e-6, 500 warm-up steps, 3000 epochs).

CPU size (the default; training seed 0), `CPU_SIZE`: batch 64, lr 1e-3 with 50 warm-up steps then cosine, EMA on,
a fixed number of optimizer steps (whole epochs: steps / ceil(windows / 64); 10 demos give ~575 windows, 9 steps/epoch).
  ManiFlow: the config's CPU DiT-X (2 x 64, ManiFlow's MetaWorld tokens: 64 FPS points x width 128 + state 64;
            0.52 M parameters), 600 steps.
  DP3:      the config's CPU UNet (down_dims [64,128,256], step embedding 64) with a half-width PointNet
            (pointnet_hidden [32,64,128], DP3: [64,128,256]; output 64 as DP3), 400 steps.
Sizing, measured end to end on button-press-v3 (AMD EPYC, 2 cores shared with 3 other agents, OMP_NUM_THREADS=1,
load average 3-4; the rows are in bench/results/metaworld_suite.json):
  ManiFlow 600 steps: demos 9 s, training 117 s (~5.1 steps/s), evaluation 64 s for 60 episodes of mean length 60
           (17.6 ms per env step: render + point cloud + a policy call every 3 steps); success 1.00 (1.00/1.00/1.00).
  DP3 at the config's CPU size (PointNet [64,128,256], 5.07 M parameters), 600 steps: training 536 s (~1.1 steps/s:
           the PointNet over 512 points x To=2 x 64 dominates; a step in isolation: 0.59 s, with PointNet [32,64,128]
           0.25 s, with UNet [32,64,128] instead 0.74 s, i.e. the UNet width hardly matters), evaluation 164 s for mean
           length 116 (23 ms per step); success 0.60 (0.60/0.55/0.65). Too slow for the suite, hence the half-width
           PointNet and 400 steps (about the same ~2-3 min of training per task as ManiFlow).
  DP3 at the suite's CPU size (PointNet [32,64,128], 5.03 M parameters), 400 steps: training 173 s (~2.3 steps/s),
           evaluation 78 s for mean length 65; success 0.97 (0.95/1.00/0.95).
  Extrapolation to the default suite (10 tasks x 2 policies, one training seed), assuming a mean episode length of
  ~110 steps over the suite (failures run the full 200): demos 10 x ~15 s; ManiFlow 10 x (117 s + ~116 s eval);
  DP3 10 x (173 s + ~155 s eval) -> ~5600 s = ~93 min. Evaluation is ~40 % of it and grows with failures (a task at
  0 % costs ~3.5 s per episode, ~210 s per evaluation); `--budget-minutes 90` starts no run that would end past 90 min
  (estimated from the runs so far) and a rerun resumes where it stopped. Run it in the background, e.g.
  `OMP_NUM_THREADS=1 nohup python bench/metaworld_suite.py --budget-minutes 90 > metaworld_suite.log 2>&1 &`.
"""
import argparse, datetime, hashlib, json, math, os, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from success import append_rows, device_name   # the benchmark row helpers (atomic append under a lock, device label)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'/'metaworld_suite.json'
TABLE = RESULTS.with_suffix('.md')

GROUPS = {   # DP3 paper's MetaWorld difficulty split (Seo et al. 2022), MetaWorld v3 names
    'easy': ['button-press', 'button-press-topdown', 'button-press-topdown-wall', 'button-press-wall', 'coffee-button',
             'dial-turn', 'door-close', 'door-lock', 'door-open', 'door-unlock', 'drawer-close', 'drawer-open',
             'faucet-close', 'faucet-open', 'handle-press', 'handle-press-side', 'handle-pull', 'handle-pull-side',
             'lever-pull', 'plate-slide', 'plate-slide-back', 'plate-slide-back-side', 'plate-slide-side', 'reach',
             'reach-wall', 'window-close', 'window-open', 'peg-unplug-side'],
    'medium': ['basketball', 'bin-picking', 'box-close', 'coffee-pull', 'coffee-push', 'hammer', 'peg-insert-side',
               'push-wall', 'soccer', 'sweep', 'sweep-into'],
    'hard': ['assembly', 'hand-insert', 'pick-out-of-hole', 'pick-place', 'push', 'push-back'],
    'very_hard': ['shelf-place', 'disassemble', 'stick-pull', 'stick-push', 'pick-place-wall']}
GROUPS = {g: [f'{t}-v3' for t in ts] for g, ts in GROUPS.items()}
GROUP_OF = {t: g for g, ts in GROUPS.items() for t in ts}
DEFAULT_TASKS = ['button-press-v3', 'button-press-topdown-v3', 'coffee-button-v3', 'door-close-v3', 'drawer-close-v3',
                 'drawer-open-v3', 'handle-press-v3', 'plate-slide-v3',     # 8 easy
                 'box-close-v3', 'sweep-into-v3']                            # 2 medium
PUBLISHED = {'dp3': {'easy': 90.9, 'medium': 72.7, 'hard': 38.0}}   # DP3 paper, MetaWorld success (%) per group
CONFIGS = {'maniflow': 'maniflow_pointcloud_metaworld', 'dp3': 'dp3_metaworld'}
NAMES = {'maniflow': 'ManiFlow', 'dp3': 'DP3'}

CPU_SIZE = {   # per policy: optimizer steps per run, batch, lr, warm-up, extra overrides (the configs' CPU networks)
    'maniflow': dict(steps=600, batch=64, lr=1e-3, warmup=50, overrides=[]),
    'dp3': dict(steps=400, batch=64, lr=1e-3, warmup=50, overrides=['policy.encoder.pointnet_hidden=[32,64,128]'])}
PAPER_SIZE = {   # the papers' networks and training (epochs, not steps); lr/batch None: the config's
    'maniflow': dict(epochs=3010, batch=None, lr=None, warmup=None, overrides=['policy=maniflow_pointcloud_paper']),
    'dp3': dict(epochs=3000, batch=128, lr=1e-4, warmup=500,
                overrides=['policy.unet.down_dims=[512,1024,2048]', 'policy.unet.diffusion_step_embed_dim=128'])}
DEMOS, N_POINTS = 10, 512

def resolve_tasks(spec:str) -> list:
    "Task list from `default`, a group name, `all`, or comma-separated names (groups and tasks may be mixed)."
    out = []
    for s in spec.split(','):
        s = s.strip()
        ts = (DEFAULT_TASKS if s == 'default' else [t for g in GROUPS.values() for t in g] if s == 'all'
              else GROUPS.get(s) or [s if s.endswith('-v3') else f'{s}-v3'])
        for t in ts:
            if t not in GROUP_OF: raise SystemExit(f"metaworld_suite: unknown task '{t}' (not in DP3's 50-task split)")
            if t not in out: out.append(t)
    return out

def run_params(policy:str, a) -> dict:
    "Everything that defines a row's result (hashed into `params_id`; a rerun skips rows with the same id)."
    size = dict((PAPER_SIZE if a.paper_size else CPU_SIZE)[policy])
    if a.steps: size = {**size, 'steps': a.steps, 'epochs': None}     # a smoke run / another budget
    return {'size': 'paper' if a.paper_size else 'cpu', 'config': CONFIGS[policy], 'trainer': a.trainer, 'demos': DEMOS,
            'n_points': N_POINTS, 'episodes': a.episodes, 'eval_seeds': a.eval_seeds, **size,
            'overrides': size['overrides'] + list(a.override)}

def params_id(p:dict) -> str:
    return hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]

def done_keys(path:Path=RESULTS) -> set:
    "(policy, task, training seed, params_id) of the recorded rows."
    rows = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else []
    return {(r['policy'], r['task'], r['train_seed'], r['params_id']) for r in rows}

def make_store(task:str, data_dir:Path) -> Path:
    "10 point-cloud expert demos of `task` (cached; written to a temp dir first, so a killed run leaves no half store)."
    store = data_dir/f'pc_{task}_{DEMOS}x{N_POINTS}.zarr'
    if not store.exists():
        from maniflow_nb.demos import demos_cli
        tmp = store.with_name(store.name + '.tmp'); data_dir.mkdir(parents=True, exist_ok=True)
        demos_cli(['--task', task, '--episodes', str(DEMOS), '--point-cloud', '--n-points', str(N_POINTS),
                   '--out', str(tmp), '--overwrite', '--quiet'])
        os.replace(tmp, store)
    return store

def base_overrides(task:str, store:Path, p:dict) -> list:
    ov = [f'task.name={task}', f'task.dataset_path={store}']
    if p['batch'] is not None: ov.append(f'training.batch_size={p["batch"]}')
    return ov + p['overrides']

def n_epochs(policy:str, task:str, store:Path, p:dict) -> tuple:
    "(epochs, training windows, steps per epoch): `p['epochs']`, or whole epochs giving about `p['steps']` steps."
    from maniflow_nb.config import compose_config
    from maniflow_nb.dataset import make_datasets
    cfg = compose_config(CONFIGS[policy], base_overrides(task, store, p))
    n, batch = len(make_datasets(cfg)[0]), cfg.training.batch_size
    per_epoch = math.ceil(n / batch)
    return (p['epochs'] if p.get('epochs') else max(1, math.ceil(p['steps'] / per_epoch))), n, per_epoch

def train(policy, task, store, run_dir, epochs, seed, p, a) -> float:
    "One training run through `maniflow_nb.train.main` (resumes an interrupted run in `run_dir`); wall seconds."
    from maniflow_nb.train import main
    ov = base_overrides(task, store, p) + [
        f'run_dir={run_dir}', f'training.num_epochs={epochs}', f'training.seed={seed}', 'training.resume=true',
        f'training.val_every={max(1, epochs // 4)}', 'training.sample_every=0', f'training.checkpoint_every={epochs}',
        f'trainer={a.trainer}', 'trainer.progress_bar=false', 'logger=csv',
        f'trainer.accelerator={"gpu" if a.device == "cuda" else "cpu"}']
    if p['lr'] is not None: ov.append(f'training.learning_rate={p["lr"]}')
    if p['warmup'] is not None: ov.append(f'training.lr_warmup_steps={p["warmup"]}')
    t0 = time.time()
    main(['--config-name', CONFIGS[policy], *ov])
    return time.time() - t0

def evaluate(run_dir:Path, a) -> tuple:
    "Success of `last.ckpt`'s EMA weights, `--episodes` per evaluation seed; (eval record, wall seconds)."
    from maniflow_nb.evaluate import evaluate_checkpoint
    t0 = time.time()
    rec = evaluate_checkpoint(run_dir/'checkpoints'/'last.ckpt', episodes=a.episodes, seeds=a.eval_seeds,
                              n_procs=a.n_procs, device='gpu' if a.device == 'cuda' else 'cpu')
    return rec, time.time() - t0

def n_parameters(run_dir:Path) -> int:
    from maniflow_nb.checkpoint import load_policy_from_checkpoint
    return sum(t.numel() for t in load_policy_from_checkpoint(run_dir/'checkpoints'/'last.ckpt').parameters())

def bench_one(policy:str, task:str, seed:int, p:dict, a) -> dict:
    "Demos (cached), training and evaluation of one (policy, task, training seed); the result row."
    import torch
    t0 = time.time()
    store = make_store(task, Path(a.data_dir)); demos_s = time.time() - t0
    epochs, windows, per_epoch = n_epochs(policy, task, store, p)
    run_dir = Path(a.out_dir)/f'{policy}_{task}_seed{seed}_{params_id(p)}'
    train_s = train(policy, task, store, run_dir, epochs, seed, p, a)
    rec, eval_s = evaluate(run_dir, a)
    return {'device': device_name(a.device), 'torch': torch.__version__,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'load_avg_1m': round(os.getloadavg()[0], 2), 'policy': policy, 'task': task, 'group': GROUP_OF[task],
            'train_seed': seed, 'params_id': params_id(p), **p, 'obs': 'point_cloud+agent_pos', 'camera': 'corner4',
            'n_parameters': n_parameters(run_dir), 'epochs': epochs, 'train_windows': windows,
            'optimizer_steps': epochs * per_epoch, 'success_mean': rec['test_mean_score'],
            'success_per_seed': {str(s): rec[f'success_seed{s}'] for s in a.eval_seeds},
            'mean_length': rec['mean_length'], 'demos_seconds': round(demos_s, 1), 'train_seconds': round(train_s, 1),
            'eval_seconds': round(eval_s, 1), 'run_dir': str(run_dir)}

def plan(a) -> list:
    "(policy, task, training seed, params) still to run, task by task."
    done = set() if a.no_save else done_keys(Path(a.results))
    todo = []
    for task in a.tasks:
        for policy in a.policies:
            p = run_params(policy, a)
            todo += [(policy, task, s, p) for s in a.seeds if (policy, task, s, params_id(p)) not in done]
    return todo

def run_suite(a) -> list:
    "Run what `plan` leaves, appending each row as it finishes; stops before a run that would exceed the budget."
    todo, rows, t0 = plan(a), [], time.time()
    print(f'{len(todo)} run(s) to do', flush=True)
    for i, (policy, task, seed, p) in enumerate(todo):
        spent = time.time() - t0; per_run = spent / len(rows) if rows else 0
        if a.budget_minutes and spent + per_run > a.budget_minutes * 60:
            print(f'budget of {a.budget_minutes} min reached after {len(rows)} run(s); {len(todo) - i} left (rerun to resume)')
            break
        print(f'--- [{i + 1}/{len(todo)}] {policy} {task} seed {seed} ({p["size"]} size)', flush=True)
        if a.dry_run: continue
        row = bench_one(policy, task, seed, p, a); rows.append(row)
        print(json.dumps(row), flush=True)
        if not a.no_save: append_rows([row], Path(a.results))
    return rows

def _pct(xs): return f'{100 * sum(xs) / len(xs):.1f}' if xs else '–'

def render_table(rows:list, ids:dict=None) -> str:
    "Markdown: success (%) per task and per difficulty group, ours next to the published aggregates."
    keep = [r for r in rows if ids is None or ids.get(r['policy']) == r['params_id']]   # this suite's parameters only
    pols = [p for p in CONFIGS if any(r['policy'] == p for r in keep)]
    tasks = sorted({r['task'] for r in keep}, key=lambda t: (list(GROUPS).index(GROUP_OF[t]), t))
    cell = lambda pol, ts: [r['success_mean'] for r in keep if r['policy'] == pol and r['task'] in ts]
    runs = lambda pol, t: f"{_pct(cell(pol, [t]))} ({len(cell(pol, [t]))} seed{'s' * (len(cell(pol, [t])) != 1)})"
    size = ', '.join(sorted({r['size'] for r in keep})) or '–'
    out = ['# MetaWorld suite (point clouds, 10 demos, 20 episodes x 3 evaluation seeds)', '',
           f'{size} size; ' + '; '.join(f"{NAMES[p]}: {next(r['params_id'] for r in keep if r['policy'] == p)}" for p in pols)
           + f" (params_id); {', '.join(sorted({r['device'] for r in keep}))}", '',
           '| task | group | ' + ' | '.join(f'{NAMES[p]} (ours)' for p in pols) + ' |', '|---|---|' + '---|' * len(pols)]
    out += [f'| {t} | {GROUP_OF[t]} | ' + ' | '.join(runs(p, t) for p in pols) + ' |' for t in tasks]
    out += ['', '| group | tasks | ' + ' | '.join(f'{NAMES[p]} (ours)' for p in pols) + ' | DP3 (published) |',
            '|---|---|' + '---|' * (len(pols) + 1)]
    for g, ts in GROUPS.items():
        mine = [t for t in tasks if t in ts]
        if not mine and g not in PUBLISHED['dp3']: continue
        means = {p: [sum(c) / len(c) for t in mine if (c := cell(p, [t]))] for p in pols}   # mean over tasks of seed means
        out.append(f'| {g} | {len(mine)}/{len(ts)} | ' + ''.join(f'{_pct(means[p])} | ' for p in pols) +
                   f'{PUBLISHED["dp3"].get(g, "–")} |')
    out += ['', 'Published: DP3 paper (Ze et al. 2024), MetaWorld success per group over all its tasks (3 seeds, mean of '
            'the 5 best periodic evaluations). Ours: the final EMA checkpoint, evaluated once.']
    if n := len(rows) - len(keep): out.append(f'{n} recorded row(s) with other parameters are not in this table.')
    return '\n'.join(out) + '\n'

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tasks', default='default', help='default | easy | medium | hard | very_hard | all | comma-separated tasks')
    p.add_argument('--policies', default='maniflow,dp3')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--paper-size', action='store_true', help="the papers' networks and epochs (for --device cuda)")
    p.add_argument('--seeds', default=None, help='training seeds (default: 0; 0,1,2 with --paper-size)')
    p.add_argument('--budget-minutes', type=float, default=0, help='start no run that would end past this (0: no limit)')
    p.add_argument('--steps', type=int, default=0, help='optimizer steps per run instead of the size table (0: the table)')
    p.add_argument('--episodes', type=int, default=20); p.add_argument('--eval-seeds', default='0,1,2')
    p.add_argument('--n-procs', type=int, default=1, help='evaluation worker processes')
    p.add_argument('--trainer', default='lightning', choices=['lightning', 'legacy'])
    p.add_argument('--data-dir', default=str(ROOT/'data'/'metaworld_suite'))
    p.add_argument('--out-dir', default=str(ROOT/'runs'/'metaworld_suite'))
    p.add_argument('--results', default=str(RESULTS), help=argparse.SUPPRESS)
    p.add_argument('--override', action='append', default=[], help='extra Hydra override for every run (repeatable)')
    p.add_argument('--dry-run', action='store_true', help='list the runs still to do, run nothing')
    p.add_argument('--no-save', action='store_true', help='print the rows only')
    p.add_argument('--table', action='store_true',
                   help='render the table of the rows recorded with the parameters these options give, and exit')
    a = p.parse_args(argv)
    a.tasks, a.policies = resolve_tasks(a.tasks), [s.strip() for s in a.policies.split(',')]
    if bad := [q for q in a.policies if q not in CONFIGS]: p.error(f'unknown policies {bad}; choose from {list(CONFIGS)}')
    a.seeds = [int(s) for s in (a.seeds or ('0,1,2' if a.paper_size else '0')).split(',')]
    a.eval_seeds = [int(s) for s in a.eval_seeds.split(',')]
    return a

def main(argv=None):
    a = parse(argv)
    if a.table:
        path = Path(a.results)
        ids = {q: params_id(run_params(q, a)) for q in a.policies}   # the rows of the suite these options define
        md = render_table(json.loads(path.read_text()) if path.exists() else [], ids)
        print(md, end=''); path.with_suffix('.md').write_text(md)
        return
    os.environ.setdefault('MUJOCO_GL', 'egl'); os.environ.setdefault('WANDB_MODE', 'offline')
    rows = run_suite(a)
    if rows: print(f"mean success over {len(rows)} run(s): {sum(r['success_mean'] for r in rows) / len(rows):.3f}")

if __name__ == '__main__': main()
