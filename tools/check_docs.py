"""Docs check for CI (Quarto cannot be installed here): every notebook goes through nbdev's doc
processors (`nbdev.serve.proc_nbs`, what `nbdev_preview` runs before Quarto), then the processed
notebook renders to HTML with nbconvert. Also checks that the sidebar lists every notebook."""
import sys, yaml
from pathlib import Path
from nbconvert import HTMLExporter
import nbformat
from nbdev.serve import proc_nbs

def main():
    nbs = sorted(p.name for p in Path('nbs').glob('*.ipynb') if not p.name.startswith('_'))
    side = yaml.safe_load(Path('nbs/sidebar.yml').read_text())
    listed = {c for s in side['website']['sidebar']['contents'] for c in ([s] if isinstance(s, str) else s.get('contents', []))}
    missing = [n for n in nbs if n not in listed]
    if missing: sys.exit(f"nbs/sidebar.yml does not list: {missing}")
    cache = proc_nbs(n_workers=0)
    exp, bad = HTMLExporter(template_name='classic'), []
    for name in nbs:
        try:
            html, _ = exp.from_notebook_node(nbformat.read(Path(cache)/name, as_version=4))
            assert len(html) > 1000, f"{name}: empty HTML"
        except Exception as e: bad.append(f"{name}: {type(e).__name__}: {e}")
    if bad: sys.exit("docs render failed:\n" + "\n".join(bad))
    print(f"doccheck: {len(nbs)} notebooks processed and rendered to HTML")

if __name__ == '__main__': main()
