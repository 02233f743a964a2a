"""Every evaluation writes one folder: report.json (all numbers, for scripts), report.md (for people),
SVG bar charts where a picture says more (per-language bits per character, per-subject accuracy,
switch rate per language), and any per-item JSONL (predictions, generations, judgments).

Charts are plain SVG written here: no plotting dependency, and they render on GitHub and in browsers. The
folder may be a URL (gs://...): each file is then one object, uploaded whole or not at all (`paths`).
"""
import html
import json

from xfer_jax import paths

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats get 4 significant digits."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], unit: str = "",
              reference: float | None = None) -> str:
    """Horizontal grouped bars (one group per category, one bar per series); `reference` draws a dashed line
    (e.g. chance accuracy)."""
    bar, gap, label_w, plot_w = 12, 10, 220, 460
    group = bar * len(series) + gap
    height = 60 + group * len(categories) + 20 * len(series)
    top = max([v for values in series.values() for v in values] + [reference or 0.0]) or 1.0
    scale = plot_w / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    for i, category in enumerate(categories):
        y0 = 40 + i * group
        parts.append(f'<text x="{label_w - 6}" y="{y0 + group / 2}" text-anchor="end">'
                     f'{html.escape(category[:40])}</text>')
        for j, (name, values) in enumerate(series.items()):
            w, y = values[i] * scale, y0 + j * bar
            colour = PALETTE[j % len(PALETTE)]
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{colour}"/>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 3}">{values[i]:.3g}{html.escape(unit)}</text>')
    if reference is not None:
        x = label_w + reference * scale
        parts.append(f'<line x1="{x:.1f}" y1="35" x2="{x:.1f}" y2="{40 + group * len(categories)}" stroke="#555" '
                     f'stroke-dasharray="4 3"/>')
    legend_y = 50 + group * len(categories)
    for j, name in enumerate(series):
        y = legend_y + j * 18
        parts.append(f'<rect x="{label_w}" y="{y}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>')
        parts.append(f'<text x="{label_w + 16}" y="{y + 9}">{html.escape(name)}</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def write(out_dir, kind: str, result: dict, markdown: str, charts: dict[str, str] | None = None,
          items: dict[str, list[dict]] | None = None) -> paths.Path:
    """Write report.json, report.md, charts ({file name: svg}) and item files ({file name: records})."""
    out = paths.path(out_dir, "--out")
    if not paths.is_url(out):  # an object store has no folders to make
        out.mkdir(parents=True, exist_ok=True)
    paths.write_text(out / "report.json", json.dumps({"kind": kind, **result}, indent=1, ensure_ascii=False) + "\n")
    for name, svg in (charts or {}).items():
        paths.write_text(out / name, svg)
        markdown += f"\n\n![{name}]({name})"
    paths.write_text(out / "report.md", markdown + "\n")
    for name, records in (items or {}).items():
        paths.write_jsonl(out / name, records)
    return out
