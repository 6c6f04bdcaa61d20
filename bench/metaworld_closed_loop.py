"""Closed-loop precision of a MetaWorld suite policy: where and how far its behaviour departs from the scripted expert's.

    python bench/metaworld_closed_loop.py --task sweep-into-v3 [--policy maniflow] [--ckpt PATH]
        [--modes closed,expert,handover,takeover,sensitivity] [--k 15,30,45,60,90] [--episodes 20] [--eval-seeds 0,1,2]
        [--handover-seeds 0] [--scenes eval|train] [--max-steps N] [--sens-steps 0,3,6] [--traces traces.npz] [--no-save]

The checkpoint (default: the suite's run `runs/metaworld_suite/<policy>_<task>_seed0_<params_id>/checkpoints/last.ckpt`,
EMA weights) is played exactly as `bench/metaworld_suite.py` evaluates it: `MetaWorldRunner.from_config` gives the
environment, observations, To/Ta and the episodes (scene seed `episode_seed(s, j, 'eval')`), and every episode is
`maniflow_nb.envs.rollout` (same per-episode noise generator, so `closed` reproduces the suite's per-episode results).
The only addition is a proxy around the `MetaWorldEnv` that, at every step, also asks the scripted expert for its
action at the current state (`env.expert_action()`), records hand / object / goal positions, and decides who acts:

  closed    the policy acts throughout (the suite's evaluation) - on-policy action error ("DAgger check");
  expert    the expert acts throughout, the policy's chunks are only scored - off-policy error along the expert's own
            trajectory on held-out scenes (the policy sees exactly the observations the expert produces);
  handover  the policy acts for the first k steps, then the expert (does the expert recover from the policy's state?);
  takeover  the expert acts for the first k steps, then the policy (which phase can the policy not do?);
  sensitivity  offline, on the demos of the policy's own store (`--sens-steps`): how much the policy's first executed
            action at step t of demo e changes when only the point cloud, only the agent state, or both come from demo
            e+1 at the same step, next to how much the expert's actions differ (same sampling noise for every variant);
            for ManiFlow also how many of its farthest-point-sampled point tokens land on the object.

Action error: |policy - expert| of the clipped actions, xyz as an L2 norm (one action unit moves the hand's mocap by
1 cm per step) and gripper as |difference|. Phases come from the state with the expert's own thresholds (the first two
branches of MetaWorld's `Sawyer<Task>V3Policy._desired_pos` in `PHASES`): `approach` (hand xy farther than `xy_tol`
from the expert's target over the object), `descend` (xy aligned, z off by more than `z_tol`), `interact` (both within:
the expert grasps / sweeps / pushes from here). Per episode: the hand's xy offset from that target when it first comes
down to the object's height (`descent_xy_cm`, the precision of the approach), how far the object had moved before
(`obj_moved_before_cm`: knocked on the way in; not on box-close, whose lid settles ~8 cm in z over the first ~12
steps), whether the `interact` state was ever reached, the object's lift
(`lift_cm`), its closest distance to the goal and its start's distance to the nearest demo's (`nearest_demo_cm`).
`--scenes train` plays the demos' own scene stream (`episode_seed(0, j, 'train')`: the first successful ones are the
demos) instead of the held-out one. One record per (task, checkpoint, scenes, mode, k, episodes, seeds) is
written into bench/results/metaworld_closed_loop.json (replacing a record with the same key).

The recorded rows (ManiFlow = the suite's CPU-size checkpoints; `--policy dp3` for DP3's):
    python bench/metaworld_closed_loop.py --task sweep-into-v3                       # closed, expert, handover, takeover
    python bench/metaworld_closed_loop.py --task sweep-into-v3 --modes closed,expert --scenes train --episodes 12 --eval-seeds 0
    python bench/metaworld_closed_loop.py --task box-close-v3 --k 15,30,60,90
    python bench/metaworld_closed_loop.py --task box-close-v3 --modes handover --k 60,90 --max-steps 320
    python bench/metaworld_closed_loop.py --task T --policy P --modes sensitivity [--sens-steps 0,3,6,12,24]
        for T in sweep-into, box-close, drawer-open, plate-slide, button-press, coffee-button and P in maniflow, dp3
`tools/bench_page.py` renders two tables of them into the WHY text of nbs/benchmarks.ipynb.

Cost (2 shared cores, OMP_NUM_THREADS=1): ~18 ms per env step (render + point cloud, a policy call every 3 steps);
a failing episode runs the full 200 steps (~3.5 s), 60 closed-loop episodes of a medium task ~3 min; the default
modes on sweep-into ~10 min, on box-close (k 15,30,60,90) ~12 min; sensitivity a few seconds.
"""
import argparse, datetime, json, os, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault('MUJOCO_GL', 'egl')
import numpy as np
from _common import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'/'metaworld_closed_loop.json'
PARAMS_ID = {'maniflow': '27d8120e7d', 'dp3': '26b01b7f4d'}   # the suite's CPU-size rows (bench/results/metaworld_suite.json)

