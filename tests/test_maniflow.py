"""ManiFlow policy: golden outputs of a fixed-seed tiny model, overfitting for every probability path, the Hydra
policy configs (incl. the full-size 12x768 network), ManiFlow's architecture details, and a checkpoint round trip.

Regenerate the golden tensors (only after an intended numerical change, and say so in the commit):
    .venv/bin/python tests/test_maniflow.py --regenerate
Last regenerated when ManiFlow's architecture (ManiFlow_Policy @ c631661) became the default: t embedded itself,
RMSNorm head, bias-free q/kv cross-attention, self-attention-only dropout, the state feature on every point token.
"""
import copy, math, sys
from pathlib import Path
import pytest, torch
from maniflow_nb.config import compose_config, ConfigError
from maniflow_nb.policies import make_policy
from maniflow_nb.normalizer import LinearNormalizer
from maniflow_nb.flow import PATHS
from maniflow_nb.maniflow import ManiFlowPolicy, DiTX
from maniflow_nb.ema import EMAModel

GOLDEN = Path(__file__).parent / 'golden' / 'maniflow_tiny.pt'
# float32 on CPU: results can differ in the last bits across BLAS builds / thread counts; anything a refactor
# changes on purpose is far larger than this.
ATOL, RTOL = 1e-4, 1e-4

META = {'obs': {'point_cloud': {'shape': [32, 3], 'type': 'point_cloud'}, 'agent_pos': {'shape': [5], 'type': 'low_dim'}},
        'action': {'shape': [3]}}
STATE_META = {'obs': {'agent_pos': {'shape': [3], 'type': 'low_dim'}}, 'action': {'shape': [2]}}

def _batch(meta, B, seed, T=8, To=2):
    g = torch.Generator().manual_seed(seed)
    obs = {k: torch.randn(B, To, *m['shape'], generator=g) for k, m in meta['obs'].items()}
    return {'obs': obs, 'action': torch.rand(B, T, *meta['action']['shape'], generator=g) * 2 - 1}

def _normalizer(batch):
    return LinearNormalizer().fit({'action': batch['action'], **batch['obs']})

def _tiny(meta=META, **kw):
    torch.manual_seed(0)
    kw = dict(n_layer=1, n_head=2, n_emb=32, token_dim=32, time_freq_dim=32, n_point_tokens=8,
              pointnet_hidden=(16, 32), state_hidden=(16,), state_dim=16, add_value_head=True) | kw
    return ManiFlowPolicy(meta, horizon=8, n_obs_steps=2, n_action_steps=4, **kw)

def _train(pol, batch, steps, lr=3e-3, max_decay=0.95, seed=0):
    torch.manual_seed(seed)
    ema, opt = EMAModel(pol, max_decay=max_decay), torch.optim.AdamW(pol.parameters(), lr=lr)
    # The golden tensors were recorded with a warm-up one step ahead of diffusion_policy's (decay 1-(1+i)^-0.75 at
    # step i); starting the shared EMAModel's counter at 1 reproduces that schedule exactly.
    ema.optimization_step = 1
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    for i in range(steps):
        loss, m = pol.compute_loss(batch, ema.averaged_model)
        opt.zero_grad(); loss.backward(); opt.step(); sch.step(); ema.step(pol)
    return ema.averaged_model, m

def golden_outputs() -> dict:
    "Outputs of a fixed-seed tiny point-cloud policy after 30 training steps."
    torch.set_num_threads(1)
    batch = _batch(META, 6, seed=1)
    pol = _tiny(); pol.set_normalizer(_normalizer(batch))
    ema, m = _train(pol, batch, 30)
    torch.manual_seed(11)
    loss, _ = pol.compute_loss(batch, ema)
    obs = _batch(META, 2, seed=2)['obs']
    out = {'loss': loss.detach()}
    for K in (1, 2, 10):
        out[f'action_K{K}'] = pol.predict_action(obs, torch.Generator().manual_seed(3), num_steps=K)['action']
    for mode in ('single', 'joint'):
        r = pol.sample_actions(obs, 'flow_sde', mode, 0.5, num_steps=4, generator=torch.Generator().manual_seed(4))
        out |= {f'{mode}_chain': r['chain'], f'{mode}_log_prob': r['log_prob'], f'{mode}_value': r['value']}
    return out

def test_golden_outputs():
    want = torch.load(GOLDEN, weights_only=True)
    got = golden_outputs()
    assert sorted(got) == sorted(want)
    for k in want: torch.testing.assert_close(got[k], want[k], atol=ATOL, rtol=RTOL, msg=lambda s: f'{k}: {s}')

def _fixed_loss(pol, batch, n=10):
    "Flow-matching loss on the whole batch, averaged over `n` fixed draws of t and noise."
    ratio, pol.flow_batch_ratio = pol.flow_batch_ratio, 1.0
    try:
        with torch.no_grad():
            return sum(torch.manual_seed(i) and pol.compute_loss(batch)[1]['loss_flow'] for i in range(n)) / n
    finally: pol.flow_batch_ratio = ratio

