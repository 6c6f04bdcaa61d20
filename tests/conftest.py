"""Shared pytest settings: `slow` and `gpu` tests are skipped unless asked for (--runslow / --rungpu)."""
import os, pytest

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
os.environ.setdefault('WANDB_MODE', 'offline')

def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='run tests marked slow')
    parser.addoption('--rungpu', action='store_true', help='run tests marked gpu')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running; skipped unless --runslow')
    config.addinivalue_line('markers', 'gpu: needs CUDA; skipped unless --rungpu')

def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark, opt in (('slow', '--runslow'), ('gpu', '--rungpu')):
            if mark in item.keywords and not config.getoption(opt):
                item.add_marker(pytest.mark.skip(reason=f'{mark} test: pass {opt} to run it'))