# The expert's target for the hand relative to the object (obs[4:7]) and its alignment thresholds, from MetaWorld's
# scripted policies (metaworld/policies/sawyer_<task>_v3_policy.py): approach while |hand_xy - target_xy| > xy_tol,
# descend while |hand_z - target_z| > z_tol, then interact (grasp and carry / sweep / push).
PHASES = {'sweep-into-v3': dict(offset=(-0.005, 0.0, 0.01), xy_tol=0.04, z_tol=0.04),
          'box-close-v3': dict(offset=(0.0, 0.0, 0.02), xy_tol=0.01, z_tol=0.05),
          'drawer-open-v3': dict(offset=(0.0, 0.0, -0.02), xy_tol=0.06, z_tol=0.04),
          'plate-slide-v3': dict(offset=(0.0, -0.055, 0.03), xy_tol=0.03, z_tol=0.04)}
PHASE_NAMES = ('approach', 'descend', 'interact')

class Probe:
    "A `MetaWorldEnv` proxy for `rollout`: logs every step (state, policy and expert action) and lets `who(t)` act."
    def __init__(self, env, who):      # who(t) -> 'policy' | 'expert'
        self.env, self.who, self.log = env, who, []
    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.state, self.log = obs['full_state'], []
        return obs, info
    def step(self, action):
        a, e = np.clip(np.asarray(action, np.float32), -1, 1), self.env.expert_action()
        actor = self.who(len(self.log))
        self.log.append({'state': self.state, 'policy': a, 'expert': e, 'actor': actor})
        out = self.env.step(e if actor == 'expert' else a)
        self.state = out[0]['full_state']
        return out
    def render(self): return self.env.render()
    def close(self): self.env.close()

def schedule(mode:str, k:int):
    "who(t) for a mode: closed -> policy, expert -> expert, handover -> policy for t < k, takeover -> expert for t < k."
    return {'closed': lambda t: 'policy', 'expert': lambda t: 'expert',
            'handover': lambda t: 'policy' if t < k else 'expert', 'takeover': lambda t: 'expert' if t < k else 'policy'}[mode]

def episode_stats(log:list, task:str, success:float, length:int) -> dict:
    "Per-episode numbers from a Probe log (see the module docstring)."
    S = np.stack([s['state'] for s in log]).astype(np.float64)
    P, E = np.stack([s['policy'] for s in log]), np.stack([s['expert'] for s in log])
    hand, obj, goal = S[:, :3], S[:, 4:7], S[:, -3:]
    ph = PHASES.get(task, dict(offset=(0, 0, 0), xy_tol=0.03, z_tol=0.04))
    tgt = obj + np.array(ph['offset'])
    dxy, dz = np.linalg.norm(hand[:, :2] - tgt[:, :2], axis=1), np.abs(hand[:, 2] - tgt[:, 2])
    phase = np.where(dxy > ph['xy_tol'], 0, np.where(dz > ph['z_tol'], 1, 2))
    moved = np.linalg.norm(obj - obj[0], axis=1)
    down = np.flatnonzero(dz <= ph['z_tol'])                  # first time the hand is down at the object's height
    t_down = int(down[0]) if len(down) else None
    inter = np.flatnonzero(phase == 2); t_int = int(inter[0]) if len(inter) else None
    err_xyz, err_g = np.linalg.norm(P[:, :3] - E[:, :3], axis=1), np.abs(P[:, 3] - E[:, 3])
    by_phase = {n: {'steps': int((phase == i).sum()),
                    'err_xyz': _r(err_xyz[phase == i].mean()) if (phase == i).any() else None,
                    'err_grip': _r(err_g[phase == i].mean()) if (phase == i).any() else None} for i, n in enumerate(PHASE_NAMES)}
    return {'success': float(success), 'length': int(length),
            'policy_steps': int(sum(s['actor'] == 'policy' for s in log)),
            'err_xyz': _r(err_xyz.mean()), 'err_grip': _r(err_g.mean()), 'by_phase': by_phase,
            't_down': t_down, 'descent_xy_cm': _r(100 * dxy[t_down]) if t_down is not None else None,
            'hand_down_xy': [_r(x) for x in hand[t_down, :2]] if t_down is not None else None,
            'obj_moved_before_cm': _r(100 * moved[t_down]) if t_down is not None else _r(100 * moved.max()),
            't_interact': t_int, 'lift_cm': _r(100 * (obj[:, 2].max() - obj[0, 2])),
            'obj_goal_start_cm': _r(100 * np.linalg.norm(obj[0] - goal[0])),
            'obj_goal_min_cm': _r(100 * np.linalg.norm(obj - goal, axis=1).min()),
            'obj_goal_end_cm': _r(100 * np.linalg.norm(obj[-1] - goal[-1]))}

