"""Docs check for CI (Quarto cannot be installed here). First the cheap checks: the sidebar lists exactly the
notebooks in `nbs/`, every link to a notebook section (`design.ipynb#timeline`) points at a heading that exists,
no notebook cites notes from outside the project, every notebook has a kernelspec, the teaching pages (`FIGURES`)
carry their executed figures and no page shows stderr, an error or an oversized figure. Then every notebook goes
through nbdev's doc processors (`nbdev.serve.proc_nbs`, what `nbdev_preview` runs before Quarto) and the processed
notebook renders to HTML with nbconvert."""
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

FIGURES = {'08_envs.ipynb': 1, '17_policies.ipynb': 1, '28_evaluate.ipynb': 1, '29_parity.ipynb': 1,
           '30_dashboard.ipynb': 2}   # pages that teach with executed figures: at least this many
IMAGE_TYPES = ('image/png', 'image/jpeg')
MAX_IMAGE_KB = 200                    # base64 size of one committed figure (most are a few tens of KB; 08_envs' is 169)

def outputs(name:str) -> list:
    "Every output of the code cells of a notebook."
    cells = nbformat.read(NBS/name, as_version=4).cells
    return [o for c in cells if c.cell_type == 'code' for o in c.get('outputs', [])]

def images(outs:list) -> list:
    "The base64 data of the images (PNG, JPEG) among `outs`."
    return [o['data'][t] for o in outs for t in IMAGE_TYPES if t in o.get('data', {})]

def check_figures(nbs:list) -> list:
    "Problems: teaching pages committed without their executed figures (run them with nbconvert --execute, then nbdev_clean)."
    probs = []
    for name, n in FIGURES.items():
        outs = outputs(name)
        if not outs: probs.append(f"{name} has no executed outputs"); continue
        if (got := len(images(outs))) < n: probs.append(f"{name} has {got} executed figure(s), expected at least {n}")
    return probs + ([f"execute them: cd nbs && MUJOCO_GL=egl OMP_NUM_THREADS=1 jupyter nbconvert --to notebook --execute --inplace "
                     f"NAME.ipynb && cd .. && nbdev_clean --fname nbs/NAME.ipynb"] if probs else [])

def check_outputs(nbs:list) -> list:
    "Problems: committed outputs a reader should not see: stderr streams, errors, figures too large for a page."
    probs = []
    for name in nbs:
        outs = outputs(name)
        probs += [f"{name} shows stderr output: {o.get('text', '')[:120]!r} (fix its cause, or capture it in the cell)"
                  for o in outs if o.get('output_type') == 'stream' and o.get('name') == 'stderr']
        probs += [f"{name} shows an error output: {o.get('ename')}: {o.get('evalue', '')[:120]}" for o in outs if o.get('output_type') == 'error']
        probs += [f"{name} has a figure of {len(d) // 1024} KB (base64), over {MAX_IMAGE_KB} KB: lower its dpi or size"
                  for d in images(outs) if len(d) > MAX_IMAGE_KB * 1024]
    return probs

def check_kernelspec(nbs:list) -> list:
    "Problems: notebooks that would open in Jupyter without a kernel ('Select Kernel')."
    return [f"{name} has no kernelspec (metadata.kernelspec.name)" for name in nbs
            if not nbformat.read(NBS/name, as_version=4).metadata.get('kernelspec', {}).get('name')]

def frontmatter(nb) -> dict:
    "The YAML front matter nbdev's processors put in a processed notebook's first raw cell (title, description, ...)."
    raw = next((c.source for c in nb.cells if c.cell_type == 'raw' and c.source.startswith('---')), None)
    return (yaml.safe_load(raw.strip().strip('-')) or {}) if raw else {}

def page_html(nb) -> str:
    "The HTML page of a processed notebook, as this check renders it (nbconvert, classic template), titled like Quarto's."
    from nbconvert import HTMLExporter
    fm, nb = frontmatter(nb), nbformat.from_dict(nb)
    if title := fm.get('title'):      # Quarto's title block: the page title, then the description
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}\n\n{fm.get('description', '')}"))
    return HTMLExporter(template_name='classic').from_notebook_node(nb, resources={'metadata': {'name': title or 'Notebook'}})[0]

def render_page(name:str, dest) -> Path:
    "One notebook through nbdev's doc processors, then to HTML: the page written to `dest/<name>.html` (run from the project root)."
    from nbdev.serve_drv import exec_nb
    from nbdev.processors import FilterDefaults
    proc = Path(dest)/name; proc.parent.mkdir(parents=True, exist_ok=True)
    exec_nb(NBS/name, proc, FilterDefaults)
    out = proc.with_suffix('.html'); out.write_text(page_html(nbformat.read(proc, as_version=4)))
    return out

def render(nbs:list) -> list:
    "Problems: notebooks that nbdev cannot process or nbconvert cannot render."
    from nbdev.serve import proc_nbs
    cache, bad = proc_nbs(n_workers=0), []
    for name in nbs:
        try:
            html = page_html(nbformat.read(Path(cache)/name, as_version=4))
            assert len(html) > 1000, f"{name}: empty HTML"
        except Exception as e: bad.append(f"{name}: {type(e).__name__}: {e}")
    return bad

def main():
    nbs = notebooks()
    probs = check_sidebar(nbs) + check_links(nbs) + check_citations(nbs) + check_kernelspec(nbs) + check_figures(nbs) + check_outputs(nbs)
    if probs: sys.exit("docs check failed:\n" + "\n".join(probs))
    if bad := render(nbs): sys.exit("docs render failed:\n" + "\n".join(bad))
    print(f"doccheck: {len(nbs)} notebooks processed and rendered to HTML; sidebar and section links complete")

if __name__ == '__main__': main()