def _sample_err(pol, batch, sampler, K):
    pol.sampler = sampler
    out = pol.predict_action(batch['obs'], torch.Generator().manual_seed(0), num_steps=K)['action_pred']
    return (out - batch['action']).pow(2).mean().item()

SAMPLERS = [('euler', 1), ('euler', 2), ('euler', 10), ('midpoint', 4), ('rk4', 4), ('dopri5', None)]

# VP-type paths need more steps: their velocity targets grow without bound as t -> 1 (dσ/dt -> -inf), which slows
# the fall of the flow-matching MSE; the samples themselves converge as fast as on the other paths.
# ManiFlow embeds t itself (t in [0, 1] reaches only the low sinusoid frequencies), so the tiny network needs more steps
# than with the former 1000·t embedding (400) to resolve time.
STEPS = {'condot': 600, 'cosine': 600, 'vp': 1000, 'linear_vp': 1000}

@pytest.mark.parametrize('path', sorted(PATHS))
def test_overfit_every_path_and_sampler(path):
    "One batch of 4 distinct obs -> chunk pairs: flow loss and every sampler's error fall >= 10x."
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(4, 2, 3, generator=g)
    batch = {'obs': {'agent_pos': obs}, 'action': torch.tanh(obs[:, -1:, :2] + torch.linspace(0, 1, 8)[None, :, None] * obs[:, -1:, 2:3])}
    pol = _tiny(STATE_META, path=path, time_sampler='logit_normal', add_value_head=False)
    pol.set_normalizer(_normalizer(batch))
    l0, e0 = _fixed_loss(pol, batch), {s: _sample_err(pol, batch, *s) for s in SAMPLERS}
    _train(pol, batch, STEPS[path])
    l1, e1 = _fixed_loss(pol, batch), {s: _sample_err(pol, batch, *s) for s in SAMPLERS}
    assert l0 / l1 >= 10, (path, l0, l1)
    for s in SAMPLERS: assert e0[s] / e1[s] >= 10, (path, s, e0[s], e1[s])

def _instantiate(cfg): return make_policy(cfg)

@pytest.mark.parametrize('config,overrides', [
    ('maniflow_pointcloud_metaworld', []),
    ('maniflow_state_metaworld', []),
    ('maniflow_pointcloud_metaworld', ['policy=maniflow_pointcloud_robotwin', 'task=robotwin', 'horizon=16', 'n_action_steps=8',
                                       'policy.n_layer=1', 'policy.n_emb=32', 'policy.n_head=2']),
])
def test_policy_configs(config, overrides, tmp_path):
    "Each policy yaml instantiates, trains a step, predicts, and round-trips through a weights_only checkpoint."
    cfg = compose_config(config, overrides)
    pol = _instantiate(cfg)
    batch = _batch(cfg.task.shape_meta, 4, seed=0, T=cfg.horizon, To=cfg.n_obs_steps)
    pol.set_normalizer(_normalizer(batch))
    loss, m = pol.compute_loss(batch, copy.deepcopy(pol)); loss.backward()
    assert math.isfinite(m['loss']) and set(m) == {'loss', 'loss_flow', 'loss_consistency'}
    torch.save(pol.state_dict(), tmp_path / 'p.pt')
    fresh = _instantiate(cfg); fresh.load_state_dict(torch.load(tmp_path / 'p.pt', weights_only=True))
    pol.eval(); fresh.eval()
    a = pol.predict_action(batch['obs'], torch.Generator().manual_seed(0), num_steps=2)
    b = fresh.predict_action(batch['obs'], torch.Generator().manual_seed(0), num_steps=2)
    assert a['action'].shape == (4, cfg.n_action_steps, *cfg.task.shape_meta.action.shape)
    assert torch.equal(a['action'], b['action']) and torch.equal(a['action_pred'], b['action_pred'])

def test_full_size_config():
    """ManiFlow's published size (12 blocks x 768) is one switch of the MetaWorld config: about 180 M parameters,
    128 observation tokens of width 128 + 64 (ManiFlow's MetaWorld layout)."""
    cfg = compose_config('maniflow_pointcloud_metaworld', ['policy=maniflow_pointcloud_paper'])
    pol = _instantiate(cfg)
    n = sum(p.numel() for p in pol.parameters())
    assert 170e6 < n < 195e6, n
    assert (pol.obs_encoder.n_tokens, pol.obs_encoder.token_width) == (2 * 64, 192)
    assert pol.model.cond_pos.shape == (1, 128, 768) and pol.model.blocks[0].self_attn.dropout == 0.1

