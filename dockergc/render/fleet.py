"""The fleet report as text (one row a host, then totals) and as one HTML page."""

from __future__ import annotations

from html import escape

from dockergc import __version__
from dockergc.fleet import FleetReport
from dockergc.render.interface import display, human_bytes

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%;margin:1em 0}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.refused,.error,.frozen{background:#fee}.bad{background:#fee;padding:1em}
"""


def fleet_text(report: FleetReport) -> str:
    header = ("HOST", "STATUS", "ACTIONS", "BYTES")
    cells = [
        (display(h.host), h.status, str(h.actions), human_bytes(h.bytes)) for h in report.hosts
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(4)]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for h in report.hosts:
        lines += [f"  {display(h.host)}: frozen: {reason}" for reason in h.frozen]
        lines += [f"  {display(h.host)}: {h.status}: {why}" for why in h.refusals]
    t = report.totals()
    lines.append(
        f"fleet: {t['hosts']} host(s), would remove {t['actions']} item(s), "
        f"{human_bytes(t['bytes'])}; {t['frozen_hosts']} frozen, {t['refused_hosts']} "
        f"refused, {t['error_hosts']} failed"
    )
    if report.bad_files:
        lines.append(f"skipped {len(report.bad_files)} bad plan file(s):")
        lines += [f"  {b.problem}" for b in report.bad_files]
    return "\n".join(lines)


def fleet_html(report: FleetReport) -> str:
    t = report.totals()
    rows = "".join(
        f'<tr class="host {h.status}" data-bytes="{h.bytes}"><td>{escape(display(h.host))}</td>'
        f'<td>{h.status}</td><td class="num">{h.actions}</td>'
        f'<td class="num">{human_bytes(h.bytes)}</td><td><ul>'
        + "".join(f"<li>frozen: {escape(f)}</li>" for f in h.frozen)
        + "".join(f"<li>{h.status}: {escape(r)}</li>" for r in h.refusals)
        + "</ul></td></tr>"
        for h in report.hosts
    )
    bad = "".join(f"<li>{escape(b.problem)}</li>" for b in report.bad_files)
    bad_block = (
        f'<div class="bad" id="bad-files"><b>Skipped {len(report.bad_files)} bad plan '
        f"file(s)</b>:<ul>{bad}</ul></div>"
        if bad
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dockergc fleet report</title>
<style>{STYLE}</style></head><body>
<h1>dockergc fleet report</h1>
<p>Made by dockergc {__version__} from {t["hosts"] + t["bad_files"]} file(s): dry runs,
nothing was changed.</p>
<p><b id="fleet-hosts">{t["hosts"]}</b> host(s) would remove
<b id="fleet-actions">{t["actions"]}</b> item(s),
<b id="fleet-bytes" data-bytes="{t["bytes"]}">{human_bytes(t["bytes"])}</b>;
{t["frozen_hosts"]} frozen, {t["refused_hosts"]} refused, {t["error_hosts"]} failed.</p>
{bad_block}
<table><thead><tr><th>host</th><th>status</th><th>actions</th><th>bytes</th>
<th>frozen reasons, refusals</th></tr></thead><tbody>{rows}</tbody></table>
</body></html>
"""
