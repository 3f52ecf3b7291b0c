"""One self-contained HTML page per run: effects table, plots, videos, concept neurons, relevance maps.

Everything is inlined (PNG and MP4 as data URIs, CSS in the page), so the file can be mailed or
attached to a paper review as it is. Built from a sweep's run folder (:mod:`arrcoc_steer.eval.sweep`)
plus optional extras (concept neurons with their top tokens, relevance figures).

    arrcoc-steer report runs/demo/eval --out runs/demo/report.html
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .plots import PLOTS, Run

TABLE_METRICS = (
    ("success", "success", "{:.2f}"),
    ("speed_w", "speed (m/s, matched window)", "{:.3f}"),
    ("peak_ee_z", "peak EE height (m)", "{:.3f}"),
    ("carry_ee_z", "carry height (m)", "{:.3f}"),
    ("length", "length (steps)", "{:.1f}"),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .5em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.up{color:#1a7f37} .down{color:#b42318} .muted{color:#777;font-size:.85em}
img{max-width:100%} .videos{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0}
figcaption{font-size:.8em;color:#555} code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass
class ConceptNeurons:
    """A concept's neurons and what they read as (for the report's neuron table)."""

    name: str
    keywords: Sequence[str]
    neurons: Sequence[tuple[int, int, Sequence[str]]]  # (layer, neuron, top tokens)


@dataclass
class ReportExtras:
    title: str = "arrcoc_steer run report"
    summary: str = ""  # a paragraph shown under the title
    concepts: list[ConceptNeurons] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path), e.g. relevance maps


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return _data_uri(buf.getvalue(), "image/png")


def _num(value) -> float:
    """JSON numbers, with null (a NaN when written) as NaN."""
    return float("nan") if value is None else float(value)


def _fmt_stat(stat: dict, fmt: str) -> str:
    mean = _num(stat.get("mean")) if stat else float("nan")
    if not np.isfinite(mean):
        return "–"
    lo, hi = (_num(v) for v in stat.get("ci", (None, None)))
    out = f"{fmt.format(mean)} <span class=muted>[{fmt.format(lo)}, {fmt.format(hi)}]</span>"
    vs = stat.get("vs_baseline") or {}
    change = _num(vs.get("pct_change"))
    if np.isfinite(change):
        cls = "up" if change > 0.5 else "down" if change < -0.5 else "muted"
        p = _num(vs.get("mcnemar_p", vs.get("wilcoxon_p")))
        out += f" <span class={cls}>{change:+.0f}%</span> <span class=muted>p={p:.2g}</span>"
    return out


def effects_table(run: Run) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in TABLE_METRICS)
    rows = []
    for name, cond in run.conditions.items():
        summary = run.results["summary"][name]
        cells = "".join(f"<td>{_fmt_stat(run.stat(name, m), fmt)}</td>" for m, _, fmt in TABLE_METRICS)
        n = summary["n_episodes"] - summary["n_crashed"]
        rows.append(f"<tr><td><b>{html.escape(name)}</b> <span class=muted>{cond['kind']}, n={n}</span></td>{cells}</tr>")
    note = (f"Mean [95% bootstrap CI]; change vs <code>{html.escape(str(run.baseline))}</code> on the same seeds, "
            "p from the paired Wilcoxon signed-rank test (McNemar's exact test for success).")  # fmt: skip
    return f"<table><tr><th>condition</th>{head}</tr>{''.join(rows)}</table><p class=muted>{note}</p>"


def controls_table(run: Run, metric: str = "speed_w") -> str:
    controls = run.results.get("controls") or {}
    if not controls:
        return ""
    rows = []
    for concept, entry in controls.items():
        c = entry.get(metric, {})
        band = c.get("band") or [None, None]
        rows.append(f"<tr><td>{html.escape(concept)}</td><td>{len(entry['controls'])}</td>"
                    f"<td>{_num(c.get('effect')):+.1f}%</td><td>{_num(c.get('percentile')):.1f}</td>"
                    f"<td>[{_num(band[0]):+.1f}, {_num(band[1]):+.1f}]%</td>"
                    f"<td>{_num(c.get('p_two_sided')):.3g}</td></tr>")  # fmt: skip
    return (f"<p class=muted>Effect on {metric} (% vs baseline) of each concept among its matched random "
            "neuron sets (same size, layers, alpha).</p><table><tr><th>concept</th><th>controls</th><th>effect</th>"
            "<th>percentile among controls</th><th>controls' 95% band</th><th>empirical p (two-sided)</th></tr>"
            f"{''.join(rows)}</table>")  # fmt: skip


def outcomes_table(run: Run) -> str:
    """Per condition, how many episodes ended in each outcome (``arrcoc_steer.eval.metrics.OUTCOMES``)."""
    table = run.results.get("outcomes") or {}
    seen = list(dict.fromkeys(o for row in table.values() for o, n in row.items() if n))
    if not seen:
        return ""
    head = "".join(f"<th>{html.escape(o)}</th>" for o in seen)
    rows = "".join(f"<tr><td>{html.escape(cond)}</td>" + "".join(f"<td>{row.get(o, 0)}</td>" for o in seen) + "</tr>"
                   for cond, row in table.items())  # fmt: skip
    return ("<p class=muted>Where each episode ended, read off the target's trajectory: a failed one held the "
            "target above its destination, stacked it on something there, left it elsewhere, or never grasped it."
            f"</p><table><tr><th>condition</th>{head}</tr>{rows}</table>")


def closed_loop_table(run: Run) -> str:
    loops = run.results.get("closed_loop") or {}
    if not loops:
        return ""
    rows = []
    for name, entry in loops.items():
        cells = "".join(f"<td>{html.escape(_short(v))}</td>" for v in entry.values())
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(k)}</th>" for k in next(iter(loops.values())))
    return f"<table><tr><th>closed loop</th>{head}</tr>{''.join(rows)}</table>"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in list(value.items())[:6])
    return str(value)


def videos(run: Run, limit: int = 6) -> str:
    """Baseline first, then the other conditions' videos of the same task and seed, side by side."""
    eps = [e for e in run.episodes if e.get("video")]
    if not eps:
        return "<p class=muted>No videos in this run (evaluate with frames='agentview').</p>"
    eps.sort(key=lambda e: (e["task"], e["seed"], e["condition"] != run.baseline, e["condition"]))
    figs = []
    for e in eps[:limit]:
        data = (run.path / "episodes" / e["video"]).read_bytes()
        label = f"{e['condition']} — {e['task']} seed {e['seed']} ({'success' if e['success'] else 'failure'})"
        figs.append(f"<figure><video controls muted loop width=320 src='{_data_uri(data, 'video/mp4')}'></video>"
                    f"<figcaption>{html.escape(label)}</figcaption></figure>")  # fmt: skip
    return f"<div class=videos>{''.join(figs)}</div>"