def _rel(p) -> str: p = Path(p).resolve(); return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)

def _r(x, n=4): return None if x is None else round(float(x), n)

def _mean(xs): xs = [x for x in xs if x is not None]; return _r(np.mean(xs)) if xs else None

def tracking(es:list) -> dict|None:
    "Does the hand come down where the object is? Per axis: slope and correlation of the hand's xy at descent on the object's start xy."
    es = [e for e in es if e['hand_down_xy'] is not None]
    if len(es) < 3: return None
    O, H = np.array([e['obj_start'][:2] for e in es]), np.array([e['hand_down_xy'] for e in es])
    return {ax: {'slope': _r(np.polyfit(O[:, i], H[:, i], 1)[0], 3), 'corr': _r(np.corrcoef(O[:, i], H[:, i])[0, 1], 3),
                 'obj_std_cm': _r(100 * O[:, i].std(), 2), 'hand_std_cm': _r(100 * H[:, i].std(), 2),
                 'hand_mean': _r(H[:, i].mean())} for i, ax in enumerate('xy')}

def aggregate(eps:list) -> dict:
    "Means over episodes, over all and split by outcome; per-phase errors weighted by steps."
    def agg(es):
        if not es: return None
        out = {'n': len(es), 'success': _mean([e['success'] for e in es]), 'mean_length': _mean([e['length'] for e in es]),
               'err_xyz': _mean([e['err_xyz'] for e in es]), 'err_grip': _mean([e['err_grip'] for e in es]),
               'reached_interact': _mean([e['t_interact'] is not None for e in es]),
               'descent_xy_cm': _mean([e['descent_xy_cm'] for e in es]),
               'obj_moved_before_cm': _mean([e['obj_moved_before_cm'] for e in es]),
               'lift_cm': _mean([e['lift_cm'] for e in es]), 'obj_goal_min_cm': _mean([e['obj_goal_min_cm'] for e in es])}
        for n in PHASE_NAMES:
            w = [(e['by_phase'][n]['steps'], e['by_phase'][n]['err_xyz'], e['by_phase'][n]['err_grip']) for e in es
                 if e['by_phase'][n]['steps']]
            st = sum(x[0] for x in w)
            out[f'{n}_steps'] = st
            out[f'{n}_err_xyz'] = _r(sum(a * b for a, b, _ in w) / st) if st else None
            out[f'{n}_err_grip'] = _r(sum(a * c for a, _, c in w) / st) if st else None
        out['descent_tracking'] = tracking(es)
        return out
    return {'all': agg(eps), 'success': agg([e for e in eps if e['success']]), 'failure': agg([e for e in eps if not e['success']])}

def demo_starts(store) -> np.ndarray:
    "(n_demos, 3) object start positions of the demos in a store (to flag the scenes that are training scenes)."
    import zarr
    z = zarr.open(str(store), mode='r'); ends = z['meta/episode_ends'][:]
    return np.asarray(z['data/full_state'].get_orthogonal_selection((np.r_[0, ends[:-1]], slice(4, 7))))

