"""A real single-node SLURM cluster (slurm/cluster_up.sh) running the rendered sbatch jobs with papermill:
a 2-rank CPU DDP job, a 2-task array, and a preemption (SIGUSR1 -> checkpoint -> requeue -> resume -> COMPLETED).

Needs root and the Debian packages `slurmctld slurmd slurm-client munge`; skipped otherwise. Part of the default
suite (the CI machine installs the packages through `make sysdeps`); ~3 min, mostly process start-up."""
import os, re, json, time, shutil, subprocess
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT/'.venv'/'bin'/'python') if (ROOT/'.venv'/'bin'/'python').exists() else 'python'
PORT = 16817                                  # not the default 6817: leaves a cluster someone else runs alone
TERMINAL = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE'}

def _missing() -> str:
    "Why this machine cannot run a SLURM cluster ('' if it can)."
    if os.geteuid() != 0: return 'not root: slurm/cluster_up.sh runs slurmctld/slurmd as root'
    miss = [b for b in ('munged', 'slurmctld', 'slurmd', 'sbatch', 'scontrol') if not shutil.which(b)]
    return (f"SLURM not installed ({', '.join(miss)} missing): apt-get install -y --no-install-recommends "
            'slurmctld slurmd slurm-client munge') if miss else ''

@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    if why := _missing(): pytest.skip(why)
    tmp = tmp_path_factory.mktemp('slurm')
    state = Path(f'/tmp/maniflow_slurm_test_{os.getpid()}')
    env = {**os.environ, 'MANIFLOW_SLURM_PORT': str(PORT)}
    r = subprocess.run(['bash', str(ROOT/'slurm'/'cluster_up.sh'), str(state)], env=env, capture_output=True, text=True, timeout=120)
    if r.returncode: pytest.fail(f'cluster_up.sh failed: {r.stderr}')
    env = {**os.environ, 'SLURM_CONF': str(state/'slurm.conf'), 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline'}
    from maniflow_nb.data import make_synthetic_store
    make_synthetic_store(tmp/'s.zarr', n_episodes=4, episode_len=20)
    yield {'env': env, 'tmp': tmp, 'store': tmp/'s.zarr', 'notebook': str(ROOT/'nbs'/'train.ipynb')}
    subprocess.run(['bash', str(ROOT/'slurm'/'cluster_down.sh'), str(state)], env=env, capture_output=True, timeout=120)

def _overrides(c, epochs=1):
    return ['policy=mlp', f'task.dataset_path={c["store"]}', f'training.num_epochs={epochs}', 'training.batch_size=4',
            'training.max_train_steps=2', 'training.max_val_steps=1', 'logger.tensorboard=false']

def _write(c, name, overrides, **kw) -> Path:
    from maniflow_nb.launch import write_job
    return write_job('maniflow_state_metaworld', overrides, run_dir=str(c['tmp']/name), gpus=0, cpus_per_task=1, time='00:10:00',
                     partition='debug', setup='', workdir=str(ROOT), python=PY, notebook=c['notebook'], **kw)

def _sbatch(c, script) -> str:
    r = subprocess.run(['sbatch', '--parsable', str(script)], env=c['env'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(';')[0]

def _jobs(c, jid) -> list:
    "One dict of `scontrol show job -o` fields per job (per array task)."
    r = subprocess.run(['scontrol', 'show', 'job', '-o', jid], env=c['env'], capture_output=True, text=True, timeout=30)
    return [dict(re.findall(r'(\w+)=(\S*)', line)) for line in r.stdout.splitlines() if line.strip()]

def _wait(c, jid, timeout=400, until=TERMINAL) -> list:
    t0 = time.time()
    while time.time() - t0 < timeout:
        jobs = _jobs(c, jid)
        if jobs and all(j.get('JobState') in until for j in jobs): return jobs
        time.sleep(1)
    pytest.fail(f'job {jid} not done after {timeout}s: {_jobs(c, jid)}')

def _text(nb_path) -> str:
    "All text outputs of an executed notebook."
    nb = json.loads(Path(nb_path).read_text())
    return '\n'.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
                     for cell in nb['cells'] for o in cell.get('outputs', []))

def _step(ckpt) -> int:
    import torch
    return torch.load(ckpt, weights_only=True, map_location='cpu')['global_step']

def test_ddp_job(cluster):
    script = _write(cluster, 'ddp', _overrides(cluster), tasks_per_node=2)
    assert '#SBATCH --ntasks-per-node=2' in script.read_text()
    (job,) = _wait(cluster, _sbatch(cluster, script))
    run = cluster['tmp']/'ddp'
    log = ''.join(p.read_text() for p in run.glob('slurm-*.out'))
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', log[-3000:]
    out = _text(run/'train.ipynb')
    assert 'launch: distributed via slurm, world_size=2' in out and 'Starting with 2 processes' in out, out[-2000:]
    assert _step(run/'checkpoints'/'last.ckpt') == 2

def test_array_job(cluster, tmp_path):
    sweep = tmp_path/'sweep.yaml'
    sweep.write_text(yaml.safe_dump([['training.seed=3'], ['training.seed=4']]))
    script = _write(cluster, 'sweep', _overrides(cluster), array='0-1', sweep=str(sweep))
    jobs = _wait(cluster, _sbatch(cluster, script))
    assert len(jobs) == 2 and all(j['JobState'] == 'COMPLETED' for j in jobs), jobs
    for i, seed in enumerate((3, 4)):
        run = cluster['tmp']/'sweep'/f'task_{i}'
        assert (run/'train.ipynb').exists() and (run/'checkpoints'/'last.ckpt').exists()
        assert yaml.safe_load((run/'config.yaml').read_text())['training']['seed'] == seed

def test_preemption_requeue_resume(cluster):
    epochs = 30
    script = _write(cluster, 'pre', _overrides(cluster, epochs))
    jid = _sbatch(cluster, script)
    run = cluster['tmp']/'pre'
    t0 = time.time()
    while not (run/'checkpoints'/'last.ckpt').exists():            # training is under way
        assert time.time() - t0 < 300 and _jobs(cluster, jid)[0]['JobState'] in ('PENDING', 'RUNNING'), _jobs(cluster, jid)
        time.sleep(0.3)
    r = subprocess.run(['scancel', '--signal=USR1', '--full', jid], env=cluster['env'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (job,) = _wait(cluster, jid, until={'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT'})
    log = ''.join(p.read_text() for p in run.glob('slurm-*.out'))
    assert job['JobState'] == 'COMPLETED' and job['Restarts'] == '1', (job, log[-3000:])
    assert 'restart 1' in log and 'DUE TO JOB REQUEUE' in log
    m = re.search(r'resumed at global step (\d+)', _text(run/'train.ipynb'))
    assert m and int(m.group(1)) > 0, log[-3000:]
    assert _step(run/'checkpoints'/'last.ckpt') == 2 * epochs
