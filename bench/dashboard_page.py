"""Draw deploy/grafana/potaflow.json's panels from Prometheus' HTTP API, as a static page and a PNG.

Grafana is not in the package registries these machines reach; this renders
the same panels (same PromQL, ``$__rate_interval`` read as ``--rate-window``)
as inline SVG line charts in one HTML file, then takes a screenshot of it with
Debian's Chromium through Playwright. bench/cluster.py calls it at the end of
a run when given ``--dashboard PNG``; it also runs on its own against any
Prometheus that scrapes PotaFlow:

    .venv/bin/python bench/dashboard_page.py --prometheus http://127.0.0.1:9090 \
        --minutes 10 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import html
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DASHBOARD = BASE_DIR / "deploy" / "grafana" / "potaflow.json"
COLOURS = ["#2f6fdf", "#e0832f", "#2fa86b", "#c9384d", "#8a5cd6", "#7a7a7a", "#c7a12b", "#2bb5c7"]
W, H = 370, 150  # one chart's drawing area


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as response:  # noqa: S310
        body = json.loads(response.read())
    return body["data"]["result"] if body.get("status") == "success" else []


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or "value"


def fmt(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    return f"{value:.3g}"


def chart(series: list[tuple[str, list[tuple[float, float]]]], unit: str, start: float, end: float) -> str:
    points = [v for _, values in series for _, v in values]
    if not points:
        return f'<svg width="{W}" height="{H}"><text x="10" y="{H // 2}" class="empty">no data</text></svg>'
    top = max(points) or 1.0
    top *= 1.1
    parts = [f'<svg width="{W + 60}" height="{H + 20}" viewBox="0 0 {W + 60} {H + 20}">']
    for i in range(5):
        y = 5 + H * i / 4
        parts.append(f'<line x1="55" y1="{y}" x2="{W + 55}" y2="{y}" class="grid"/>')
        parts.append(f'<text x="50" y="{y + 4}" class="axis" text-anchor="end">{fmt(top * (1 - i / 4), unit)}</text>')
    for index, (_, values) in enumerate(series):
        path = " ".join(
            f"{55 + W * (t - start) / max(end - start, 1):.1f},{5 + H * (1 - v / top):.1f}" for t, v in values
        )
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[index % len(COLOURS)]}" '
                     'stroke-width="1.6"/>')  # fmt: skip
    minutes = (end - start) / 60
    parts.append(f'<text x="55" y="{H + 18}" class="axis">-{minutes:.0f} min</text>')
    parts.append(f'<text x="{W + 55}" y="{H + 18}" class="axis" text-anchor="end">now</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(prometheus: str, start: float, end: float, rate_window: str, title: str) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    step = max(5.0, (end - start) / 120)
    cells = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            cells.append(f"<h2>{html.escape(panel['title'])}</h2>")
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_window)
            for result in query_range(prometheus, expr, start, end, step):
                values = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(target.get("legendFormat", ""), result["metric"]), values))
        keys = "".join(
            f'<span class="key"><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{html.escape(name)} '
            f"<b>{fmt(values[-1][1], unit) if values else ''}</b></span>"
            for i, (name, values) in enumerate(series)
        )
        cells.append(f'<section><h3>{html.escape(panel["title"])}</h3>{chart(series, unit, start, end)}'
                     f'<div class="keys">{keys}</div></section>')  # fmt: skip
    body = "".join(cells)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font: 13px system-ui, sans-serif; background: #111217; color: #ccccdc; margin: 16px; width: 1410px; }}
h1 {{ font-size: 18px; margin: 0 0 4px; }} .sub {{ color: #8e8e9e; margin-bottom: 8px; }}
h2 {{ font-size: 14px; width: 100%; margin: 14px 0 4px; color: #d8d9da; border-bottom: 1px solid #2c2f36; }}
main {{ display: flex; flex-wrap: wrap; gap: 8px; }}
section {{ background: #181b1f; border: 1px solid #2c2f36; border-radius: 3px; padding: 6px 8px;
           width: 448px; box-sizing: border-box; }}
h3 {{ font-size: 13px; margin: 0 0 4px; font-weight: 600; }}
.grid {{ stroke: #2c2f36; }} .axis {{ fill: #8e8e9e; font-size: 10px; }} .empty {{ fill: #8e8e9e; }}
.keys {{ display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 11px; }}
.key i {{ display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; }}
</style></head><body><h1>{html.escape(title)}</h1>
<div class="sub">deploy/grafana/potaflow.json drawn from Prometheus' HTTP API ({html.escape(prometheus)}),
{time.strftime("%Y-%m-%d %H:%M", time.gmtime(start))}–{time.strftime("%H:%M UTC", time.gmtime(end))}</div>
<main>{body}</main></body></html>"""


def screenshot(page_html: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(page_html.resolve().as_uri())
        page.screenshot(path=str(png), full_page=True)
        browser.close()


def snapshot(prometheus: str, start: float, end: float, png: Path, title: str, rate_window: str = "1m") -> Path:
    """Render the page (kept beside nothing: a temporary file) and screenshot it into ``png``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="potaflow-dashboard-") as folder:
        page = Path(folder) / "dashboard.html"
        page.write_text(render(prometheus, start, end, rate_window, title))
        screenshot(page, png)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--rate-window", default="1m")
    parser.add_argument("--title", default="PotaFlow")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args()
    end = time.time()
    print(snapshot(args.prometheus, end - args.minutes * 60, end, args.out, args.title, args.rate_window))


if __name__ == "__main__":
    main()
