"""The history chart (OPS-03) as inline SVG: one small bar chart per direction and
record type, a group of three bars (added, updated, failed) per day. SVG drawn with
presentation attributes, so the Content-Security-Policy needs no inline style."""

from __future__ import annotations

from typing import Any

from daemon.http.console.html import Markup, esc, tag

SERIES = (("added", "#1a7f37"), ("updated", "#0550ae"), ("failed", "#b3261e"))
WIDTH, HEIGHT, TOP, BOTTOM = 320, 140, 10, 22


def history(days: list[dict[str, Any]]) -> Markup:
    if not days:
        return tag("p", "No sync in the last seven days: nothing to chart.", class_="empty")
    dates = sorted({d["day"] for d in days})
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for d in days:
        groups.setdefault((d["direction"], d["module"]), {})[d["day"]] = d
    legend = tag("ul", *(tag("li", tag("span", "", class_=f"swatch swatch-{name}"), name)
                         for name, _ in SERIES), class_="legend", aria_label="Legend")
    figures = [_chart(direction, module, by_day, dates)
               for (direction, module), by_day in sorted(groups.items())]
    return tag("section", tag("h2", "Charts", id="charts-h"), legend,
               tag("div", *figures, class_="charts"), aria_labelledby="charts-h")


def _chart(direction: str, module: str, by_day: dict[str, dict[str, Any]],
           dates: list[str]) -> Markup:
    title = f"{'desk → CRM' if direction == 'desk_to_crm' else 'CRM → desk'}, {module}"
    peak = max([1, *(by_day.get(day, {}).get(name, 0) for day in dates for name, _ in SERIES)])
    slot = WIDTH / len(dates)
    bar = max(2.0, slot / 4)
    plot = HEIGHT - TOP - BOTTOM
    shapes: list[str] = []
    for i, day in enumerate(dates):
        counts = by_day.get(day, {})
        for j, (name, colour) in enumerate(SERIES):
            value = int(counts.get(name, 0))
            h = plot * value / peak
            x = i * slot + bar / 2 + j * bar
            shapes.append(
                f'<rect x="{x:.1f}" y="{TOP + plot - h:.1f}" width="{bar - 1:.1f}"'
                f' height="{h:.1f}" fill="{colour}"><title>{esc(day)} {name}: {value}'
                f"</title></rect>")
        shapes.append(f'<text x="{i * slot + slot / 2:.1f}" y="{HEIGHT - 6}" font-size="10"'
                      f' text-anchor="middle" fill="#222">{esc(day[5:])}</text>')
    summary = "; ".join(
        f"{day}: " + ", ".join(f"{name} {by_day.get(day, {}).get(name, 0)}"
                               for name, _ in SERIES) for day in dates)
    svg = Markup(f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
                 f' aria-label="{esc(title + ". " + summary)}">'
                 f'<line x1="0" y1="{TOP + plot}" x2="{WIDTH}" y2="{TOP + plot}"'
                 f' stroke="#555"/>' + "".join(shapes) + "</svg>")
    return tag("figure", svg, tag("figcaption", title), class_="chart")
