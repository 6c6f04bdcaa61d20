"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines cannot install).
`python tools/readme.py --check` exits 1 if README.md is out of date."""
import re, sys, nbformat
from pathlib import Path

def relink(md:str) -> str:
    "Links to notebooks are relative to `nbs/`; the README sits at the repository root."
    return re.sub(r'\]\((?!\w+://|/|#|nbs/)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)', r'](nbs/\1)', md)

def render(nb) -> str:
    "Markdown cells as they are (notebook links made root-relative); code cells (except `#| hide`) as python blocks."
    out = []
    for c in nb.cells:
        src = c.source.strip()
        if c.cell_type == 'markdown': out.append(relink(src))
        elif c.cell_type == 'code' and src and not src.startswith('#| hide'):
            out.append('```python\n' + '\n'.join(l for l in src.splitlines() if not l.startswith('#|')) + '\n```')
    return '\n\n'.join(out) + '\n'

def main():
    text = render(nbformat.read('nbs/index.ipynb', as_version=4))
    readme = Path('README.md')
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text: sys.exit('README.md is out of date: run python tools/readme.py')
        return
    readme.write_text(text)

if __name__ == '__main__': main()
