"""A self-contained HTML page of reports. Charts are inline SVG drawn here, so Chinese labels are text
rendered with the page's fonts (no image rendering, nothing fetched)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from inservice.publish.common import LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW, Chart, Report, fmt_value

LIGHT_CLASS = {LIGHT_GREEN: "green", LIGHT_YELLOW: "yellow", LIGHT_RED: "red"}
STYLE = """
body { font-family: "Noto Sans CJK TC", "Noto Sans TC", "Microsoft JhengHei", "PingFang TC", sans-serif;
       margin: 24px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; } .sub { color: #555; font-size: 13px; margin-bottom: 16px; }
nav a { margin-right: 12px; font-size: 13px; }
section { margin: 28px 0; } h2 { font-size: 18px; border-left: 5px solid #2f6fb0; padding-left: 8px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #aaa; padding: 3px 7px; } th { background: #ddebf7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #f2f2f2; }
td.green { background: #c6efce; } td.yellow { background: #ffeb9c; } td.red { background: #ffc7ce; }
td.light { text-align: center; }
.notes { color: #555; font-size: 12px; } dl.notes dt { font-weight: bold; } dl.notes dd { margin: 0 0 6px 16px; }
svg text { font-family: inherit; }
"""


def _fmt(value: object, kind: str) -> str:
    if kind in ("int", "dec1", "dec2") and value not in (None, ""):
        text = fmt_value(value, kind)
        whole, _, frac = text.partition(".")
        sign = "-" if whole.startswith("-") else ""
        whole = f"{int(whole.lstrip('-')):,}"
        return sign + whole + ("." + frac if frac else "")
    return fmt_value(value, kind)


def _table(rep: Report) -> str:
    out = ["<table>", "<thead>"]
    if any(c.group for c in rep.columns):
        cells, i = [], 0
        while i < len(rep.columns):
            j = i
            while j + 1 < len(rep.columns) and rep.columns[j + 1].group == rep.columns[i].group:
                j += 1
            group = rep.columns[i].group
            if group:
                cells.append(f'<th colspan="{j - i + 1}">{escape(group)}</th>')
            else:
                cells += [f'<th rowspan="2">{escape(c.label)}</th>' for c in rep.columns[i:j + 1]]
            i = j + 1
        out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{escape(c.label)}</th>" for c in rep.columns if c.group) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{escape(c.label)}</th>" for c in rep.columns) + "</tr>")
    out.append("</thead><tbody>")
    total_from = len(rep.rows) - rep.total_rows
    for n, row in enumerate(rep.rows):
        tds = []
        for col, value in zip(rep.columns, row, strict=True):
            cls = "n" if col.kind in ("int", "dec1", "dec2") else ""
            if col.kind == "light":
                cls = f"light {LIGHT_CLASS.get(value, '')}"
            tds.append(f'<td class="{cls.strip()}">{escape(_fmt(value, col.kind))}</td>' if cls.strip()
                       else f"<td>{escape(_fmt(value, col.kind))}</td>")
        out.append(('<tr class="total">' if n >= total_from else "<tr>") + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1
    step = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * step:
            return m * step
    return 10 * step


def svg_chart(rep: Report, spec: Chart, width: int = 960, height: int = 360) -> str:
    """Bars on the left axis, a line on the right axis, category labels every third point."""
    left, right, top, bottom = 70, 80, 40, 70
    pw, ph = width - left - right, height - top - bottom
    cats = [str(r[spec.category]) for r in rep.rows]
    n = max(len(cats), 1)
    bar_vals = [[float(r[c] or 0) for r in rep.rows] for c in spec.bars]
    line_vals = [[float(r[c] or 0) for r in rep.rows] for c in spec.lines]
    bmax = _nice_max(max((v for s in bar_vals for v in s), default=0))
    lmax = _nice_max(max((v for s in line_vals for v in s), default=0))
    slot = pw / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(spec.title)}">',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
             f"{escape(spec.title)}</text>"]
    for k in range(6):  # gridlines and both axes' tick labels
        y = top + ph - ph * k / 5
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                     f"{int(bmax * k / 5):,}</text>")
        if spec.lines:
            parts.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" font-size="11">{int(lmax * k / 5):,}</text>')
    colors = ["#5b9bd5", "#a5a5a5"]
    bw = slot * 0.7 / max(len(bar_vals), 1)
    for s, vals in enumerate(bar_vals):
        for i, v in enumerate(vals):
            h = ph * v / bmax
            x = left + slot * i + slot * 0.15 + bw * s
            parts.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                         f'fill="{colors[s % 2]}"><title>{escape(cats[i])}：{int(v):,}</title></rect>')
    for vals in line_vals:
        pts = " ".join(f"{left + slot * (i + 0.5):.1f},{top + ph - ph * v / lmax:.1f}" for i, v in enumerate(vals))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#ed7d31" stroke-width="2.5"/>')
        for i, v in enumerate(vals):
            parts.append(f'<circle cx="{left + slot * (i + 0.5):.1f}" cy="{top + ph - ph * v / lmax:.1f}" r="3" '
                         f'fill="#ed7d31"><title>{escape(cats[i])}：{int(v):,}</title></circle>')
    for i, c in enumerate(cats):
        if i % 3 == 0 or i == n - 1:
            x = left + slot * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="end" font-size="11" '
                         f'transform="rotate(-40 {x:.1f} {top + ph + 16})">{escape(c)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    parts.append(f'<text x="16" y="{top + ph / 2}" font-size="12" transform="rotate(-90 16 {top + ph / 2})" '
                 f'text-anchor="middle">{escape(spec.bar_axis)}</text>')
    if spec.lines:
        parts.append(f'<text x="{width - 14}" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                     f'transform="rotate(90 {width - 14} {top + ph / 2})">{escape(spec.line_axis)}</text>')
    lx = left
    legend = [(rep.columns[c].label, colors[i % 2], "rect") for i, c in enumerate(spec.bars)]
    legend += [(rep.columns[c].label, "#ed7d31", "line") for c in spec.lines]
    for label, color, kind in legend:
        y = height - 12
        if kind == "rect":
            parts.append(f'<rect x="{lx}" y="{y - 10}" width="14" height="10" fill="{color}"/>')
        else:
            parts.append(f'<line x1="{lx}" y1="{y - 5}" x2="{lx + 14}" y2="{y - 5}" stroke="{color}" '
                         'stroke-width="2.5"/>')
        parts.append(f'<text x="{lx + 20}" y="{y}" font-size="12">{escape(label)}</text>')
        lx += 40 + 14 * len(label)
    parts.append("</svg>")
    return "\n".join(parts)


def write_html(path: Path, reports: list[Report], doc_title: str, subtitle: str,
               notes: list[tuple[str, str]]) -> Path:
    body = [f"<h1>{escape(doc_title)}</h1>", f'<div class="sub">{escape(subtitle)}</div>', "<nav>"]
    body += [f'<a href="#{r.key}">{escape(r.sheet)}</a>' for r in reports]
    body.append('<a href="#notes">說明</a></nav>')
    for rep in reports:
        body.append(f'<section id="{rep.key}"><h2>{escape(rep.title)}</h2>')
        if rep.chart and rep.rows:
            body.append(svg_chart(rep, rep.chart))
        body.append(_table(rep))
        body += [f'<p class="notes">註：{escape(n)}</p>' for n in rep.notes]
        body.append("</section>")
    body.append('<section id="notes"><h2>說明</h2><dl class="notes">')
    body += [f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in notes]
    body.append("</dl></section>")
    page = (f'<!DOCTYPE html>\n<html lang="zh-Hant-TW">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(doc_title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
