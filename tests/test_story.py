"""A run tells its story (issue 15): what a user sees in the terminal (progress, no third-party noise, the model and
end-of-run summaries) and what lands in TensorBoard and wandb (action-chunk figures, rollout videos, eval results)."""
import fcntl, io, os, struct, subprocess, sys, termios, pty, re
from pathlib import Path
import numpy as np, pytest, imageio.v2 as iio
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from maniflow_nb.data import make_synthetic_store

ENV = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_') and k != 'PYTHONWARNINGS'}
ENV.update(OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), WANDB_MODE='offline', MUJOCO_GL='egl', WANDB_SILENT='true')
NOISE = ('srun', 'LeafSpec', 'in eval mode', 'GPU available', 'TPU available', 'HPU available', 'litlogger', 'Tip:',
         'was configured so 100%', 'Loading `train_dataloader`', 'Warning', 'warn(')

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp('data')/'s.zarr', n_episodes=6, episode_len=20, seed=0)

def train_args(store, run_dir, trainer, *extra):
    return [sys.executable, '-m', 'maniflow_nb.train', '--config-name', 'maniflow_state_metaworld', f'task.dataset_path={store}',
            f'run_dir={run_dir}', 'policy=mlp', 'policy.hidden=32', 'training.num_epochs=2', 'training.batch_size=16',
            'training.lr_warmup_steps=2', 'training.sample_every=1', f'trainer={trainer}', 'trainer.accelerator=cpu',
            'logger.tensorboard=false', *extra]

def in_terminal(args, env=ENV, cols=150) -> tuple:
    "Run `args` with a pseudo-terminal (cols wide) as stdin/stdout/stderr: (return code, everything it printed)."
    m, s = pty.openpty(); fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack('HHHH', 40, cols, 0, 0))
    p = subprocess.Popen(args, stdin=s, stdout=s, stderr=s, cwd=ROOT, env=env, close_fds=True); os.close(s)
    out = b''
    while True:
        try: chunk = os.read(m, 1 << 16)
        except OSError: break
        if not chunk: break
        out += chunk
    os.close(m)
    return p.wait(timeout=120), out.decode(errors='replace')

@pytest.mark.parametrize('trainer', ['legacy', 'lightning'])
def test_terminal_story(store, tmp_path, trainer):
    "In a terminal: a progress bar with step, loss, lr and rate; the model summary; the run summary; no third-party noise."
    rc, out = in_terminal(train_args(store, tmp_path/'run', trainer))
    assert rc == 0, out[-3000:]
    bar = [l for l in out.replace('\r', '\n').splitlines() if '%|' in l and 'train_loss=' in l]
    assert bar, out[-3000:]
    assert re.search(r'\d(it|batch)/s', bar[-1]) and 'step=' in bar[-1] and 'lr=' in bar[-1], bar[-1]
    assert re.search(r'<\d\d:\d\d', bar[0]) or '<?' in bar[0]             # tqdm's elapsed<remaining (ETA)
    assert 'policy MLPPolicy:' in out and 'head' in out                 # parameters per part, once
    assert out.count('policy MLPPolicy:') == 1
    for line in ('== run summary', 'train_loss  final', 'val_loss    final', 'best checkpoint: ', 'last checkpoint: '):
        assert line in out, (line, out[-2000:])
    assert f"last checkpoint: {tmp_path/'run'/'checkpoints'/'last.ckpt'}" in out
    noise = [n for n in NOISE if n in out]
    assert not noise, (noise, out[-3000:])

def test_no_bar_in_batch_jobs(store, tmp_path):
    "Under SLURM (a batch job) the bar is off by default, also with a terminal."
    rc, out = in_terminal(train_args(store, tmp_path/'run', 'legacy', 'training.num_epochs=1'),
                          {**ENV, 'SLURM_JOB_ID': '1', 'SLURM_JOB_NAME': 'train'})
    assert rc == 0, out[-3000:]
    assert '%|' not in out and '== run summary' in out

def events(d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(d), size_guidance={'images': 0, 'scalars': 0}); acc.Reload()
    return acc