def play(policy, runner, mode:str, k:int, episodes:list, traces:dict=None, scenes:str='eval', demos=None) -> list:
    "Roll out (seed, episode) pairs with `rollout` through a Probe; per-episode stats (and raw logs into `traces`)."
    from maniflow_nb.envs import MetaWorldEnv, rollout, episode_seed
    env, out = Probe(MetaWorldEnv(runner.task, **runner.env_kwargs), schedule(mode, k)), []
    try:
        for s, j in episodes:
            r = rollout(env, policy, runner.obs_meta, runner.n_obs_steps, runner.n_action_steps, episode_seed(s, j, scenes))
            obj0 = env.log[0]['state'][4:7]
            near = None if demos is None else float(np.linalg.norm(demos[:, :2] - obj0[:2], axis=1).min())
            out.append({'seed': s, 'episode': j, 'obj_start': [_r(x) for x in obj0],
                        'nearest_demo_cm': _r(100 * near) if near is not None else None,
                        **episode_stats(env.log, runner.task, r['success'], r['length'])})
            if traces is not None:
                for key in ('state', 'policy', 'expert'):
                    traces[f'{scenes}_{mode}_k{k}_s{s}_e{j}_{key}'] = np.stack([x[key] for x in env.log])
            print(f"  {mode} k={k} seed {s} ep {j}: success {r['success']:.0f} len {r['length']} "
                  f"err_xyz {out[-1]['err_xyz']:.3f} descent_xy {out[-1]['descent_xy_cm']} cm", flush=True)
    finally: env.close()
    return out

def store_windows(store, shape_meta:dict, idx:list, n_obs_steps:int) -> dict:
    "Policy observations `{key: (B,To,...)}` of (episode, t) pairs of a store, the first frame repeated before t=0 (as `ObsWindow`)."
    import zarr
    from maniflow_nb.envs import to_policy
    z = zarr.open(str(store), mode='r'); ends = z['meta/episode_ends'][:]; starts = np.r_[0, ends[:-1]]
    rows = [[starts[e] + max(t - n_obs_steps + 1 + i, 0) for i in range(n_obs_steps)] for e, t in idx]
    return {k: to_policy(np.stack([z['data'][m.get('store_key', k)].get_orthogonal_selection((r,)) for r in rows]),
                         m.get('type', 'low_dim'), tuple(m['shape'])) for k, m in shape_meta['obs'].items()}

def sensitivity(policy, store, ts:list, seed:int=0) -> dict:
    """Offline, on the demos themselves: how much the policy's first executed action at (demo e, step t) changes when only
    the point cloud, only the agent state, or both are taken from another demo (e+1) at the same step, next to how much the
    expert's action differs between the two demos (fixed sampling noise: each variant is sampled with the same generator)."""
    import torch, zarr
    from omegaconf import OmegaConf
    z = zarr.open(str(store), mode='r'); ends = z['meta/episode_ends'][:]; starts = np.r_[0, ends[:-1]]; n = len(ends)
    lens = np.diff(np.r_[0, ends]); act = z['data/action']; meta = OmegaConf.to_container(policy.cfg.task.shape_meta)
    pc_key = next(k for k, m in meta['obs'].items() if m.get('type') == 'point_cloud')
    from maniflow_nb.timeline import Timeline
    To = Timeline.of(policy.cfg).n_obs_steps
    out = {}
    for t in ts:
        idx = [(e, t) for e in range(n) if t < lens[e] and t < lens[(e + 1) % n]]
        if not idx: continue
        a = store_windows(store, meta, idx, To); b = store_windows(store, meta, [((e + 1) % n, t) for e, _ in idx], To)
        variants = {'orig': a, 'pc_from_other': {**a, pc_key: b[pc_key]},
                    'state_from_other': {**b, pc_key: a[pc_key]}, 'other': b}
        pred = {v: policy.predict_action(o, generator=torch.Generator().manual_seed(seed))['action'][:, 0].numpy()
                for v, o in variants.items()}
        ea = np.stack([act[starts[e] + t] for e, _ in idx]); eb = np.stack([act[starts[(e + 1) % n] + t] for e, _ in idx])
        d = lambda x, y: _r(np.linalg.norm(x[:, :3] - y[:, :3], axis=1).mean())
        out[str(t)] = {'n': len(idx), 'err_vs_expert_xyz': d(pred['orig'], ea), 'expert_diff_xyz': d(ea, eb),
                       'policy_diff_pc_xyz': d(pred['pc_from_other'], pred['orig']),
                       'policy_diff_state_xyz': d(pred['state_from_other'], pred['orig']),
                       'policy_diff_both_xyz': d(pred['other'], pred['orig'])}
    return out

