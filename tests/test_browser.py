"""Pages in a real browser, headless Chromium (installed by tools/sysdeps.sh): the static dashboard page
(`maniflow-plot --html` over the committed fixture runs) must name the runs, show their success rates and hold the
curves as an image; an executed docs page, rendered as tools/check_docs.py renders it, must show its title and its
figures decoded at their real size, with no stderr or error block. Skipped, with the reason, where Chromium is
missing or cannot start."""
import re, shutil, subprocess, sys, tempfile
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

# ---------------------------------------------------------------- a rendered docs page
PROBE = """<script>window.addEventListener('load', () => { for (const im of document.images)
  im.setAttribute('data-natural', im.naturalWidth + 'x' + im.naturalHeight); });</script>"""   # what the browser decoded

def docs_page(name:str, dest:Path) -> Path:
    "`nbs/<name>` rendered as tools/check_docs.py renders it (nbdev's doc processors, then nbconvert), with PROBE added."
    code = 'import sys; sys.path.insert(0, "tools"); from check_docs import render_page; render_page(sys.argv[1], sys.argv[2])'
    r = subprocess.run([sys.executable, '-c', code, name, str(dest)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    page = dest/name.replace('.ipynb', '.html')
    page.write_text(page.read_text().replace('</body>', PROBE + '</body>'))
    return page

def attrs(tag:str) -> dict: return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))

@pytest.mark.parametrize('name,title,kind,text', [('29_parity.ipynb', 'Parity', 'png', 'identical within tolerance'),
                                                  ('28_evaluate.ipynb', 'Evaluate', 'jpeg', 'Rollout videos')])
def test_docs_page_in_chromium(tmp_path, name, title, kind, text):
    "An executed docs page as a reader's browser shows it: its title, its figures decoded at their real size, no stderr or error block."
    import base64, io
    from PIL import Image
    chromium()                                                              # skip before rendering when there is none
    dom = browse(docs_page(name, tmp_path), '--dump-dom', '--virtual-time-budget=10000').stdout
    assert f'<title>{title}</title>' in dom and f'<h1 id="{title}">{title}' in dom, dom[:1000]
    assert text in dom
    imgs = [attrs(t) for t in re.findall(r'<img [^>]*>', dom) if 'src="data:image/' in t]
    assert imgs and all('data-natural' in im for im in imgs), [{k: v[:40] for k, v in im.items()} for im in imgs]
    for im in imgs:
        w, h = map(int, im['data-natural'].split('x'))
        assert w > 300 and h > 100, (w, h)                                  # a figure, not a broken-image icon
        assert Image.open(io.BytesIO(base64.b64decode(im['src'].split(',', 1)[1]))).size == (w, h)
    assert any(im['src'].startswith(f'data:image/{kind};base64,') for im in imgs)
    assert not re.search(r'class="[^"]*output_(stderr|error)', dom), 'a stderr or error block on the page'
