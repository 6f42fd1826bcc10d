"""SVG charts of a report, drawn by hand (no plotting library to install): small multiples of
horizontal bars with min-max whiskers, latency percentiles as markers, cold starts as a CDF."""
from xml.sax.saxutils import escape

COLORS = {"knoxy": "#1f77b4", "peer": "#9a9a9a", "ceiling": "#d0d0d0"}
PCT_COLORS = {"p50": "#2ca02c", "p90": "#ff7f0e", "p99": "#d62728"}
FONT = 'font-family="sans-serif" font-size="11"'
WIDTH, LABEL, ROW, PAD = 760, 170, 18, 10


def bars(title, unit, panels, bar="median over rounds"):
    """panels: (subtitle, [(label, role, median, lo, hi)]); each panel on its own scale."""
    body, y = [], 40
    for subtitle, rows in panels:
        rows = [r for r in rows if r[2] is not None]
        if not rows:
            continue
        top = max(r[4] for r in rows) * 1.1 or 1
        body.append(f'<text x="{PAD}" y="{y}" {FONT} font-weight="bold">{escape(subtitle)}</text>')
        y += 6
        for label, role, med, lo, hi in rows:
            scale = lambda v: LABEL + (WIDTH - LABEL - 90) * v / top
            body.append(f'<text x="{LABEL - 6}" y="{y + 12}" {FONT} text-anchor="end">{escape(label)}</text>')
            body.append(f'<rect x="{LABEL}" y="{y + 2}" width="{scale(med) - LABEL:.1f}" height="{ROW - 5}" '
                        f'fill="{COLORS.get(role, "#888")}"/>')
            body.append(f'<line x1="{scale(lo):.1f}" x2="{scale(hi):.1f}" y1="{y + 8}" y2="{y + 8}" '
                        'stroke="black" stroke-width="1"/>')
            body.append(f'<text x="{scale(hi) + 5:.1f}" y="{y + 12}" {FONT}>{_num(med)}</text>')
            y += ROW
        y += 16
    return _svg(title, f"{unit}. Bar: {bar}; whisker: min-max. Blue: Knoxy, grey: peers, light: the backend "
                "alone.", body, y)


def percentiles(title, panels):
    """panels: (subtitle, [(label, role, {p50, p90, p99})]); markers on each panel's scale."""
    body, y = [], 40
    for subtitle, rows in panels:
        if not rows:
            continue
        top = max(pct[k] for _, _, pct in rows for k in PCT_COLORS) * 1.1 or 1
        scale = lambda v: LABEL + (WIDTH - LABEL - 40) * v / top
        body.append(f'<text x="{PAD}" y="{y}" {FONT} font-weight="bold">{escape(subtitle)} '
                    f'(0 to {_num(top)} ms)</text>')
        y += 6
        for label, role, pct in rows:
            body.append(f'<text x="{LABEL - 6}" y="{y + 12}" {FONT} text-anchor="end">{escape(label)}</text>')
            body.append(f'<line x1="{LABEL}" x2="{scale(pct["p99"]):.1f}" y1="{y + 8}" y2="{y + 8}" '
                        f'stroke="{COLORS.get(role, "#888")}" stroke-width="3"/>')
            for k, color in PCT_COLORS.items():
                body.append(f'<circle cx="{scale(pct[k]):.1f}" cy="{y + 8}" r="4" fill="{color}"/>')
            y += ROW
        y += 16
    legend = " ".join(f'<tspan fill="{c}">● {k}</tspan>' for k, c in PCT_COLORS.items())
    return _svg(title, "ms, medians over rounds, open loop at a fixed rate", body, y, legend)


def cdf(title, samples_ms, note):
    """The distribution of `samples_ms` as a step CDF."""
    samples = sorted(samples_ms)
    left, right, top, bottom = 60, WIDTH - 20, 50, 270
    hi = samples[-1] * 1.05 if samples else 1
    x = lambda v: left + (right - left) * v / hi
    y = lambda q: bottom - (bottom - top) * q
    points = " ".join(f"{x(v):.1f},{y((i + 1) / len(samples)):.1f}" for i, v in enumerate(samples))
    body = [f'<polyline points="{points}" fill="none" stroke="{COLORS["knoxy"]}" stroke-width="2"/>',
            f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="black"/>',
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="black"/>']
    for q in (0, 0.5, 0.9, 1):
        body.append(f'<text x="{left - 6}" y="{y(q) + 4:.1f}" {FONT} text-anchor="end">{q:.0%}</text>')
    for i in range(5):
        v = hi * i / 4
        body.append(f'<text x="{x(v):.1f}" y="{bottom + 16}" {FONT} text-anchor="middle">{_num(v)} ms</text>')
    return _svg(title, note, body, bottom + 30)


def _svg(title, subtitle, body, height, legend=""):
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}">', '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="{PAD}" y="16" font-family="sans-serif" font-size="14" font-weight="bold">{escape(title)}</text>',
            f'<text x="{PAD}" y="30" {FONT} fill="#555">{escape(subtitle)} {legend}</text>']
    return "\n".join(head + body + ["</svg>", ""])


def _num(v):
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def render(report):
    """The report's charts: name -> SVG text."""
    closed, opened, cpu = [], [], []
    for s in report["scenarios"]:
        for ld in s["loads"]:
            rows = ld["systems"]
            sub = f"{s['title']}: {ld['name']}"
            spread = lambda k: [(r["name"], r["role"], r["median"][k], r["min"][k], r["max"][k]) for r in rows]
            if ld["kind"] == "closed":
                closed.append((sub, spread("rps")))
            else:
                opened.append((sub, [(r["name"], r["role"], r["median"]) for r in rows]))
            cpu.append((sub, spread("cpu_us")))
    charts = {
        "throughput": bars("Requests per second, closed loop (higher is better)", "requests/s", closed),
        "cpu": bars("CPU per request of each system's own processes (lower is better)", "µs of CPU per request",
                    cpu),
        "latency": percentiles("Latency at a fixed offered rate (lower is better)", opened),
    }
    for own in report["own"]:
        if own["name"] == "reload":
            charts["reload"] = bars("Table reload under load: change to new host served (lower is better)", "ms",
                                    [("each system, its own way", [
                                        (name, fig["role"], fig["served_p50"], min(fig["samples_ms"]),
                                         fig["served_max"]) for name, fig in own["figures"].items()])],
                                    "median of the changes")
        if own["name"] == "cold-start":
            charts["coldstart"] = cdf("Cold start: pod ready to request at the app",
                                      own["samples_ms"], f"{len(own['samples_ms'])} cold starts, share "
                                      "answered within each time")
    return charts
