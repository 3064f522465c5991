"""What the report writes into its directory: ``summary.json``, the plots, ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatlog.report.loadplots import draw_hlog_plots
from chatlog.report.page import render_html
from chatlog.report.plots import draw_all
from chatlog.report.summary import Report


def write_report(
    report: Report,
    outdir: str | Path,
    bench: list[dict[str, Any]] | None = None,
    hlogs: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write summary.json, the plots and report.html into ``outdir``; return their paths.

    ``hlogs``: the interval logs' summaries (:func:`chatlog.report.hlogs.load_hlogs`).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    # The plots first: summary.json lists the files that were drawn.
    plots = draw_all(report, out, bench)
    if hlogs:
        plots.update(draw_hlog_plots(hlogs, out))
    report.summary["plots"] = [path.name for path in plots.values()]
    if bench is not None:
        report.summary["bench"] = bench
    if hlogs:
        report.summary["hlog"] = hlogs
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(report.summary, indent=2) + "\n")
    html_path = out / "report.html"
    html_path.write_text(render_html(report.summary, plots))
    return {"summary": summary_path, "html": html_path, **plots}
