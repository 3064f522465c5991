"""``report.html``: one self-contained page (plots embedded) that shows it all.

The page is made from the summary and the plots' files only, so it shows
exactly what ``summary.json`` says.  The plots are embedded as ``data:``
URIs: the page can be mailed or attached to an issue on its own.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from chatlog.report.nodes import NODE_HEADERS, node_rows, silent_warnings
from chatlog.report.text import HLOG_HEADERS, fmt, hlog_answer, hlog_rows, summary_rows

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.2em .8em;border-bottom:1px solid #eee}
th{text-align:left;background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0} code{background:#f4f4f4}
"""

_PLOT_TITLES = {
    "messages": "Messages per second",
    "nodes": "Messages per second, node by node",
    "connections": "Concurrent connections",
    "rtt": "Round-trip time: histogram and percentiles",
    "rtt_over_time": "Round-trip percentiles over time",
    "bench": "Benchmark: throughput and p99 against connections",
    "latency_vs_load": "Round trips against offered load (interval logs)",
    "percentiles_over_time": "Round-trip percentiles per interval (interval logs)",
}


def render_html(summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """One self-contained page: the summary tables and every plot, embedded."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>chatlog report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>chatlog report</h1>",
        f"<p>Times are {summary['time']['zone']} time.</p>",
        "<h2>Summary</h2>",
        _table(["section", "what", "value"], summary_rows(summary)),
    ]
    if summary.get("nodes"):
        parts.append("<h2>Nodes</h2>")
        parts += [f"<p><b>{html.escape(w)}</b></p>" for w in silent_warnings(summary["nodes"])]
        parts.append(_table(NODE_HEADERS, node_rows(summary["nodes"])))
    for name, path in plots.items():
        title = _PLOT_TITLES.get(name, name)
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            f'<img src="{_data_uri(path)}" alt="{html.escape(title)}" '
            f'title="{html.escape(path.name)}" data-file="{html.escape(path.name)}">'
        )
    clients = summary["clients"]
    parts.append(f"<h2>Clients (top {clients['top']})</h2>")
    parts.append(
        _table(
            ["address", "connections", "messages"],
            [(r["ip"], r["connections"], r["messages"]) for r in clients["by_ip"]],
        )
    )
    parts.append(
        _table(
            ["address:port", "messages"],
            [(r["address"], r["messages"]) for r in clients["by_address"]],
        )
    )
    if summary["client"]["rtt_ms"].get("count"):
        names = ["count", "p50", "p90", "p99", "p999", "max"]
        # summary.json's key is p999; people (and the client) say p99.9.
        headers = ["p99.9" if name == "p999" else name for name in names]
        parts.append("<h2>Round trips per client log (ms)</h2>")
        parts.append(
            _table(
                ["client log", *headers],
                [
                    (r["path"], *(r.get(n) for n in names))
                    for r in summary["client"]["rtt_ms_by_file"]
                ],
            )
        )
        timeline = summary["client"]["rtt_over_time"]
        parts.append("<h2>Round trips over time (ms)</h2>")
        parts.append(f"<p>Per interval of {timeline['interval_s']} s.</p>")
        parts.append(
            _table(
                ["start", *headers],
                [(r["start"], *(r.get(n) for n in names)) for r in timeline["rows"]],
            )
        )
    if "bench" in summary:
        parts.append("<h2>Benchmark rows</h2>")
        parts.append(
            _table(
                ["server", "mode", "connections", "msgs/s", "p99 (ms)"],
                [
                    (r["server"], r.get("mode", ""), r["connections"], r["msgs_per_s"], r["p99_ms"])
                    for r in summary["bench"]
                ],
            )
        )
    for file in summary.get("hlog", []):
        parts.append(f"<h2>Interval log {html.escape(file['path'])}</h2>")
        parts.append(f"<p>{html.escape(hlog_answer(file))}</p>")
        parts.append(_table(HLOG_HEADERS, hlog_rows(file)))
    parts.append("<h2>Files</h2>")
    parts.append(
        _table(
            ["path", "format", "role", "lines", "unparsed", "torn"],
            [
                (f["path"], f["format"], f["role"], f["records"], f["unparsed"], f.get("torn", 0))
                for f in summary["files"]
            ],
        )
    )
    if summary["unparsed"]["examples"]:
        parts.append("<h2>Unparsed records (first few)</h2>")
        parts.append(
            _table(
                ["file", "line", "text"],
                [(e["file"], e["line"], e["text"]) for e in summary["unparsed"]["examples"]],
            )
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    # Numbers are right-aligned, and need no escaping: fmt writes them as digits and commas.
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{fmt(v)}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape(fmt(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
