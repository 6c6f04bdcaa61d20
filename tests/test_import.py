"""`maniflow-import`: checkpoints in the original workspaces' layout, built here independently of the importer's rules,
are mapped tensor by tensor, and the imported policy gives the actions of a re-implementation of the original forward
pass (written from geyan21/ManiFlow_Policy @ c631661 and YanjieZe/3D-Diffusion-Policy @ 47385d9, which are not part of
the project) on the same input and noise. Then maniflow-eval's loader and the legacy trainer's resume read the result.
"""
import math, pickle
import pytest, torch, torch.nn.functional as F
from omegaconf import OmegaConf
from diffusers import DDIMScheduler
from maniflow_nb.config import UserError, compose_config
from maniflow_nb.importer import import_checkpoint, import_cli
from maniflow_nb.checkpoint import load_checkpoint, load_policy_from_checkpoint

T, TO, TA, P, DS, DA = 4, 2, 3, 40, 9, 4
SM = {'obs': {'point_cloud': {'shape': [P, 3], 'type': 'point_cloud'}, 'agent_pos': {'shape': [DS], 'type': 'low_dim'}}, 'action': {'shape': [DA]}}
PC_CFG = {'in_channels': 3, 'out_channels': 24, 'use_layernorm': True, 'final_norm': 'layernorm', 'normal_channel': False}

def original_cfg(policy):
    return OmegaConf.create({'horizon': T, 'n_obs_steps': TO, 'n_action_steps': TA, 'shape_meta': SM, 'policy': policy,
                             'task': {'name': 'door-open', 'shape_meta': SM, 'env_runner': {'_target_': 'x.metaworld_runner.MetaworldRunner'},
                                      'dataset': {'zarr_path': 'data/metaworld_door-open_expert.zarr', 'pad_before': "${eval:'${n_obs_steps}-1'}"}},
                             'training': {'seed': 42, 'use_ema': True}, 'ema': {'max_value': 0.9999}})

# --- the original layouts: (key, shape) lists from the original modules ------------------------------------------
def _lin(p, i, o, bias=True): return [(p + 'weight', (o, i))] + ([(p + 'bias', (o,))] if bias else [])
def _ln(p, d): return [(p + 'weight', (d,)), (p + 'bias', (d,))]

def encoder_layout(out_dim, state=(64, 64)):
    "DP3Encoder: PointNetEncoderXYZ (use_layernorm, final_norm layernorm) and state_mlp (create_mlp)."
    L = []
    for i, (a, b) in enumerate([(3, 64), (64, 128), (128, 256)]): L += _lin(f'obs_encoder.extractor.mlp.{3*i}.', a, b) + _ln(f'obs_encoder.extractor.mlp.{3*i+1}.', b)
    L += _lin('obs_encoder.extractor.final_projection.0.', 256, out_dim) + _ln('obs_encoder.extractor.final_projection.1.', out_dim)
    dims = [DS, *state]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])): L += _lin(f'obs_encoder.state_mlp.{2*i}.', a, b)
    return L

def maniflow_layout(n_layer, D, freq, K, E):
    L = [('_dummy_variable', (0,))] + encoder_layout(E)
    L += _lin('model.input_emb.', DA, D) + [('model.pos_emb', (1, T, D)), ('model.vis_cond_pos_embed', (1, K * TO, D))]
    L += _lin('model.vis_cond_obs_emb.', E + 64, D)
    for enc in ('flow_timestep_encoder', 'flow_target_t_encoder'): L += _lin(f'model.{enc}.1.', freq, 4 * freq) + _lin(f'model.{enc}.3.', 4 * freq, D)
    L += _lin('model.timestep_target_t_adaptor.', 2 * D, D)
    for b in range(n_layer):
        p = f'model.blocks.{b}.'
        L += [(p + 'self_attn.in_proj_weight', (3 * D, D)), (p + 'self_attn.in_proj_bias', (3 * D,))] + _lin(p + 'self_attn.out_proj.', D, D)
        L += _lin(p + 'cross_attn.q.', D, D, False) + _lin(p + 'cross_attn.kv.', D, 2 * D, False) + _lin(p + 'cross_attn.proj.', D, D)
        L += _lin(p + 'mlp.fc1.', D, 4 * D) + _lin(p + 'mlp.fc2.', 4 * D, D) + _lin(p + 'adaLN_modulation.1.', D, 9 * D)
    return L + [('model.final_layer.norm_final.weight', (D,))] + _lin('model.final_layer.ffn_final.fc1.', D, D) + _lin('model.final_layer.ffn_final.fc2.', D, DA)

