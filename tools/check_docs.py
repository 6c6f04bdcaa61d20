"""Docs check for CI (Quarto cannot be installed here). First the cheap checks: the sidebar lists exactly the
notebooks in `nbs/`, every link to a notebook section (`design.ipynb#timeline`) points at a heading that exists,
and no notebook cites notes from outside the project. Then every notebook goes through nbdev's doc processors
(`nbdev.serve.proc_nbs`, what `nbdev_preview` runs before Quarto) and the processed notebook renders to HTML
with nbconvert."""
import re, sys, yaml
from pathlib import Path
import nbformat

NBS = Path('nbs')
OUTSIDE_NOTES = ('design.md', 'rl_spec.md')   # steering notes that are not part of the project: link design.ipynb

def notebooks() -> list:
    "Every notebook of the docs site, by file name."
    return sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))

def sidebar_entries(items) -> list:
    "The notebook files a Quarto sidebar lists, sections included (nested at any depth)."
    out = []
    for it in items or []:
        if isinstance(it, str): out.append(it)
        elif isinstance(it, dict):
            if 'href' in it: out.append(it['href'])
            out += sidebar_entries(it.get('contents'))
    return out

def check_sidebar(nbs:list) -> list:
    "Problems: notebooks the sidebar misses, entries without a notebook, entries listed twice."
    side = yaml.safe_load((NBS/'sidebar.yml').read_text())
    listed = sidebar_entries(side['website']['sidebar']['contents'])
    probs = [f"nbs/sidebar.yml does not list {n}" for n in nbs if n not in listed]
    probs += [f"nbs/sidebar.yml lists {n}, which is not in nbs/" for n in listed if n not in nbs]
    probs += [f"nbs/sidebar.yml lists {n} twice" for n in sorted({n for n in listed if listed.count(n) > 1})]
    return probs

def markdown(name:str) -> list:
    "The markdown cells' sources of a notebook, with fenced code blocks removed."
    nb = nbformat.read(NBS/name, as_version=4)
    return [re.sub(r'```.*?```', '', c.source, flags=re.S) for c in nb.cells if c.cell_type == 'markdown']

def anchor(heading:str) -> str:
    "The id Quarto (pandoc) gives a heading: an explicit `{#id}`, else its text lowercased and hyphenated."
    if m := re.search(r'\{#([^}\s]+)[^}]*\}\s*$', heading): return m.group(1)
    t = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading).lower()       # links keep their text
    t = re.sub(r'[^\w\s.-]', '', t.replace('`', ''))
    return re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', t.strip()))

def anchors(name:str) -> set:
    "Ids of every heading of a notebook's markdown."
    return {anchor(l.lstrip('#').strip()) for src in markdown(name) for l in src.splitlines() if re.match(r'#{1,6}\s', l)}

def check_links(nbs:list) -> list:
    "Problems: links to a notebook that does not exist, or to a section it does not have."
    probs, cache = [], {}
    for name in nbs:
        for src in markdown(name):
            for frag in re.findall(r'\]\(#([^)\s]+)\)', src):
                if frag not in cache.setdefault(name, anchors(name)): probs.append(f"{name} links to #{frag}: no such section")
            for target, frag in re.findall(r'\]\((?!\w+://)([\w.-]+\.ipynb)(?:#([^)\s]+))?\)', src):
                if target not in nbs: probs.append(f"{name} links to {target}, which is not in nbs/"); continue
                if frag and frag not in cache.setdefault(target, anchors(target)):
                    probs.append(f"{name} links to {target}#{frag}: no such section (sections: {', '.join(sorted(cache[target]))})")
    return probs

def check_citations(nbs:list) -> list:
    "Problems: prose that cites notes which are not part of the project."
    return [f"{name} cites {note}: link the design page (design.ipynb#section) instead"
            for name in nbs for note in OUTSIDE_NOTES if any(note in src for src in markdown(name))]

FIGURES = {'08_envs.ipynb': 1, '30_dashboard.ipynb': 2}   # pages that teach with executed figures: at least this many

def check_figures(nbs:list) -> list:
    "Problems: teaching pages committed without their executed figures (run them with nbconvert --execute, then nbdev_clean)."
    probs = []
    for name, n in FIGURES.items():
        cells = nbformat.read(NBS/name, as_version=4).cells
        got = sum('image/png' in o.get('data', {}) for c in cells if c.cell_type == 'code' for o in c.get('outputs', []))
        if got < n: probs.append(f"{name} has {got} executed figure(s), expected at least {n}")
    return probs

def check_kernelspec(nbs:list) -> list:
    "Problems: notebooks that would open in Jupyter without a kernel ('Select Kernel')."
    return [f"{name} has no kernelspec (metadata.kernelspec.name)" for name in nbs
            if not nbformat.read(NBS/name, as_version=4).metadata.get('kernelspec', {}).get('name')]

def render(nbs:list) -> list:
    "Problems: notebooks that nbdev cannot process or nbconvert cannot render."
    from nbconvert import HTMLExporter
    from nbdev.serve import proc_nbs
    cache = proc_nbs(n_workers=0)
    exp, bad = HTMLExporter(template_name='classic'), []
    for name in nbs:
        try:
            html, _ = exp.from_notebook_node(nbformat.read(Path(cache)/name, as_version=4))
            assert len(html) > 1000, f"{name}: empty HTML"
        except Exception as e: bad.append(f"{name}: {type(e).__name__}: {e}")
    return bad

def main():
    nbs = notebooks()
    probs = check_sidebar(nbs) + check_links(nbs) + check_citations(nbs) + check_kernelspec(nbs) + check_figures(nbs)
    if probs: sys.exit("docs check failed:\n" + "\n".join(probs))
    if bad := render(nbs): sys.exit("docs render failed:\n" + "\n".join(bad))
    print(f"doccheck: {len(nbs)} notebooks processed and rendered to HTML; sidebar and section links complete")

if __name__ == '__main__': main()