@pytest.mark.parametrize('trainer', ['legacy', 'lightning'])
def test_media_in_tensorboard_and_wandb(store, tmp_path, trainer):
    "Predicted-vs-demonstrated action chunks as images, per sampling epoch, in TensorBoard run 'train' and offline wandb."
    r = subprocess.run(train_args(store, tmp_path/'run', trainer, 'logger.tensorboard=true', 'logger.wandb.enabled=true',
                                  'trainer.progress_bar=false'), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tb = tmp_path/'run'/'tensorboard'
    assert [p.name for p in tb.iterdir()] == ['train']                   # a named run, not '.'
    acc = events(tb/'train')
    assert 'train_loss' in acc.Tags()['scalars']
    imgs = acc.Images('train/action_chunk')
    assert len(imgs) == 2 and imgs[0].width > imgs[0].height > 50       # one figure per sampling epoch
    media = list((tmp_path/'run'/'wandb').glob('offline-run-*/files/media/images/train/action_chunk*.png'))
    assert len(media) == 2, list((tmp_path/'run'/'wandb').rglob('*'))[:40]

def grid_video(path) -> Path:
    from maniflow_nb.envs import label_frames, video_grid, write_video
    clips = [label_frames([np.full((48, 48, 3), 20 * t + 40 * e, np.uint8) for t in range(6)], f'seed 0 ep {e}', e % 2 == 0) for e in range(4)]
    return write_video(video_grid(clips), path)

def test_rollout_video_during_lightning_training(store, tmp_path):
    "The env-rollout callback logs the runner's first (grid) video: an animated GIF in TensorBoard, the file in wandb."
    from maniflow_nb.config import compose_config
    from maniflow_nb.lightning import fit, EnvEval
    video = grid_video(tmp_path/'grid')
    class Runner:
        def run(self, policy): return {'test_mean_score': 0.5, 'video_paths': [str(video)]}
    cfg = compose_config('maniflow_state_metaworld', train_args(store, tmp_path/'run', 'lightning', 'logger.tensorboard=true',
                         'logger.wandb.enabled=true', 'trainer.progress_bar=false', 'training.sample_every=0')[5:])
    fit(cfg, callbacks=[EnvEval(Runner, every=1)])
    acc = events(tmp_path/'run'/'tensorboard'/'train')
    got = acc.Images('rollout/video')
    assert len(got) == 2 and (got[0].width, got[0].height) == (96, 96), (got[0].width, got[0].height)   # the 2x2 grid of 48x48 clips
    assert len(iio.mimread(io.BytesIO(got[0].encoded_image_string), format='GIF')) == len(iio.mimread(str(video), memtest=False))
    assert len(list((tmp_path/'run'/'wandb').glob('offline-run-*/files/media/videos/rollout/video*'))) == 2

def test_eval_logs_into_the_run(tmp_path):
    "maniflow-eval's scores and grid video go to TensorBoard run 'eval' and the run's wandb run, at the checkpoint's step."
    from maniflow_nb.config import compose_config
    from maniflow_nb.evaluate import log_eval
    video = grid_video(tmp_path/'videos'/'grid')
    cfg = compose_config('maniflow_state_metaworld', ['logger.tensorboard=true', 'logger.wandb.enabled=true'])
    log_eval({'test_mean_score': 0.75, 'mean_reward': 3.0, 'video_paths': [str(video)]}, cfg, tmp_path, step=40)
    acc = events(tmp_path/'tensorboard'/'eval')
    assert [(e.step, e.value) for e in acc.Scalars('eval/test_mean_score')] == [(40, 0.75)]
    assert acc.Images('eval/video')[0].step == 40
    assert list(tmp_path.glob('wandb/offline-run-*/files/media/videos/eval/video*'))

@pytest.mark.slow
def test_real_rollout_video_in_legacy_training(store, tmp_path):
    "A MetaWorld rollout every epoch with videos on: the grid video reaches TensorBoard."
    r = subprocess.run(train_args(store, tmp_path/'run', 'legacy', 'logger.tensorboard=true', 'trainer.progress_bar=false',
                                  'training.num_epochs=1', 'training.eval_every=1', 'task.env_runner.n_episodes=1',
                                  'task.env_runner.max_steps=10', 'task.env_runner.video=true'),
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert events(tmp_path/'run'/'tensorboard'/'train').Images('rollout/video')

def test_job_notebook_ends_with_curves_and_frames(tmp_path):
    "The papermill job `nbs/train.ipynb`, evaluated: its executed record ends with the run's curves (also in run_dir) and key frames of its labelled grid."
    import base64, io, json
    from PIL import Image
    rd = tmp_path/'job'; rd.mkdir()
    ov = ['policy=mlp', 'task.shape_meta.obs.point_cloud.shape=[64,3]', 'training.num_epochs=2', 'training.batch_size=8',
          'training.max_train_steps=2', 'training.max_val_steps=1', 'trainer.accelerator=cpu', 'logger.tensorboard=false',
          'task.env_runner.n_episodes=2', 'task.env_runner.max_steps=4']
    r = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT/'nbs'/'train.ipynb'), str(rd/'train.ipynb'), '--cwd', str(ROOT),
                        '-p', 'run_dir', str(rd), '-p', 'evaluate', 'True', '-p', 'overrides', json.dumps(ov)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (rd/'curves.png').is_file() and json.loads((rd/'eval.json').read_text())['n_episodes'] == 2
    outs = [o for o in json.loads((rd/'train.ipynb').read_text())['cells'][-1]['outputs']]
    text = ''.join(''.join(o.get('text', '')) for o in outs)
    assert f"curves of 1 run(s): {rd/'curves.png'}" in text and f"key frames of {rd/'videos'/'reach-v3_seed0.mp4'}" in text, text
    imgs = [Image.open(io.BytesIO(base64.b64decode(o['data'][k]))) for o in outs for k in ('image/png', 'image/jpeg') if k in o.get('data', {})]
    assert [im.format for im in imgs] == ['PNG', 'JPEG'], imgs
    assert imgs[0].size == Image.open(rd/'curves.png').size == (1000, 400)        # the curves figure, as written to the run dir
    assert imgs[1].size == (4 * 2 * 128, 128), imgs[1].size                        # 4 key frames of the 1x2 grid of 128 px episodes
    assert np.asarray(imgs[1]).std() > 10                                         # rendered frames, not a blank image
