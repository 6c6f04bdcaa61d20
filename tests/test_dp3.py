"""DP3 policy and encoders: shapes, learning, checkpoints, golden outputs, configs, the synthetic-store path.

Golden outputs: `tests/golden/dp3_tiny.pt` holds a tiny fixed-seed DP3 (weights + normalizer), its inputs and its
outputs (DDIM `action_pred`, the loss at a fixed generator). Tolerance: atol 1e-5, rtol 1e-4 (float32 on CPU;
BLAS/threading differences are ~1e-6; a real numerics change is orders of magnitude larger).
Regenerate only on a deliberate change: `python tests/test_dp3.py --regen`.
"""
import copy, io, sys
from pathlib import Path
import pytest, torch

from maniflow_nb.config import seed_everything
from maniflow_nb.data import make_synthetic_store
from maniflow_nb.normalizer import LinearNormalizer
from maniflow_nb.dataset import SequenceDataset, collate_batch
from maniflow_nb.timeline import TimelineError
from maniflow_nb.encoders import PointNetEncoder, MLPEncoder, ImageEncoder, ObsEncoder
from maniflow_nb.dp3 import ConditionalUnet1D, DP3Policy, make_scheduler

GOLDEN = Path(__file__).parent / 'golden' / 'dp3_tiny.pt'
ATOL, RTOL = 1e-5, 1e-4
T, TO, TA, P = 8, 2, 4, 64
TINY = dict(encoder={'pc_dim': 16, 'state_dim': 16, 'state_hidden': [16], 'pointnet_hidden': [16, 32, 64]},
            unet={'diffusion_step_embed_dim': 16, 'down_dims': [16, 32], 'kernel_size': 3})

def meta(channels=3):
    return {'obs': {'point_cloud': {'shape': [P, channels], 'type': 'point_cloud', 'store_key': 'point_cloud'},
                    'agent_pos': {'shape': [9], 'type': 'low_dim', 'store_key': 'state'}}, 'action': {'shape': [4]}}

def tiny(shape_meta=None, seed=0, **kw):
    seed_everything(seed)
    return DP3Policy(shape_meta or meta(), horizon=T, n_obs_steps=TO, n_action_steps=TA, **(TINY | kw))

def random_batch(B=8, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'obs': {'point_cloud': torch.randn(B, TO, P, channels, generator=g), 'agent_pos': torch.randn(B, TO, 9, generator=g)},
            'action': torch.randn(B, T, 4, generator=g).cumsum(1)}

def fitted(policy, batch):
    n = LinearNormalizer().fit({'action': batch['action'], **batch['obs']})
    policy.set_normalizer(n)
    return policy

def gen(seed): return torch.Generator().manual_seed(seed)

def probe_loss(policy, batch): return policy.compute_loss(batch, generator=gen(1))[0].item()

def train(policy, batch, steps, fixed_noise=False, lr=3e-3):
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = policy.compute_loss(batch, generator=gen(1) if fixed_noise else None)
        opt.zero_grad(); loss.backward(); opt.step()

# --- shapes -------------------------------------------------------------------------------------------------------
def test_encoder_shapes():
    pc = torch.randn(3, 50, 3)
    assert PointNetEncoder()(pc).shape == (3, 64)
    assert PointNetEncoder(pool=None, out_dim=8)(pc).shape == (3, 50, 8)
    assert PointNetEncoder(in_channels=6)(torch.randn(3, 50, 6)).shape == (3, 64)
    assert MLPEncoder(9)(torch.randn(3, 9)).shape == (3, 64)
    assert ImageEncoder(out_dim=10)(torch.rand(3, 3, 40, 40)).shape == (3, 10)
    rgb = ObsEncoder({'obs': {'img': {'shape': [3, 40, 40], 'type': 'rgb'}}}, img_dim=10)
    assert rgb({'img': torch.rand(3, TO, 3, 40, 40)}).shape == (3, TO * 10)
    oe = ObsEncoder(meta())
    assert oe(random_batch(3)['obs']).shape == (3, TO * 128) == (3, oe.output_dim(TO))

def test_pointnet_permutation_invariant():
    enc, pc = PointNetEncoder().eval(), torch.randn(2, 100, 3)
    with torch.no_grad(): torch.testing.assert_close(enc(pc[:, torch.randperm(100)]), enc(pc))