def _res(p, a, b, c, k):
    L = [(p + 'blocks.0.block.0.weight', (b, a, k)), (p + 'blocks.0.block.0.bias', (b,))] + _ln(p + 'blocks.0.block.1.', b)
    L += [(p + 'blocks.1.block.0.weight', (b, b, k)), (p + 'blocks.1.block.0.bias', (b,))] + _ln(p + 'blocks.1.block.1.', b)
    L += _lin(p + 'cond_encoder.1.', c, 2 * b)
    return L + ([(p + 'residual_conv.weight', (b, a, 1)), (p + 'residual_conv.bias', (b,))] if a != b else [])

def dp3_layout(E, dsed, dims, k):
    L = [('_dummy_variable', (0,)), ('mask_generator._dummy_variable', (0,))] + encoder_layout(E)
    L += _lin('model.diffusion_step_encoder.1.', dsed, 4 * dsed) + _lin('model.diffusion_step_encoder.3.', 4 * dsed, dsed)
    c, alld = dsed + TO * (E + 64), [DA, *dims]
    for i, (a, b) in enumerate(zip(alld[:-1], alld[1:])):
        L += _res(f'model.down_modules.{i}.0.', a, b, c, k) + _res(f'model.down_modules.{i}.1.', b, b, c, k)
        if i < len(dims) - 1: L += [(f'model.down_modules.{i}.2.conv.weight', (b, b, 3)), (f'model.down_modules.{i}.2.conv.bias', (b,))]
    L += _res('model.mid_modules.0.', dims[-1], dims[-1], c, k) + _res('model.mid_modules.1.', dims[-1], dims[-1], c, k)
    for i, (a, b) in enumerate(reversed(list(zip(alld[1:-1], alld[2:])))):
        L += _res(f'model.up_modules.{i}.0.', 2 * b, a, c, k) + _res(f'model.up_modules.{i}.1.', a, a, c, k)
        L += [(f'model.up_modules.{i}.2.conv.weight', (a, a, 4)), (f'model.up_modules.{i}.2.conv.bias', (a,))]
    L += [('model.final_conv.0.block.0.weight', (dims[0], dims[0], k)), ('model.final_conv.0.block.0.bias', (dims[0],))] + _ln('model.final_conv.0.block.1.', dims[0])
    return L + [('model.final_conv.1.weight', (DA, dims[0], 1)), ('model.final_conv.1.bias', (DA,))]

def normalizer_layout():
    return [(f'normalizer.params_dict.{k}.{n}', (d,)) for k, d in (('action', DA), ('point_cloud', 3), ('agent_pos', DS))
            for n in ('scale', 'offset', 'input_stats.min', 'input_stats.max', 'input_stats.mean', 'input_stats.std')]

def random_sd(layout, seed):
    "Every tensor random (no zero gates, no identity norms): a mis-mapped tensor changes the output."
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) / math.sqrt(max(1, s[-1] if len(s) > 1 else 4)) for k, s in layout}
    for k in sd:
        if k.endswith('.scale'): sd[k] = 0.5 + torch.rand(sd[k].shape, generator=g)
        if k.endswith('_dummy_variable'): sd[k] = torch.empty(0)
    return sd

def write_original(tmp_path, cfg, sd, name, ema=None):
    p = tmp_path / name
    torch.save({'cfg': cfg, 'state_dicts': {'model': sd, 'ema_model': ema if ema is not None else sd, 'optimizer': {'state': {}, 'param_groups': []}},
                'pickles': {'global_step': pickle.dumps(500), 'epoch': pickle.dumps(3), '_output_dir': pickle.dumps('/x')}}, p)
    return p

