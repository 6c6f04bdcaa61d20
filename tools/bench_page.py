"""Write (or, with --check, verify) the docs page `nbs/benchmarks.ipynb` from the recorded results in bench/results:
the MetaWorld suite table (as `bench/metaworld_suite.py --table` renders it) and the generative mask models' IoU
table. The page is data, regenerated from the JSON files, so the docs never show a number the results do not hold.

    python tools/bench_page.py           # rewrite nbs/benchmarks.ipynb
    python tools/bench_page.py --check   # exit 1 if the page is not what the results give"""
import json, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]
RESULTS, PAGE = ROOT/'bench'/'results', ROOT/'nbs'/'benchmarks.ipynb'
sys.path.insert(0, str(ROOT/'bench'))

INTRO = """# Benchmarks

> Recorded results: the MetaWorld suite next to the published numbers, and the generative mask models against
> trivial baselines. Generated from `bench/results/*.json` by `tools/bench_page.py`; do not edit by hand.

Every number here was measured by a script in `bench/` and appended, with the device, library versions and date,
to a JSON file in `bench/results/`. `tools/bench_page.py` writes this page from those files and the export check
(`tools/check_sync.sh`) fails when the page and the files disagree."""

SUITE = """## MetaWorld suite

`bench/metaworld_suite.py` trains ManiFlow and DP3 on point clouds (512 XYZ points from one camera plus the 9-d
agent state) from 10 scripted-expert demonstrations per task and evaluates the final EMA checkpoint over 20 episodes on
each of 3 evaluation seeds, the protocol of the DP3 and ManiFlow papers. The rows below are the CPU size (models and
optimizer steps sized so the suite runs on two cores; the script's docstring says exactly how); `--paper-size
--device cuda` is the published size with 3 training seeds. Differences from the papers: MetaWorld v3 (the papers
used v2), one training seed on CPU, the final checkpoint evaluated once (DP3 reports the mean of the 5 best periodic
evaluations, which can only be higher), ManiFlow without its language tokens (they need downloaded T5 weights)."""

WHY = """**Why the medium tasks fail on CPU: not found yet.** On the easy tasks both policies reach ~99 %, above DP3's
published 90.9 % (the papers' easy group has 28 tasks, we ran 8). On box-close and sweep-into both stay at 8–28 %
(published medium mean 72.7 %). Diagnosed on sweep-into with ManiFlow, each run evaluated like the table (60 episodes):

| change | puck points (of 512) | final val_loss | success |
|---|---|---|---|
| the suite's setting (10 demos, 600 steps) | 3–5 | 0.43 | 13.3 % |
| 5x the training (3006 steps) | 3–5 | 0.18 | 15.0 % |
| table plane cropped (z > 0.06 m) | ~17 | 0.42 | 16.7 % |
| table cropped and the workspace narrowed to x in [-0.3, 0.3], y >= 0.4 | ~22 | 0.41 | 16.7 % |
| 40 demos, 600 steps | 3–5 | 0.41 | 10.0 % |
| 40 demos, 3024 steps | 3–5 | 0.20 | 10.0 % |

Neither training length, nor how many points land on the puck, nor 4x the demonstrations helps, although longer training
fits the held-out demonstrations far better (final val_loss 0.18–0.20 vs 0.43; each run holds out its own episodes). With 10 demos the same initial
scenes succeed in every run, mostly those whose puck starts near a demonstration's (all 10 successes of the first run
within 3.2 cm of a demo's start; but 15 of its 50 failures are within 2 cm too). Recording and evaluation agree: replaying
each demonstration's actions open-loop from its scene seed reproduces its initial state exactly and succeeds 10 of
10 times. Executing one action per policy call instead of three does not help either (seed 0: 10 % with Ta = 1,
20 % with Ta = 3). What is left is the policy's own precision in closed loop (how far its chunks drift from the
expert's along the expert's trajectory); that is the next thing to measure. These
diagnostic runs are not in the JSON (they used patched crop boxes and demo counts); the suite's setting stays the
protocol's."""

GEN = """## Generative mask models

`bench/generative_iou.py` trains the DiT mask models of `41_generative` on the mask scenes of `40_scenes` (CPU,
32x32) and scores sampled masks on held-out scenes: the IoU of one sample, the best IoU of 8 samples (the target has
several valid answers, so one sample is not the whole story) and validity (inside free space, of the right area).
The baselines are masks that need no learning. Below the table: six validation scenes (goal region dark red, the
target object yellow, other movable objects green, static obstacles and walls blue), the ground-truth goal mask and
four DDPM samples of the recorded diffusion run (`bench/generative_iou.py --families diffusion --figure
nbs/images/generative_samples.png`): the samples land inside the goal region, in free space, with the target's area,
though not always where the ground truth put it (the task has several valid answers)."""

FIGURE = "![Scenes, ground truth and DDPM samples](images/generative_samples.png)"

def suite_table() -> str:
    "The suite's Markdown table of the CPU-size rows, headline dropped (the page gives its own)."
    import metaworld_suite as ms
    rows = json.loads((RESULTS/'metaworld_suite.json').read_text())
    a = ms.parse([]); ids = {p: ms.params_id(ms.run_params(p, a)) for p in a.policies}
    return ms.render_table(rows, ids).split('\n', 2)[2].strip()

def generative_table() -> str:
    "The latest row per (family, sampler, steps, prediction, decoding) of the current metric (best-of-N), as Markdown."
    rows, last = json.loads((RESULTS/'generative_iou.json').read_text()), {}
    for r in rows:
        if 'best_of_n_iou' in r and 'bug' not in r.get('note', ''):
            last[(r['family'], r['sampler'], r['steps'], r.get('prediction_type') or '–', r['decoding'])] = r
    out = ['| model | sampler | steps | predicts | decoding | IoU | best-of-8 IoU | valid |', '|---|---|---|---|---|---|---|---|']
    for (fam, smp, st, pred, dec), r in sorted(last.items(), key=lambda kv: (kv[0][0] != 'baseline', kv[0])):
        out.append(f"| {fam} | {smp} | {st or '–'} | {pred} | {dec} | {r['iou']:.3f} | {r['best_of_n_iou']:.3f} | {r['valid']:.2f} |")
    return '\n'.join(out)

def page() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) for s in (INTRO, SUITE, suite_table(), WHY, GEN, generative_table(), FIGURE)]
    for i, c in enumerate(nb.cells): c['id'] = f'bench{i:02d}'
    nb.metadata['kernelspec'] = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}
    return nb

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = nbformat.writes(page()) + '\n'
    if '--check' in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit(f"{PAGE.relative_to(ROOT)} is not what bench/results gives: run python tools/bench_page.py")
        return
    tmp = PAGE.with_suffix('.tmp'); tmp.write_text(text); tmp.replace(PAGE)

if __name__ == '__main__': main()
