"""maniflow_nb.slurm: the rendered sbatch templates, the environment and partition a job carries, `maniflow-slurm` on
good and bad input; then a real single-node SLURM cluster (slurm/cluster_up.sh) running the rendered sbatch jobs with
papermill: a 2-rank CPU DDP job, a 2-task array, and a preemption (SIGUSR1 -> checkpoint -> requeue -> resume -> COMPLETED).

The cluster tests need root and the Debian packages `slurmctld slurmd slurm-client munge`; skipped otherwise. Part of the default
suite (the CI machine installs the packages through `make sysdeps`); ~3 min, mostly process start-up."""
import os, re, sys, json, time, shutil, signal, subprocess
from pathlib import Path
import pytest, yaml
from maniflow_nb.slurm import render_sbatch

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

# --- sbatch templates and the CLI (no cluster needed) ---
TEMPLATES = {'single_gpu.sbatch': dict(gpus=1, run_dir='runs/single'),
             'ddp.sbatch': dict(gpus=4, run_dir='runs/ddp'),
             'array.sbatch': dict(gpus=1, array='0-3', run_dir='runs/sweep')}

@pytest.mark.parametrize('name', sorted(TEMPLATES))
def test_slurm_templates_in_sync(name):
    "slurm/*.sbatch are the rendered templates (regenerate: cd tests; python -c 'from test_slurm import write_templates; write_templates()')."
    assert (ROOT/'slurm'/name).read_text() == render_sbatch('maniflow_pointcloud_metaworld', ['training.num_epochs=100'], **TEMPLATES[name])

def write_templates():
    for name, kw in TEMPLATES.items():
        (ROOT/'slurm'/name).write_text(render_sbatch('maniflow_pointcloud_metaworld', ['training.num_epochs=100'], **kw))

def _cli(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'maniflow_nb.slurm', *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=120)

def test_cli_renders_job(tmp_path):
    r = _cli('--config-name', 'maniflow_state_metaworld', '--nodes', '1', '--gpus', '4', '--array', '0-3',
             '--run_dir', str(tmp_path/'sweep'), 'training.num_epochs=2', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = (tmp_path/'sweep'/'job.sbatch').read_text()
    assert r.stdout.strip() == str(tmp_path/'sweep'/'job.sbatch')
    assert '#SBATCH --array=0-3' in script and '#SBATCH --ntasks-per-node=4' in script and f'cd {tmp_path}' in script
    assert sorted(p.name for p in (tmp_path/'sweep'/'params').iterdir()) == [f'task_{i}.yaml' for i in range(4)]

def test_cli_bad_config_subprocess(tmp_path):
    r = _cli('--config-name', 'maniflow_state_metaworld', 'training.batchsize=3', '--run_dir', str(tmp_path/'job'), cwd=tmp_path)
    assert r.returncode == 2 and 'batchsize' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/'job').exists()

@pytest.mark.parametrize('args,expect', [
    (['--config-name', 'no_such_config'], 'no_such_config'),
    (['--config-name', 'maniflow_state_metaworld', '--array', '0-x'], "--array '0-x'"),
    (['--config-name', 'maniflow_state_metaworld', '--array', '0-1', '--sweep', 'missing.yaml'], 'missing.yaml')])