def fps_coverage(policy, store, ts:list, radius:float=0.03) -> dict|None:
    "ManiFlow only: fraction of demo frames whose FPS point tokens include one within `radius` (xy) of the object (obs[4:7])."
    import torch, zarr
    from maniflow_nb.maniflow import farthest_point_sample
    n_tok = getattr(getattr(policy, 'obs_encoder', None), 'n_point_tokens', None)
    if n_tok is None: return None
    z = zarr.open(str(store), mode='r'); ends = z['meta/episode_ends'][:]; starts = np.r_[0, ends[:-1]]
    rows = [starts[e] + t for e in range(len(ends)) for t in ts if t < ends[e] - starts[e]]
    pc = torch.as_tensor(np.stack([z['data/point_cloud'][r][:, :3] for r in rows])).float()
    obj = np.stack([z['data/full_state'][r][4:7] for r in rows])
    tok = pc.gather(1, farthest_point_sample(pc, n_tok)[..., None].expand(-1, -1, 3)).numpy()
    near = lambda P: (np.linalg.norm(P[..., :2] - obj[:, None, :2], axis=-1) < radius).sum(1)
    return {'n_frames': len(rows), 'n_point_tokens': int(n_tok), 'radius_cm': 100 * radius,
            'points_near_object_mean': _r(near(pc.numpy()).mean(), 2), 'tokens_near_object_mean': _r(near(tok).mean(), 2),
            'frames_with_a_token_near_object': _r((near(tok) > 0).mean(), 3)}

EPISODE_KEYS = {   # what a record keeps per episode (the summaries hold the rest)
    'closed': ('seed', 'episode', 'success', 'length', 'obj_start', 'nearest_demo_cm', 'hand_down_xy', 'descent_xy_cm',
               't_down', 't_interact', 'err_xyz', 'err_grip', 'obj_goal_min_cm'),
    'switch': ('seed', 'episode', 'success', 'length', 'descent_xy_cm')}

def compact(rec:dict) -> dict:
    "The record with its per-episode rows cut to `EPISODE_KEYS` (all of them for closed / expert, a few for the switches)."
    if 'episodes' not in rec: return rec
    keep = EPISODE_KEYS['closed' if rec['mode'] in ('closed', 'expert') else 'switch']
    return {**rec, 'episodes': [{k: e.get(k) for k in keep} for e in rec['episodes']]}

def dumps(recs:list) -> str:
    "JSON with one line per episode row (the records themselves indented)."
    out = []
    for r in recs:
        txt = json.dumps({**r, 'episodes': '@EPISODES@'} if 'episodes' in r else r, indent=1)
        if 'episodes' in r:
            rows = ',\n'.join(f'  {json.dumps(e)}' for e in r['episodes'])
            txt = txt.replace('"@EPISODES@"', f'[\n{rows}\n ]')
        out.append(txt)
    return '[\n' + ',\n'.join(out) + '\n]\n'