def test_metaworld_config_is_maniflows():
    "The MetaWorld config carries ManiFlow's loop settings; language conditioning is a switched-off option."
    cfg = compose_config('maniflow_pointcloud_metaworld')
    tr = cfg.training
    assert (cfg.horizon, cfg.n_obs_steps, cfg.n_action_steps) == (4, 2, 3)
    assert (tr.batch_size, list(tr.betas), tr.weight_decay, tr.learning_rate, tr.lr_warmup_steps) == (384, [0.9, 0.95], 1e-3, 1e-4, 500)
    assert (cfg.policy.token_dim, cfg.policy.n_point_tokens, cfg.policy.state_dim, cfg.policy.time_freq_dim) == (128, 64, 64, 128)
    with pytest.raises(ConfigError, match='T5-small'):
        _instantiate(compose_config('maniflow_pointcloud_metaworld', ['policy.language_conditioned=true']))

def test_ditx_is_maniflows():
    """t is embedded as t itself, the head norm is RMSNorm, the cross-attention has no q/k/v biases, and dropout only
    touches the self-attention weights."""
    net = DiTX(3, 4, 10, 6, n_layer=1, n_head=2, n_emb=16, p_drop=0.5, time_freq_dim=8)
    keys = set(net.state_dict())
    assert {'blocks.0.cross_attn.q.weight', 'blocks.0.cross_attn.kv.weight', 'blocks.0.cross_attn.proj.bias', 'out_norm.weight'} <= keys
    assert not {'blocks.0.cross_attn.q.bias', 'blocks.0.cross_attn.kv.bias', 'out_norm.bias'} & keys
    assert isinstance(net.out_norm, torch.nn.RMSNorm) and net.out_norm.eps == 1e-6
    t = torch.tensor([0.25])
    half = torch.exp(-math.log(1e4) * torch.arange(4) / 3) * 0.25
    with torch.no_grad():
        feats = []
        net.t_emb.mlp[0].register_forward_hook(lambda m, i, o: feats.append(i[0]))
        net.t_emb(t)
    torch.testing.assert_close(feats[0], torch.cat([half.sin(), half.cos()])[None])
    x, c = torch.randn(2, 4, 3), torch.randn(2, 6, 10)
    with torch.no_grad():
        net.blocks[0].adaLN[-1].bias.normal_(); net.blocks[0].adaLN[-1].bias[32:48] = 0   # self-attention gated off
        net.out[-1].weight.normal_()
        assert torch.equal(net.train()(x, 0.3, 0.1, c), net.eval()(x, 0.3, 0.1, c))
        net.blocks[0].adaLN[-1].bias[32:48] = 1
        assert not torch.equal(net.train()(x, 0.3, 0.1, c), net.eval()(x, 0.3, 0.1, c))

def test_predict_draws_fresh_noise():
    "No per-call reseed: two calls differ; a generator (one per episode) or the seeded global RNG reproduces them."
    batch = _batch(META, 3, seed=5)
    pol = _tiny(); pol.set_normalizer(_normalizer(batch)); pol.eval()
    with torch.no_grad(): pol.model.out[-1].weight.normal_()
    a, b = (pol.predict_action(batch['obs'], num_steps=2)['action'] for _ in range(2))
    assert not torch.allclose(a, b)
    g = torch.Generator().manual_seed(0)
    first = [pol.predict_action(batch['obs'], g, num_steps=2)['action'] for _ in range(2)]
    g = torch.Generator().manual_seed(0)
    again = [pol.predict_action(batch['obs'], g, num_steps=2)['action'] for _ in range(2)]
    assert not torch.allclose(*first) and all(torch.equal(u, v) for u, v in zip(first, again))
    assert not hasattr(pol, 'sample_seed')

def test_ppo_ratio_is_one_after_checkpoint(tmp_path):
    "The stored chain's log-prob is recomputed exactly by a reloaded policy (PPO's first ratio is 1)."
    batch = _batch(META, 3, seed=5)
    pol = _tiny(); pol.set_normalizer(_normalizer(batch)); pol.eval()
    torch.save(pol.state_dict(), tmp_path / 'p.pt')
    fresh = _tiny(); fresh.load_state_dict(torch.load(tmp_path / 'p.pt', weights_only=True)); fresh.eval()
    for mode in ('single', 'joint'):
        r = pol.sample_actions(batch['obs'], 'flow_sde', mode, 0.5, num_steps=4, generator=torch.Generator().manual_seed(0))
        lp = fresh.chain_log_prob(batch['obs'], r['chain'], r['step_index'], mode, 0.5)
        assert (torch.exp(lp - r['log_prob']) - 1).abs().max() < 1e-5
        with pytest.raises(ValueError, match='noise_level > 0'):
            fresh.chain_log_prob(batch['obs'], r['chain'], r['step_index'], mode, 0.0)

if __name__ == '__main__' and '--regenerate' in sys.argv:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden_outputs(), GOLDEN)
    print(f'wrote {GOLDEN}')
