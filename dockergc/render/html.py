"""The dry-run report as one self-contained HTML file: no network, no external assets.

The host and dockergc version that made it, totals, a bar chart of reclaimable bytes by
kind (inline SVG), the action table with evidence, the kept findings. A few lines of
inline script add the table up again and record the sums on the table
(``data-computed-total``, ``data-computed-count``); only when they disagree with the
totals does the page show a warning, so a test in a real browser can check the page
agrees with itself without the reader seeing the arithmetic.
"""

from __future__ import annotations

import socket
from html import escape

from dockergc import __version__
from dockergc.durations import format_duration
from dockergc.plan import KINDS, Plan
from dockergc.render.interface import display, human_age, human_bytes

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%;margin:1em 0}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}.frozen{background:#fee;padding:1em}
details summary{cursor:pointer;color:#555}.path{font-family:monospace;word-break:break-all}
"""

SCRIPT = """
var rows=document.querySelectorAll('tr.action'),sum=0,table=document.getElementById('actions');
rows.forEach(function(r){sum+=parseInt(r.dataset.bytes,10)});
table.dataset.computedTotal=String(sum);table.dataset.computedCount=String(rows.length);
var bytes=document.getElementById('total-bytes').dataset.bytes,
    count=document.getElementById('total-count').textContent;
if(String(sum)!==bytes||String(rows.length)!==count){
  var w=document.getElementById('self-check');w.hidden=false;
  w.textContent='This page does not add up: its table holds '+rows.length+' row(s) of '+sum+
    ' bytes, its totals say '+count+' item(s) of '+bytes+' bytes. Do not act on it.';
}
"""


def _chart(plan: Plan) -> str:
    by_kind = plan.totals()["by_kind"]
    peak = max((s["bytes"] for s in by_kind.values()), default=0) or 1
    bars = []
    for i, kind in enumerate(k for k in KINDS if k in by_kind):
        b = by_kind[kind]["bytes"]
        width = int(400 * b / peak)
        y = 24 * i
        bars.append(
            f'<text x="0" y="{y + 15}">{kind}</text>'
            f'<rect x="130" y="{y + 3}" width="{width}" height="16" fill="#4a7"/>'
            f'<text x="{135 + width}" y="{y + 15}">{human_bytes(b)}</text>'
        )
    height = 24 * len(bars) or 24
    return (
        f'<svg role="img" aria-label="reclaimable bytes by kind" width="640" '
        f'height="{height}" font-size="12">{"".join(bars)}</svg>'
    )


class HtmlRenderer:
    name = "html"

    def __init__(self, host: str | None = None) -> None:
        self.host = host

    def render(self, plan: Plan) -> str:
        host = self.host or socket.gethostname()
        totals = plan.totals()
        rows = "".join(
            f'<tr class="action" data-bytes="{a.bytes}"><td>{a.kind}</td>'
            f'<td class="path">{escape(display(a.path))}</td><td class="num">'
            f"{human_bytes(a.bytes)}</td><td>{human_age(a.age_seconds)}</td>"
            f"<td>{escape(a.reason)}<details><summary>evidence</summary><ul>"
            + "".join(f"<li>{escape(e)}</li>" for e in a.evidence)
            + "</ul></details></td></tr>"
            for a in plan.actions
        )
        kept = "".join(
            f'<tr><td>{escape(k.kind)}</td><td class="path">{escape(display(k.path))}</td>'
            f"<td>{escape(k.reason)}</td></tr>"
            for k in plan.kept
        )
        frozen = "".join(f"<li>{escape(f)}</li>" for f in plan.frozen)
        frozen_block = (
            '<div class="frozen"><b>Frozen</b>: no layer dir will be removed until this is '
            f"resolved:<ul>{frozen}</ul></div>"
            if frozen
            else ""
        )
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>dockergc plan for {escape(plan.root)} on {escape(host)}</title>
<style>{STYLE}</style></head><body>
<h1>dockergc plan for <span class="path">{escape(display(plan.root))}</span>
on <span id="host">{escape(host)}</span></h1>
<p>Dry run made {escape(plan.created)} by dockergc <span id="dockergc-version">{__version__}</span>:
nothing was changed. Grace period {format_duration(plan.min_age_seconds)}.</p>
{"".join(f'<p class="note"><b>Note</b>: {escape(n)}</p>' for n in plan.notes)}
{frozen_block}
<p>Would remove <b id="total-count">{totals["actions"]}</b> item(s),
<b id="total-bytes" data-bytes="{totals["bytes"]}">{human_bytes(totals["bytes"])}</b>;
kept <b id="kept-count">{totals["kept"]}</b> item(s) worth reporting.</p>
<p id="self-check" class="frozen" hidden></p>
{_chart(plan)}
<h2>Actions</h2>
<table id="actions"><thead><tr><th>kind</th><th>path</th><th>size</th><th>age</th>
<th>reason</th></tr>
</thead><tbody>{rows}</tbody></table>
<h2>Kept</h2>
<table><thead><tr><th>kind</th><th>path</th><th>reason</th></tr></thead>
<tbody>{kept}</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""