def update_records(recs:list, path:Path=RESULTS):
    "Write `recs` into the JSON list at `path`, replacing records with the same key; atomic."
    key = lambda r: (r['task'], r['checkpoint'], r.get('scenes', 'eval'), r.get('max_steps', 200), r['mode'], r['k'],
                     r['episodes_per_seed'], tuple(r['eval_seeds']))
    old = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else []
    new = {key(r) for r in recs}
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(dumps([compact(r) for r in old if key(r) not in new] + [compact(r) for r in recs])); os.replace(tmp, path)

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', default='sweep-into-v3'); p.add_argument('--policy', default='maniflow', choices=list(PARAMS_ID))
    p.add_argument('--ckpt', default=None, help="checkpoint (default: the suite's run of --policy on --task)")
    p.add_argument('--modes', default='closed,expert,handover,takeover')
    p.add_argument('--k', default='15,30,45,60,90', help='switch steps for handover / takeover')
    p.add_argument('--episodes', type=int, default=20, help='episodes per evaluation seed (closed, expert)')
    p.add_argument('--eval-seeds', default='0,1,2')
    p.add_argument('--scenes', default='eval', choices=['eval', 'train'],
                   help="scene stream: 'eval' (held out, as the suite) or 'train' (the demos' stream, seed 0: their own scenes)")
    p.add_argument('--max-steps', type=int, default=None, help="episode step limit (default: the config's, 200 as the suite)")
    p.add_argument('--handover-seeds', default='0', help='evaluation seeds of the handover / takeover episodes')
    p.add_argument('--sens-steps', default='0,3,6,9,12,15,18,24,30,40', help='sensitivity: demo steps t to probe')
    p.add_argument('--traces', default=None, help='also write the per-step logs to this .npz')
    p.add_argument('--no-save', action='store_true'); p.add_argument('--results', default=str(RESULTS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.modes, a.k = [m.strip() for m in a.modes.split(',')], [int(x) for x in a.k.split(',')]
    a.sens_steps = [int(x) for x in a.sens_steps.split(',')]
    a.eval_seeds, a.handover_seeds = [int(s) for s in a.eval_seeds.split(',')], [int(s) for s in a.handover_seeds.split(',')]
    a.ckpt = a.ckpt or str(ROOT/'runs'/'metaworld_suite'/f'{a.policy}_{a.task}_seed0_{PARAMS_ID[a.policy]}'/'checkpoints'/'last.ckpt')
    return a

def main(argv=None):
    a = parse(argv)
    import torch
    from maniflow_nb.checkpoint import load_policy_from_checkpoint
    from maniflow_nb.envs import MetaWorldRunner
    policy = load_policy_from_checkpoint(a.ckpt, use_ema=True)
    runner = MetaWorldRunner.from_config(policy.cfg, n_episodes=a.episodes, seeds=a.eval_seeds,
                                         **({'max_steps': a.max_steps} if a.max_steps else {}))
    traces = {} if a.traces else None
    store = Path(policy.cfg.task.dataset_path); demos = demo_starts(store) if store.exists() else None
    recs = []
    if 'sensitivity' in a.modes:
        rec = {'device': cpu_name(), 'torch': torch.__version__,
               'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               'load_avg_1m': round(os.getloadavg()[0], 2), 'task': a.task, 'policy': policy.cfg.get('name', a.policy),
               'policy_kind': a.policy, 'checkpoint': _rel(a.ckpt), 'use_ema': True, 'scenes': 'demos', 'mode': 'sensitivity',
               'k': None, 'episodes_per_seed': None, 'eval_seeds': [], 'store': _rel(store), 'steps': a.sens_steps,
               'sensitivity': sensitivity(policy, store, a.sens_steps), 'fps_coverage': fps_coverage(policy, store, a.sens_steps)}
        print(json.dumps(rec['sensitivity'], indent=1), json.dumps(rec['fps_coverage']), flush=True)
        if not a.no_save: update_records([rec], Path(a.results))
    for mode in [m for m in a.modes if m != 'sensitivity']:
        seeds = a.eval_seeds if mode in ('closed', 'expert') else a.handover_seeds
        eps = [(s, j) for s in seeds for j in range(a.episodes)]
        for k in (a.k if mode in ('handover', 'takeover') else [None]):
            res = play(policy, runner, mode, k, eps, traces, a.scenes, demos)
            rec = {'device': cpu_name(), 'torch': torch.__version__,
                   'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                   'load_avg_1m': round(os.getloadavg()[0], 2), 'task': a.task, 'policy': policy.cfg.get('name', a.policy),
                   'policy_kind': a.policy, 'checkpoint': _rel(a.ckpt), 'use_ema': True,
                   'scenes': a.scenes, 'max_steps': runner.env_kwargs['max_steps'], 'mode': mode, 'k': k, 'episodes_per_seed': a.episodes, 'eval_seeds': seeds,
                   'n_obs_steps': runner.n_obs_steps, 'n_action_steps': runner.n_action_steps, 'phases': PHASES.get(a.task),
                   'summary': aggregate(res), 'episodes': res}
            s = rec['summary']['all']
            print(f"{a.task} {mode} k={k}: success {s['success']:.3f} err_xyz {s['err_xyz']} err_grip {s['err_grip']} "
                  f"descent_xy {s['descent_xy_cm']} cm reached_interact {s['reached_interact']}", flush=True)
            recs.append(rec)
            if not a.no_save: update_records([rec], Path(a.results))
    if traces: np.savez_compressed(a.traces, **traces)

if __name__ == '__main__': main()