def concept_table(concepts: Sequence[ConceptNeurons]) -> str:
    rows = []
    for c in concepts:
        for layer, neuron, tokens in c.neurons:
            rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{layer}</td><td>{neuron}</td>"
                        f"<td style='text-align:left'>{html.escape(', '.join(tokens))}</td></tr>")  # fmt: skip
    return ("<table><tr><th>concept</th><th>layer</th><th>neuron</th><th>top tokens of its value vector</th></tr>"
            f"{''.join(rows)}</table>")  # fmt: skip


def write_report(run_dir: str | Path, out: str | Path | None = None, extras: ReportExtras | None = None) -> Path:
    """Write the HTML report of the sweep in ``run_dir``; returns its path."""
    run = Run.load(run_dir)
    extras = extras or ReportExtras()
    out = Path(out) if out else run.path / "report.html"
    man = run.results["manifest"]
    parts = [f"<h1>{html.escape(extras.title)}</h1>",
             f"<p class=muted>policy <code>{html.escape(str(man.get('policy')))}</code> · {len(man['tasks'])} tasks · "
             f"{len(man['seeds'])} seeds · {len(run.conditions)} conditions · generated {time.strftime('%Y-%m-%d %H:%M')}</p>"]  # fmt: skip
    if extras.summary:
        parts.append(f"<p>{html.escape(extras.summary)}</p>")
    parts += ["<h2>Effects</h2>", effects_table(run)]
    if table := outcomes_table(run):
        parts += ["<h2>How episodes ended</h2>", table]
    if table := controls_table(run):
        parts += ["<h2>Against matched random controls</h2>", table]
    if table := closed_loop_table(run):
        parts += ["<h2>Closed-loop vs fixed alpha</h2>", table]
    for title, plot in PLOTS.items():
        fig = plot(run)
        if fig is not None:
            parts += [f"<h2>{html.escape(title)}</h2>", f"<img alt='{html.escape(title)}' src='{_png(fig)}'>"]
    parts += ["<h2>Videos</h2>", videos(run)]
    if extras.concepts:
        parts += ["<h2>Concept neurons</h2>", concept_table(extras.concepts)]
    for caption, png in extras.figures:
        uri = _data_uri(Path(png).read_bytes(), "image/png")
        parts += [f"<h2>{html.escape(caption)}</h2>", f"<img alt='{html.escape(caption)}' src='{uri}'>"]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(extras.title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
