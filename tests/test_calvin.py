"""The CALVIN guide's two commands in sequence: convert a CALVIN split with the converter's defaults, then train DP3
on it with `dp3_calvin` (XYZ of the 2048-point XYZRGB clouds). The split is a tiny fixture in CALVIN's real format."""
import os, sys, subprocess
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'PYTHONWARNINGS': 'ignore'}
TINY_DP3 = ['policy.encoder.pointnet_hidden=[16,16,16]', 'policy.encoder.pc_dim=16', 'policy.encoder.state_hidden=[16]',
            'policy.encoder.state_dim=16', 'policy.unet.down_dims=[16,32]', 'policy.unet.diffusion_step_embed_dim=16',
            'policy.num_inference_steps=2', 'training.batch_size=4', 'training.num_epochs=1', 'training.max_train_steps=2',
            'training.max_val_steps=1', 'trainer.accelerator=cpu', 'trainer.progress_bar=false', 'logger.tensorboard=false',
            'logger.wandb.enabled=false']

def run(*cmd, env=ENV):
    return subprocess.run([PY, '-c', 'import sys; from maniflow_nb.{} import {}; sys.exit({}(sys.argv[1:]))'.format(*cmd[0]),
                           *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

def test_convert_then_train_dp3_calvin(tmp_path):
    from maniflow_nb.calvin import make_calvin_fixture
    make_calvin_fixture(tmp_path/'calvin', n_episodes=4, episode_len=8)
    store = tmp_path/'calvin_D.zarr'
    r = run(('convert', 'convert_cli', 'convert_cli'), 'calvin', str(tmp_path/'calvin'), str(store), '--workers', '1')
    assert r.returncode == 0, r.stderr[-2000:]
    rd = tmp_path/'run'
    r = run(('train', 'main', 'main'), '--config-name', 'dp3_calvin', *TINY_DP3, f'run_dir={rd}',
            env={**ENV, 'CALVIN_ZARR_PATH': str(store)})
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load((rd/'config.yaml').read_text())
    assert cfg['task']['dataset_path'] == str(store)                          # the environment variable was used
    assert cfg['task']['shape_meta']['obs']['point_cloud']['shape'] == [2048, 3]
    assert (rd/'checkpoints'/'last.ckpt').exists()

def test_two_stores_from_the_shell(tmp_path):
    "`maniflow-train ... task.dataset_path='a.zarr,b.zarr' task.dataset.sampling=uniform` as a shell passes it (quotes gone)."
    from maniflow_nb.data import make_synthetic_store
    a = make_synthetic_store(tmp_path/'a.zarr', n_episodes=4, episode_len=20, seed=0)
    b = make_synthetic_store(tmp_path/'b.zarr', n_episodes=4, episode_len=20, seed=1)
    rd = tmp_path/'run'
    r = run(('train', 'main', 'main'), '--config-name', 'maniflow_state_metaworld', 'trainer=legacy', 'policy=mlp',
            'policy.hidden=16', f'task.dataset_path={a},{b}', 'task.dataset.sampling=uniform', f'run_dir={rd}',
            'training.num_epochs=1', 'training.batch_size=8', 'logger.tensorboard=false', 'trainer.progress_bar=false',
            'trainer.accelerator=cpu')
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load((rd/'config.yaml').read_text())
    assert cfg['task']['dataset_path'] == f'{a},{b}' and cfg['task']['dataset']['sampling'] == 'uniform'