# --- the original forward passes, functionally over the original keys -------------------------------------------
def nz(sd, k, x): return x * sd[f'normalizer.params_dict.{k}.scale'] + sd[f'normalizer.params_dict.{k}.offset']
def lin(sd, p, x): return F.linear(x, sd[p + 'weight'], sd.get(p + 'bias'))
def ln(sd, p, x): return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'])

def fps(x, k):
    "pytorch3d sample_farthest_points (random_start_point=False), one cloud at a time."
    out = []
    for c in x:
        sel, d = [0], ((c - c[0]) ** 2).sum(-1)
        for _ in range(k - 1):
            sel.append(int(d.argmax())); d = torch.minimum(d, ((c - c[sel[-1]]) ** 2).sum(-1))
        out.append(c[sel])
    return torch.stack(out)

def dp3_encoder(sd, pc, st, pointwise):
    h = pc
    for i in (0, 3, 6): h = F.relu(ln(sd, f'obs_encoder.extractor.mlp.{i+1}.', lin(sd, f'obs_encoder.extractor.mlp.{i}.', h)))
    if not pointwise: h = h.max(1).values
    h = ln(sd, 'obs_encoder.extractor.final_projection.1.', lin(sd, 'obs_encoder.extractor.final_projection.0.', h))
    s = lin(sd, 'obs_encoder.state_mlp.2.', F.relu(lin(sd, 'obs_encoder.state_mlp.0.', st)))
    return torch.cat([h, s[:, None].expand(-1, h.shape[1], -1) if pointwise else s], -1)