@pytest.mark.parametrize('horizon', [1, 5, 8, 12, 16])
def test_unet_any_horizon(horizon):
    unet = ConditionalUnet1D(4, 10, diffusion_step_embed_dim=8, down_dims=(8, 16, 32))
    assert unet(torch.randn(2, horizon, 4), torch.tensor([3, 7]), torch.randn(2, 10)).shape == (2, horizon, 4)

@pytest.mark.parametrize('channels,color', [(3, False), (6, True), (6, False)])
def test_policy_shapes_xyz_xyzrgb(channels, color):
    b = random_batch(4, channels)
    p = fitted(tiny(meta(channels), encoder=TINY['encoder'] | {'use_pc_color': color}), b)
    assert p.obs_encoder.encoders['point_cloud'].in_channels == (6 if color else 3)
    loss, metrics = p.compute_loss(b)
    assert loss.shape == () and set(metrics) == {'bc_loss'}
    out = p.predict_action(b['obs'])
    assert out['action'].shape == (4, TA, 4) and out['action_pred'].shape == (4, T, 4)
    torch.testing.assert_close(out['action'], out['action_pred'][:, TO - 1:TO - 1 + TA])

def test_timeline_checked():
    with pytest.raises(TimelineError, match='horizon=4, n_obs_steps=2, n_action_steps=4'):
        DP3Policy(meta(), horizon=4, n_obs_steps=2, n_action_steps=4, **TINY)

def test_state_dict_keys_unchanged():
    "The step encoder keeps its Sequential layout: (sinusoids, Linear, Mish, Linear), as in older checkpoints."
    g = torch.load(GOLDEN, weights_only=True)
    assert list(fitted(tiny(), random_batch()).state_dict()) == list(g['state_dict'])
    assert {k for k in g['state_dict'] if k.startswith('model.step_encoder.')} == {
        f'model.step_encoder.{i}.{p}' for i in (1, 3) for p in ('weight', 'bias')}

def test_predict_noise():
    "Fresh noise on every call (as DP3); a generator, or the seeded global RNG, reproduces a call exactly."
    b = random_batch(); p = fitted(tiny(), b)
    assert not torch.allclose(p.predict_action(b['obs'])['action'], p.predict_action(b['obs'])['action'])
    torch.testing.assert_close(p.predict_action(b['obs'], gen(3))['action'], p.predict_action(b['obs'], gen(3))['action'], rtol=0, atol=0)
    a = [torch.manual_seed(5) and p.predict_action(b['obs'])['action'] for _ in range(2)]
    torch.testing.assert_close(a[0], a[1], rtol=0, atol=0)
    a3, a4 = (p.predict_action(b['obs'], gen(s))['action'] for s in (3, 4))
    assert not torch.allclose(a3, a4)

# --- learning -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sched', ['ddim', 'ddpm'])
@pytest.mark.parametrize('pred', ['sample', 'epsilon'])
def test_overfit_one_batch(sched, pred):
    b = random_batch()
    p = fitted(tiny(scheduler={'type': sched, 'prediction_type': pred}), b)
    before = probe_loss(p, b)
    train(p, b, 60, fixed_noise=True)
    assert probe_loss(p, b) < before / 10

def test_overfit_samples_reproduce_batch():
    b = random_batch(); p = fitted(tiny(), b)
    before = probe_loss(p, b)
    train(p, b, 200)
    assert probe_loss(p, b) < before / 10
    scale = (b['action'] - b['action'].mean((0, 1))).abs().mean()
    for sched in ('ddim', 'ddpm'):
        p.noise_scheduler = make_scheduler(sched)
        assert (p.predict_action(b['obs'], gen(0))['action_pred'] - b['action']).abs().mean() < 0.2 * scale

def test_overfit_synthetic_store(tmp_path):
    "A short overfit on a synthetic store through SequenceDataset and a DataLoader."
    ds = SequenceDataset(make_synthetic_store(tmp_path / 's.zarr', n_episodes=2, episode_len=10, n_points=P), meta(), T, TO, TA,
                         val_ratio=0.1)
    dl = torch.utils.data.DataLoader(ds, batch_size=len(ds), shuffle=True, collate_fn=collate_batch, generator=gen(0))
    p = tiny(); p.set_normalizer(ds.get_normalizer())
    full = ds.__getitems__(list(range(len(ds))))
    before = probe_loss(p, full)
    opt = torch.optim.AdamW(p.parameters(), lr=3e-3)
    for _ in range(80):
        for batch in dl:
            loss, _ = p.compute_loss(batch); opt.zero_grad(); loss.backward(); opt.step()
    after = probe_loss(p, full)
    assert after < before / 10

