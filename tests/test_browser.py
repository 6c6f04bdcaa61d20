"""The static dashboard page in a real browser: `maniflow-plot --html` over the committed fixture runs, loaded by
headless Chromium (installed by tools/sysdeps.sh); what the browser renders must name the runs, show their success
rates and hold the curves as an image. Skipped, with the reason, where Chromium is missing or cannot start."""
import re, shutil, subprocess, tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT/'tests'/'fixtures'/'runs'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']

def chromium() -> str:
    exe = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if exe is None: pytest.skip('no chromium on PATH (bash tools/sysdeps.sh installs it)')
    return exe

def browse(page:Path, *what) -> subprocess.CompletedProcess:
    "Chromium on `page` with a fresh profile; skip when it cannot start."
    with tempfile.TemporaryDirectory() as prof:
        try: r = subprocess.run([chromium(), *FLAGS, f'--user-data-dir={prof}', *what, page.as_uri()],
                                capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired: pytest.skip('chromium did not finish within 120 s')
    if r.returncode != 0 and not r.stdout: pytest.skip(f'chromium cannot start here: {(r.stderr.strip().splitlines() or ["?"])[-1]}')
    return r

@pytest.fixture(scope='module')
def page(tmp_path_factory):
    from maniflow_nb.dashboard import plot_cli
    d = tmp_path_factory.mktemp('page')
    for r in ('legacy', 'lightning'): shutil.copytree(FIXTURES/r, d/'runs'/r)
    plot_cli([str(d/'runs'/'legacy'), str(d/'runs'/'lightning'), '--out', str(d/'curves.png'), '--html', str(d/'page.html')])
    return d/'page.html'

def test_dashboard_page_in_chromium(page):
    dom = browse(page, '--dump-dom').stdout
    assert '<title>maniflow_nb runs</title>' in dom, dom[:500]
    runs = re.findall(r'<td class="mf-run">([^<]+)</td>', dom)
    assert runs == ['legacy', 'lightning'], runs
    assert 'success rate: 0.750' in dom and 'success rate: 0.500' in dom
    img = re.search(r'<img class="mf-curves"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]{1000,})"', dom)
    assert img, 'no curves image in the rendered page'
    assert 'class="mf-sec"' in dom and 'title="trainer.name"' in dom      # the grouped config diff

def test_dashboard_page_screenshot(page, tmp_path):
    "The page renders to pixels: a screenshot of the expected size that is not blank."
    from PIL import Image
    import numpy as np
    shot = tmp_path/'shot.png'
    browse(page, f'--screenshot={shot}', '--window-size=1200,900', '--hide-scrollbars')
    if not shot.is_file(): pytest.skip('chromium wrote no screenshot')
    im = np.asarray(Image.open(shot).convert('RGB'))
    assert im.shape == (900, 1200, 3) and im.std() > 10, (im.shape, im.std())