def sinus(t, dim):
    f = torch.exp(torch.arange(dim // 2) * -(math.log(10000) / (dim // 2 - 1)))
    a = t[:, None] * f[None]
    return torch.cat([a.sin(), a.cos()], -1)

def attention(q, k, v, H):
    B, N, D = q.shape
    q, k, v = (z.reshape(B, z.shape[1], H, D // H).transpose(1, 2) for z in (q, k, v))
    w = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(B, N, D)

def ditx(sd, x, t, tt, vis, H, n_layer):
    h = lin(sd, 'model.input_emb.', x) + sd['model.pos_emb']
    emb = lambda enc, v: lin(sd, f'model.{enc}.3.', F.mish(lin(sd, f'model.{enc}.1.', sinus(v, sd[f'model.{enc}.1.weight'].shape[1]))))
    c = lin(sd, 'model.timestep_target_t_adaptor.', torch.cat([emb('flow_timestep_encoder', t), emb('flow_target_t_encoder', tt)], -1))
    ctx = lin(sd, 'model.vis_cond_obs_emb.', vis) + sd['model.vis_cond_pos_embed'][:, :vis.shape[1]]
    for b in range(n_layer):
        p = f'model.blocks.{b}.'
        m = lin(sd, p + 'adaLN_modulation.1.', F.silu(c)).chunk(9, -1)
        mod = lambda z, i: F.layer_norm(z, z.shape[-1:], eps=1e-6) * (1 + m[i + 1][:, None]) + m[i][:, None]
        n = mod(h, 0)
        q, k, v = F.linear(n, sd[p + 'self_attn.in_proj_weight'], sd[p + 'self_attn.in_proj_bias']).chunk(3, -1)
        h = h + m[2][:, None] * lin(sd, p + 'self_attn.out_proj.', attention(q, k, v, H))
        n = mod(h, 3)
        k, v = F.linear(ctx, sd[p + 'cross_attn.kv.weight']).reshape(*ctx.shape[:2], 2, -1).unbind(2)
        h = h + m[5][:, None] * lin(sd, p + 'cross_attn.proj.', attention(F.linear(n, sd[p + 'cross_attn.q.weight']), k, v, H))
        n = mod(h, 6)
        h = h + m[8][:, None] * lin(sd, p + 'mlp.fc2.', F.gelu(lin(sd, p + 'mlp.fc1.', n), approximate='tanh'))
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * sd['model.final_layer.norm_final.weight']
    return lin(sd, 'model.final_layer.ffn_final.fc2.', F.gelu(lin(sd, 'model.final_layer.ffn_final.fc1.', h), approximate='tanh'))

def maniflow_actions(sd, obs, noise, K, H, n_layer, N):
    "ManiFlowTransformerPointcloudPolicy.predict_action: normalize, FPS to K points, DP3Encoder per step, Euler."
    B = noise.shape[0]
    pc = fps(nz(sd, 'point_cloud', obs['point_cloud'][:, :TO])[..., :3].reshape(B * TO, P, 3), K)
    vis = dp3_encoder(sd, pc, nz(sd, 'agent_pos', obs['agent_pos'][:, :TO]).reshape(B * TO, DS), True).reshape(B, TO * K, -1)
    x = noise
    for i in range(N): x = x + ditx(sd, x, torch.full((B,), i / N), torch.full((B,), 1 / N), vis, H, n_layer) / N
    a = (x - sd['normalizer.params_dict.action.offset']) / sd['normalizer.params_dict.action.scale']
    return a[:, TO - 1:TO - 1 + TA]

def res_block(sd, p, x, cond):
    blk = lambda i, z: F.mish(F.group_norm(F.conv1d(z, sd[f'{p}blocks.{i}.block.0.weight'], sd[f'{p}blocks.{i}.block.0.bias'],
                                                    padding=sd[f'{p}blocks.{i}.block.0.weight'].shape[-1] // 2), 8,
                                           sd[f'{p}blocks.{i}.block.1.weight'], sd[f'{p}blocks.{i}.block.1.bias']))
    out = blk(0, x)
    e = lin(sd, p + 'cond_encoder.1.', F.mish(cond)).reshape(x.shape[0], 2, -1, 1)
    out = blk(1, e[:, 0] * out + e[:, 1])
    return out + (F.conv1d(x, sd[p + 'residual_conv.weight'], sd[p + 'residual_conv.bias']) if p + 'residual_conv.weight' in sd else x)

def unet(sd, sample, t, gcond, n_levels):
    x = sample.transpose(1, 2)
    ts = t.reshape(-1).expand(sample.shape[0]).float()
    temb = lin(sd, 'model.diffusion_step_encoder.3.', F.mish(lin(sd, 'model.diffusion_step_encoder.1.', sinus(ts, sd['model.diffusion_step_encoder.1.weight'].shape[1]))))
    cond, h = torch.cat([temb, gcond], -1), []
    for i in range(n_levels):
        x = res_block(sd, f'model.down_modules.{i}.1.', res_block(sd, f'model.down_modules.{i}.0.', x, cond), cond); h.append(x)
        if i < n_levels - 1: x = F.conv1d(x, sd[f'model.down_modules.{i}.2.conv.weight'], sd[f'model.down_modules.{i}.2.conv.bias'], stride=2, padding=1)
    for j in (0, 1): x = res_block(sd, f'model.mid_modules.{j}.', x, cond)
    for i in range(n_levels - 1):
        x = torch.cat([x, h.pop()], 1)
        x = res_block(sd, f'model.up_modules.{i}.1.', res_block(sd, f'model.up_modules.{i}.0.', x, cond), cond)
        x = F.conv_transpose1d(x, sd[f'model.up_modules.{i}.2.conv.weight'], sd[f'model.up_modules.{i}.2.conv.bias'], stride=2, padding=1)
    x = F.mish(F.group_norm(F.conv1d(x, sd['model.final_conv.0.block.0.weight'], sd['model.final_conv.0.block.0.bias'],
                                     padding=sd['model.final_conv.0.block.0.weight'].shape[-1] // 2), 8,
                            sd['model.final_conv.0.block.1.weight'], sd['model.final_conv.0.block.1.bias']))
    return F.conv1d(x, sd['model.final_conv.1.weight'], sd['model.final_conv.1.bias']).transpose(1, 2)

def dp3_actions(sd, obs, noise, sched_cfg, N, n_levels):
    "DP3.predict_action: normalize, DP3Encoder per step -> global cond, DDIM with the diffusers scheduler."
    B = noise.shape[0]
    g = dp3_encoder(sd, nz(sd, 'point_cloud', obs['point_cloud'][:, :TO])[..., :3].reshape(B * TO, P, 3),
                    nz(sd, 'agent_pos', obs['agent_pos'][:, :TO]).reshape(B * TO, DS), False).reshape(B, -1)
    s = DDIMScheduler(**{k: v for k, v in sched_cfg.items() if k != '_target_'})
    s.set_timesteps(N)
    x = noise
    for t in s.timesteps: x = s.step(unet(sd, x, t, g, n_levels), t, x).prev_sample
    a = (x - sd['normalizer.params_dict.action.offset']) / sd['normalizer.params_dict.action.scale']
    return a[:, TO - 1:TO - 1 + TA]

# --- tests --------------------------------------------------------------------------------------------------------
MF = dict(n_layer=2, n_head=2, n_emb=32, visual_cond_len=16, diffusion_timestep_embed_dim=16, diffusion_target_t_embed_dim=16,
          encoder_output_dim=24, downsample_points=True, num_inference_steps=3, qkv_bias=False, qk_norm=False,
          pointcloud_encoder_cfg=PC_CFG | {'pointwise': True, 'num_points': 16}, sample_t_mode_flow='beta', language_conditioned=False)
SCHED = {'_target_': 'diffusers.schedulers.scheduling_ddim.DDIMScheduler', 'num_train_timesteps': 100, 'beta_start': 1e-4, 'beta_end': 0.02,
         'beta_schedule': 'squaredcos_cap_v2', 'clip_sample': True, 'set_alpha_to_one': True, 'steps_offset': 0, 'prediction_type': 'sample'}
DP3 = dict(encoder_output_dim=24, diffusion_step_embed_dim=16, down_dims=[16, 32], kernel_size=5, n_groups=8, condition_type='film',
           num_inference_steps=4, noise_scheduler=SCHED, pointcloud_encoder_cfg=PC_CFG)

def _obs(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {'point_cloud': torch.randn(B, TO, P, 3, generator=g), 'agent_pos': torch.randn(B, TO, DS, generator=g)}

def _check_tensors(ours, sd, rename):
    "Every original tensor equals the tensor it was mapped to; all of ours are filled."
    placed = {rename(k): v for k, v in sd.items() if not k.endswith('_dummy_variable')}
    assert sorted(placed) == sorted(ours)
    for k, v in placed.items(): assert torch.equal(ours[k], v), k

def _mf_name(k):
    "The expected place of an original ManiFlow key (written independently of the importer's rules)."
    fixed = {'model.pos_emb': 'model.x_pos', 'model.vis_cond_pos_embed': 'model.cond_pos', 'model.final_layer.norm_final.weight': 'model.out_norm.weight'}
    if k in fixed: return fixed[k]
    for a, b in [('normalizer.params_dict.', 'normalizer.fields.'), ('.input_stats.', '.'), ('obs_encoder.extractor.final_projection', 'obs_encoder.encoders.point_cloud.proj'),
                 ('obs_encoder.extractor', 'obs_encoder.encoders.point_cloud'), ('obs_encoder.state_mlp', 'obs_encoder.encoders.agent_pos.net'),
                 ('model.input_emb', 'model.x_in'), ('model.vis_cond_obs_emb', 'model.cond_in'), ('flow_timestep_encoder.1', 't_emb.mlp.0'),
                 ('flow_timestep_encoder.3', 't_emb.mlp.2'), ('flow_target_t_encoder.1', 'dt_emb.mlp.0'), ('flow_target_t_encoder.3', 'dt_emb.mlp.2'),
                 ('timestep_target_t_adaptor', 'c_mix'), ('mlp.fc1', 'mlp.0'), ('mlp.fc2', 'mlp.2'), ('adaLN_modulation', 'adaLN'),
                 ('final_layer.ffn_final.fc1', 'out.0'), ('final_layer.ffn_final.fc2', 'out.2')]:
        k = k.replace(a, b)
    return k

def _dp3_name(k):
    k = _mf_name(k) if k.startswith(('normalizer', 'obs_encoder')) else k
    for a, b in [('diffusion_step_encoder', 'step_encoder'), ('blocks.0.block.', 'block1.'), ('blocks.1.block.', 'block2.'), ('cond_encoder', 'film'),
                 ('residual_conv', 'skip'), ('mid_modules', 'mid'), ('final_conv.0.block.', 'final.0.'), ('final_conv.1', 'final.1')]:
        k = k.replace(a, b)
    for a, b in [('down_modules', 'down'), ('up_modules', 'up')]:
        parts = k.split('.')
        if parts[1] == a: k = '.'.join(['model', b + ('sample' if parts[3] == '2' else ''), parts[2], *([] if parts[3] == '2' else [parts[3]]), *parts[4 + (parts[3] == '2'):]])
    return k

def test_maniflow_import_matches_original(tmp_path):
    sd = random_sd(maniflow_layout(2, 32, 16, 16, 24) + normalizer_layout(), seed=0)
    ema = random_sd(maniflow_layout(2, 32, 16, 16, 24) + normalizer_layout(), seed=1)
    src = write_original(tmp_path, original_cfg(MF), sd, 'mf.ckpt', ema)
    ck = import_checkpoint('maniflow', src, tmp_path / 'ours.ckpt')
    _check_tensors(ck['model'], sd, _mf_name); _check_tensors(ck['ema']['model'], ema, _mf_name)
    assert ck['imported'] | {'source': None} == {'kind': 'maniflow', 'upstream': 'geyan21/ManiFlow_Policy@c631661', 'source': None, 'epoch': 3, 'global_step': 500}
    obs, noise = _obs(), torch.randn(3, T, DA, generator=torch.Generator().manual_seed(0))
    for use_ema, w in ((False, sd), (True, ema)):
        pol = load_policy_from_checkpoint(tmp_path / 'ours.ckpt', use_ema=use_ema)
        got = pol.predict_action(obs, torch.Generator().manual_seed(0))['action']
        with torch.no_grad(): want = maniflow_actions(w, obs, noise, K=16, H=2, n_layer=2, N=3)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    cfg = OmegaConf.create(ck['config'])
    assert (cfg.task.name, cfg.task.dataset_path, cfg.horizon, cfg.n_action_steps) == ('door-open-v3', 'data/metaworld_door-open_expert.zarr', 4, 3)

def test_dp3_import_matches_original(tmp_path):
    sd = random_sd(dp3_layout(24, 16, [16, 32], 5) + normalizer_layout(), seed=2)
    src = write_original(tmp_path, original_cfg(DP3), sd, 'dp3.ckpt')
    ck = import_checkpoint('dp3', src, tmp_path / 'ours.ckpt')
    _check_tensors(ck['model'], sd, _dp3_name)
    pol = load_policy_from_checkpoint(tmp_path / 'ours.ckpt')
    obs, noise = _obs(), torch.randn(3, T, DA, generator=torch.Generator().manual_seed(0))
    got = pol.predict_action(obs, torch.Generator().manual_seed(0))['action']
    with torch.no_grad(): want = dp3_actions(sd, obs, noise, SCHED, N=4, n_levels=2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

def test_normalizer_carried(tmp_path):
    "The imported normalizer is the original affine map, and its fitted statistics come along."
    sd = random_sd(dp3_layout(24, 16, [16, 32], 5) + normalizer_layout(), seed=3)
    pol = load_policy_from_checkpoint(write_ours(tmp_path, 'dp3', sd, DP3))
    x = torch.randn(5, DS)
    torch.testing.assert_close(pol.normalizer['agent_pos'].normalize(x), nz(sd, 'agent_pos', x))
    for n in ('min', 'max', 'mean', 'std'): assert torch.equal(getattr(pol.normalizer['point_cloud'], n), sd[f'normalizer.params_dict.point_cloud.input_stats.{n}'])

def write_ours(tmp_path, kind, sd, policy, overrides=()):
    src = write_original(tmp_path, original_cfg(policy), sd, f'{kind}_orig.ckpt')
    import_checkpoint(kind, src, tmp_path / f'{kind}_ours.ckpt', overrides=overrides)
    return tmp_path / f'{kind}_ours.ckpt'

def test_refusals(tmp_path, capsys):
    sd = random_sd(maniflow_layout(2, 32, 16, 16, 24) + normalizer_layout(), seed=0)
    torch.save({'cfg': original_cfg(MF), 'state_dicts': {'model': sd}, 'pickles': {}, 'hook': eval}, tmp_path / 'evil.ckpt')
    with pytest.raises(UserError, match='refusing to unpickle eval'): import_checkpoint('maniflow', tmp_path / 'evil.ckpt', tmp_path / 'o.ckpt')
    assert not (tmp_path / 'o.ckpt').exists()
    with pytest.raises(SystemExit) as e: import_cli(['maniflow', str(tmp_path / 'evil.ckpt'), str(tmp_path / 'o.ckpt')])
    assert e.value.code == 2 and 'maniflow-import: ' in capsys.readouterr().err
    import_cli(['maniflow', str(tmp_path / 'evil.ckpt'), str(tmp_path / 'o.ckpt'), '--trust'])   # trusted: read as the original would
    assert (tmp_path / 'o.ckpt').exists()
    bad = dict(sd); bad['model.blocks.0.cross_attn.q.bias'] = torch.zeros(32)
    with pytest.raises(UserError, match='without a place in our policy: model.blocks.0.cross_attn.q.bias'):
        write_ours(tmp_path, 'maniflow', bad, MF)
    with pytest.raises(UserError, match='does not fill: model.blocks.0.cross_attn.q_norm.weight'):   # qk_norm: tensors this file lacks
        write_ours(tmp_path, 'maniflow', sd, MF | {'qk_norm': True})
    with pytest.raises(UserError, match='pointwise'): write_ours(tmp_path, 'maniflow', sd, MF | {'pointcloud_encoder_cfg': PC_CFG})

def imported_run(tmp_path, seed:int, *overrides) -> tuple:
    "An imported ManiFlow checkpoint of a tiny 2-step run, with `resume_checkpoint_path` pointing at it: (config, model tensors)."
    from maniflow_nb.data import make_synthetic_store
    store = make_synthetic_store(tmp_path / 's.zarr', n_episodes=3, episode_len=10, n_points=P)
    sd = random_sd(maniflow_layout(2, 32, 16, 16, 24) + normalizer_layout(), seed=seed)
    out = write_ours(tmp_path, 'maniflow', sd, MF, [f'task.dataset_path={store}', 'training.batch_size=4', 'training.num_epochs=1',
                                                    'training.max_train_steps=2', 'training.max_val_steps=1',
                                                    'trainer.accelerator=cpu', f'run_dir={tmp_path}/run', *overrides])
    cfg = OmegaConf.create(load_checkpoint(out)['config'])
    cfg.training.resume_checkpoint_path = str(out)
    return cfg, load_checkpoint(out)['model']

def test_resume_from_import(tmp_path):
    "The legacy trainer resumes from an imported checkpoint: the weights come in and training goes on."
    from maniflow_nb.workspace import TrainWorkspace
    cfg, imported = imported_run(tmp_path, 4, 'trainer=legacy')
    ws = TrainWorkspace(cfg)
    assert ws.resume() is not None
    assert all(torch.equal(v, imported[k]) for k, v in ws.model.state_dict().items())
    ws.run()
    assert ws.global_step == 2 and not torch.equal(ws.model.state_dict()['model.x_in.weight'], imported['model.x_in.weight'])

def test_lightning_resumes_from_import(tmp_path):
    "Lightning resumes from an imported checkpoint too: training starts from the imported weights and goes on."
    from maniflow_nb.lightning import fit
    from maniflow_nb.policies import make_policy
    cfg, imported = imported_run(tmp_path, 5, 'trainer=lightning', 'trainer.progress_bar=false', 'logger=csv')
    res = fit(cfg)
    trained, fresh = res['module'].policy.state_dict(), make_policy(cfg, None).state_dict()
    gap = lambda a: sum(float((a[k].float() - imported[k].float()).norm()) for k in imported if 'normalizer' not in k and k in a)
    assert res['global_step'] == 2 and not torch.equal(trained['model.x_in.weight'], imported['model.x_in.weight'])
    assert gap(trained) < 0.05 * gap(fresh), (gap(trained), gap(fresh))     # two small steps away from the import, not from a new init