# --- checkpoints and golden outputs -------------------------------------------------------------------------------
def test_save_load_roundtrip():
    b = random_batch(); p = fitted(tiny(), b); train(p, b, 5)
    buf = io.BytesIO(); torch.save(p.state_dict(), buf); buf.seek(0)
    q = tiny(seed=1)
    q.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(q.predict_action(b['obs'], gen(0))['action_pred'], p.predict_action(b['obs'], gen(0))['action_pred'], rtol=0, atol=0)

def test_ema_copy_is_a_policy():
    b = random_batch(); p = fitted(tiny(), b)
    ema = copy.deepcopy(p)
    loss, _ = p.compute_loss(b, ema_model=ema)
    assert torch.isfinite(loss)

def make_golden():
    "The tiny fixed-seed model, its inputs and its outputs."
    b = random_batch(4, seed=123); p = fitted(tiny(seed=7), b)
    return {'state_dict': p.state_dict(), 'batch': b, 'action_pred': p.predict_action(b['obs'], gen(0))['action_pred'],
            'loss': torch.tensor(probe_loss(p, b)), 'torch': str(torch.__version__)}

def test_golden_outputs():
    g = torch.load(GOLDEN, weights_only=True)
    p = tiny(seed=0)
    p.load_state_dict(g['state_dict'])
    torch.testing.assert_close(p.predict_action(g['batch']['obs'], gen(0))['action_pred'], g['action_pred'], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(torch.tensor(probe_loss(p, g['batch'])), g['loss'], atol=ATOL, rtol=RTOL)

def test_golden_init_is_seeded():
    "A fresh model from the same seed and the same normalizer reproduces the golden numbers (init unchanged)."
    g = torch.load(GOLDEN, weights_only=True)
    new = make_golden()
    torch.testing.assert_close(new['action_pred'], g['action_pred'], atol=ATOL, rtol=RTOL)

@pytest.mark.gpu
def test_cuda_matches_cpu():
    b = random_batch(); p = fitted(tiny(), b)
    pg = copy.deepcopy(p).cuda()
    out = pg.predict_action({k: v.cuda() for k, v in b['obs'].items()}, gen(0))['action_pred'].cpu()
    torch.testing.assert_close(out, p.predict_action(b['obs'], gen(0))['action_pred'], atol=1e-3, rtol=1e-3)
    loss, _ = pg.compute_loss({'obs': {k: v.cuda() for k, v in b['obs'].items()}, 'action': b['action'].cuda()})
    assert loss.device.type == 'cuda' and torch.isfinite(loss)

# --- config -------------------------------------------------------------------------------------------------------
def instantiate(overrides=()):
    "The packaged DP3 config built as the trainers build it (`policies.make_policy`), with T=16, To=2, Ta=8."
    from maniflow_nb.config import compose_config
    from maniflow_nb.policies import make_policy
    return make_policy(compose_config('dp3_metaworld', ['horizon=16', 'n_obs_steps=2', 'n_action_steps=8', *overrides]))

def test_config_instantiates():
    p = instantiate(['policy.scheduler.prediction_type=epsilon'])
    assert type(p.noise_scheduler).__name__ == 'DDIMScheduler'
    assert p.noise_scheduler.config.prediction_type == 'epsilon'
    b = {'obs': {'point_cloud': torch.randn(2, 2, 512, 3), 'agent_pos': torch.randn(2, 2, 9)}, 'action': torch.randn(2, 16, 4)}
    fitted(p, b)
    assert p.predict_action(b['obs'])['action'].shape == (2, 8, 4)

def test_config_bad_values():
    from maniflow_nb.config import ConfigError
    with pytest.raises(ConfigError, match="policy.scheduler.type is 'euler'"): instantiate(['policy.scheduler.type=euler'])
    with pytest.raises(ConfigError, match="policy._target_ is 'os.system'"): instantiate(['policy._target_=os.system'])

@pytest.mark.slow
def test_dp3_size_config():
    p = instantiate(['policy.unet.down_dims=[512,1024,2048]', 'policy.unet.diffusion_step_embed_dim=128'])
    assert 255e6 < sum(x.numel() for x in p.model.parameters()) < 256e6

if __name__ == '__main__' and '--regen' in sys.argv:
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save(make_golden(), GOLDEN)
    print(f'wrote {GOLDEN}')