def test_cli_bad_input(tmp_path, capsys, monkeypatch, args, expect):
    "The same entry point in-process (a subprocess per case would cost ~10 s of imports each)."
    from maniflow_nb.slurm import slurm_cli
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: slurm_cli([*args, '--run_dir', str(tmp_path/'job')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'job').exists()


def test_slurm_cli_multirun(tmp_path, monkeypatch):
    "`maniflow-slurm -m a=1,2 b=x,y`: a 4-task array, one params file per combination."
    import yaml
    from maniflow_nb.slurm import slurm_cli
    monkeypatch.chdir(tmp_path)
    slurm_cli(['--config-name', 'maniflow_state_metaworld', '--gpus', '1', '--run_dir', str(tmp_path/'mr'), '-m',
               'training.seed=0,1', 'training.batch_size=8,16', 'training.num_epochs=2'])
    assert '#SBATCH --array=0-3' in (tmp_path/'mr'/'job.sbatch').read_text()
    ov = [yaml.safe_load((tmp_path/'mr'/'params'/f'task_{i}.yaml').read_text())['overrides'] for i in range(4)]
    assert ov == [['training.num_epochs=2', f'training.seed={s}', f'training.batch_size={b}'] for s in (0, 1) for b in (8, 16)]



def test_job_carries_config_env_and_no_placeholder_partition(tmp_path, monkeypatch):
    "A dp3_calvin job rendered with CALVIN_ZARR_PATH set exports it; without --partition there is no partition line (no CHANGE_ME)."
    from maniflow_nb.slurm import write_job
    monkeypatch.setenv('CALVIN_ZARR_PATH', str(tmp_path/'calvin_D.zarr'))
    monkeypatch.delenv('ROBOTWIN_ZARR_PATH', raising=False)
    script = write_job('dp3_calvin', ['training.num_epochs=1'], run_dir=str(tmp_path/'job'), gpus=1).read_text()
    assert f'export CALVIN_ZARR_PATH={tmp_path}/calvin_D.zarr' in script.splitlines()[script.splitlines().index('export PYTHONUNBUFFERED=1') + 1]
    assert 'CHANGE_ME' not in script and not [l for l in script.splitlines() if l.startswith('#SBATCH --partition')]
    assert '#SBATCH --export=ALL' in script and 'ROBOTWIN' not in script
    given = write_job('dp3_calvin', run_dir=str(tmp_path/'job2'), gpus=1, partition='gpu').read_text()
    assert '#SBATCH --partition=gpu' in given.splitlines()

# --- a real cluster ---
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
    from maniflow_nb.slurm import write_job
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
    assert 'launch: distributed via slurm, world_size=2' in out, out[-2000:]
    assert 'MEMBER: 1/2' in log and 'MEMBER: 2/2' in log, log[-3000:]        # both ranks joined (Lightning's info lines are quieted)
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

def _pending(pid:int, sig) -> bool:
    "Is `sig` pending (delivered, not yet handled) at process `pid`? From /proc/<pid>/status."
    st = dict(l.split(':', 1) for l in Path(f'/proc/{pid}/status').read_text().splitlines() if ':' in l)
    return bool((int(st['SigPnd'], 16) | int(st['ShdPnd'], 16)) & (1 << (int(sig) - 1)))

def test_preemption_requeue_resume(cluster):
    epochs = 30
    script = _write(cluster, 'pre', _overrides(cluster, epochs))
    jid = _sbatch(cluster, script)
    run = cluster['tmp']/'pre'
    t0 = time.time()
    while not (run/'checkpoints'/'last.ckpt').exists():            # training is under way
        assert time.time() - t0 < 300 and _jobs(cluster, jid)[0]['JobState'] in ('PENDING', 'RUNNING'), _jobs(cluster, jid)
        time.sleep(0.3)
    # Stop the training process first (its pid is in the run dir's lock), so that the rest of the training cannot finish
    # before the signal lands (on a fast machine it did: the job completed without a requeue); the signal stays
    # pending while it is stopped and is delivered when it continues.
    pid = json.loads((run/'run.lock').read_text())['pid']
    os.kill(pid, signal.SIGSTOP)
    try:
        r = subprocess.run(['scancel', '--signal=USR1', '--full', jid], env=cluster['env'], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        t1 = time.time()
        while not _pending(pid, signal.SIGUSR1):                      # SLURM delivers asynchronously: wait until it is there
            assert time.time() - t1 < 60, f'SIGUSR1 never reached the training process {pid}'
            time.sleep(0.05)
    finally: os.kill(pid, signal.SIGCONT)
    (job,) = _wait(cluster, jid, until={'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT'})
    log = ''.join(p.read_text() for p in run.glob('slurm-*.out'))
    assert job['JobState'] == 'COMPLETED' and job['Restarts'] == '1', (job, log[-3000:])
    assert 'restart 1' in log and 'DUE TO JOB REQUEUE' in log
    m = re.search(r'resumed at global step (\d+)', _text(run/'train.ipynb'))
    assert m and int(m.group(1)) > 0, log[-3000:]
    assert _step(run/'checkpoints'/'last.ckpt') == 2 * epochs
