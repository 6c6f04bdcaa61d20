"""The tiny deterministic training run the trainer tests share: the state config with the MLP policy on a small store."""
from maniflow_nb.data import make_synthetic_store

def tiny_store(path):
    "Six 20-step episodes."
    return make_synthetic_store(path, n_episodes=6, episode_len=20, seed=0)

def tiny_argv(store, rd, trainer, *ov):
    "`maniflow-train` arguments of a 2-epoch CPU run with `trainer`; `ov` are appended (and win)."
    return ['--config-name', 'maniflow_state_metaworld', f'trainer={trainer}', 'policy=mlp', 'policy.hidden=32',
            f'task.dataset_path={store}', f'run_dir={rd}', 'training.num_epochs=2', 'training.batch_size=16',
            'training.lr_warmup_steps=2', 'training.checkpoint_every=1', 'logger.tensorboard=false',
            'trainer.progress_bar=false', 'trainer.accelerator=cpu', 'trainer.deterministic=true', *ov]
