"""The load test's report: per-endpoint figures against the baseline, as CSV, Markdown and HTML.

``write`` takes the engine's run and the bare app's (``bench.bare_shop``, the same users) and
writes ``load.csv`` (a row per endpoint, then ``all``), ``memory.csv`` (the engine's resident
memory per process, a sample a second), ``load.md`` and ``load.html``: the same table, plus
server-rendered SVG charts (edge.pages.charts) of throughput and latency percentiles over time, the
per-endpoint percentiles as bars, and memory over time.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from markupsafe import Markup

from bench.locust_run import Run
from edge.pages.charts import COLORS, lines

__all__ = ["Row", "rows", "write"]

Row = dict[str, Any]
_COLUMNS = ["endpoint", "requests", "failures", "requests_per_s", "p50_ms", "p95_ms", "p99_ms",
            "max_ms", "bare_requests_per_s", "bare_p50_ms", "bare_p95_ms", "bare_p99_ms",
            "p50_x_bare", "p99_x_bare"]  # fmt: skip


def _num(value: str | None) -> float:
    try:
        return float(value or "nan")
    except ValueError:
        return float("nan")


def _figures(row: dict[str, str]) -> Row:
    return {"requests": int(_num(row["Request Count"])),
            "failures": int(_num(row["Failure Count"])),
            "requests_per_s": _num(row["Requests/s"]), "p50_ms": _num(row["50%"]),
            "p95_ms": _num(row["95%"]), "p99_ms": _num(row["99%"]),
            "max_ms": _num(row["Max Response Time"])}  # fmt: skip


def rows(kairos: Run, bare: Run | None, ratios: bool = True) -> list[Row]:
    """A row per endpoint (by name), then ``all``: the engine's figures, the bare app's and
    (with ``ratios``: neither phase had a failure) the latency ratios."""
    theirs = bare.endpoints() if bare else {}
    found = []
    pairs = [(name, row, theirs.get(name)) for name, row in sorted(kairos.endpoints().items())]
    pairs.append(("all", kairos.total(), bare.total() if bare else None))
    for name, row, base in pairs:
        mine = {"endpoint": name, **_figures(row)}
        if base is not None:
            b = _figures(base)
            mine |= {"bare_requests_per_s": b["requests_per_s"], "bare_p50_ms": b["p50_ms"],
                     "bare_p95_ms": b["p95_ms"], "bare_p99_ms": b["p99_ms"]}  # fmt: skip
            if ratios:
                mine |= {"p50_x_bare": _ratio(mine["p50_ms"], b["p50_ms"]),
                         "p99_x_bare": _ratio(mine["p99_ms"], b["p99_ms"])}  # fmt: skip
        found.append(mine)
    return found


def _ratio(a: float, b: float) -> float:
    return a / max(b, 1.0)  # Locust reports whole milliseconds: a 0 ms baseline counts as 1


def memory_summary(run: Run) -> list[tuple[str, float, float, float]]:
    """(process, first MB, last MB, peak MB) per process, in first-seen order."""
    by: dict[str, list[float]] = defaultdict(list)
    for _, name, _, mb in run.memory:
        by[name].append(mb)
    return [(name, v[0], v[-1], max(v)) for name, v in by.items()]


def write(
    out: Path,
    kairos: Run,
    bare: Run | None,
    setup: str,
    verdict: Sequence[str] = (),
    ratios: bool = True,
) -> list[Row]:
    """Write the four files to ``out``; returns the rows. ``verdict``: lines that end the
    Markdown report; ``ratios``: False when a phase had failures (no ratio over errors)."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(kairos, bare, ratios)
    with open(out / "load.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, _COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()}
            for row in table
        )
    with open(out / "memory.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "process", "pid", "rss_mb"])
        writer.writerows((f"{s:.1f}", name, pid, f"{mb:.1f}") for s, name, pid, mb in kairos.memory)
    (out / "load.md").write_text(markdown(table, kairos, bare, setup, verdict))
    (out / "load.html").write_text(html(table, kairos, bare, setup))
    return table


def _ms(value: float) -> str:
    return "–" if value != value else f"{value:,.0f} ms"


def _x(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.1f}×"


def markdown(
    table: list[Row], kairos: Run, bare: Run | None, setup: str, verdict: Sequence[str] = ()
) -> str:
    lines_ = [
        f"# Load test ({kairos.label})",
        "",
        setup,
        "",
        "| endpoint | requests | failures | req/s | p50 | p95 | p99 | bare p50 | bare p99 "
        "| p50 × bare | p99 × bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        name = f"**{row['endpoint']}**" if row["endpoint"] == "all" else f"`{row['endpoint']}`"
        lines_.append(
            f"| {name} | {row['requests']:,} | {row['failures']:,} | "
            f"{row['requests_per_s']:,.1f} | {_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} | "
            f"{_ms(row['p99_ms'])} | {_ms(row.get('bare_p50_ms', float('nan')))} | "
            f"{_ms(row.get('bare_p99_ms', float('nan')))} | {_x(row.get('p50_x_bare'))} | "
            f"{_x(row.get('p99_x_bare'))} |"
        )
    lines_ += ["", *notes(kairos, bare)]
    if verdict:
        lines_ += ["", *verdict]
    return "\n".join(lines_) + "\n"


def notes(kairos: Run, bare: Run | None) -> list[str]:
    """Decisions, memory, failures and the load generator's warnings, as Markdown lines."""
    c = kairos.counters
    found = []
    decided = c.get("decisions", 0)
    if decided:
        fallbacks = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("fallback:")}
        found.append(
            f"- Decisions on `/v1/decide`: {decided:,}, {c.get('with_content', 0) / decided:.1%} "
            "with content or items (the cart offer's `none` variant has none by design); "
            + (
                "answered with a default: "
                + ", ".join(f"{v:,} {k}" for k, v in sorted(fallbacks.items()))
                if fallbacks
                else "none answered with a default"
            )
            + (f"; {c['missing']:,} placements missing from answers" if c.get("missing") else "")
            + "."
        )
    if c.get("emails"):
        found.append(f"- Emails (recommendation answers): {c['emails']:,}, "
                     f"{c.get('emails_with_items', 0) / c['emails']:.1%} with items.")  # fmt: skip
    memory = memory_summary(kairos)
    if memory:
        total_first = sum(m[1] for m in memory)
        total_last = sum(m[2] for m in memory)
        found.append(
            "- Engine memory (RSS, start → end of the run, peak): "
            + "; ".join(f"{n} {a:,.0f} → {b:,.0f} MB (peak {p:,.0f})" for n, a, b, p in memory)
            + f"; all {total_first:,.0f} → {total_last:,.0f} MB."
        )
    for run in (kairos, bare):
        if run is None:
            continue
        for failure in run.failures[:10]:
            found.append(f"- {run.label} failure: `{failure.get('Method')} {failure.get('Name')}` "
                         f"× {failure.get('Occurrences')}: {failure.get('Error')}")  # fmt: skip
        for warning in run.warnings[:5]:
            found.append(f"- Locust ({run.label}): {warning}")
    return found


def bars(groups: Sequence[tuple[str, dict[str, float]]], label: str) -> Markup:
    """Horizontal bars, one group per name, one bar per series in each (values in ms)."""
    if not groups:
        return Markup('<p class="muted">No data.</p>')
    series = list(groups[0][1])
    top = max((v for _, values in groups for v in values.values() if v == v), default=1.0) or 1.0
    width, left, bar, gap = 640, 250, 9, 10
    height = 24 + len(groups) * (bar * len(series) + gap)
    parts = [f'<text x="{left}" y="12" class="axis">{escape(label)}</text>']
    y = 22
    for name, values in groups:
        parts.append(f'<text x="{left - 8}" y="{y + bar * len(series) / 2 + 4:.0f}" '
                     f'text-anchor="end">{escape(name)}</text>')  # fmt: skip
        for i, key in enumerate(series):
            value = values.get(key, float("nan"))
            w = 0.0 if value != value else (width - left - 70) * value / top
            parts.append(
                f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{bar - 1}" '
                f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(name)} {escape(key)}: '
                f"{_ms(value)}</title></rect>"
                f'<text x="{left + w + 4:.1f}" y="{y + bar - 1}" font-size="9">{_ms(value)}</text>'
            )
            y += bar
        y += gap
    legend = "".join(f'<span class="key"><i style="background:{COLORS[i % len(COLORS)]}"></i>'
                     f"{escape(k)}</span>" for i, k in enumerate(series))  # fmt: skip
    svg = f'<svg viewBox="0 0 {width} {height}" class="chart" role="img">{"".join(parts)}</svg>'
    return Markup(f"<figure>{svg}<figcaption>{legend}</figcaption></figure>")


def _history(run: Run, column: str) -> list[tuple[float, float]]:
    points = [(_num(r["Timestamp"]), _num(r[column])) for r in run.history
              if r.get("Name") == "Aggregated"]  # fmt: skip
    points = [(t, v) for t, v in points if t == t and v == v]
    if not points:
        return []
    start = points[0][0]
    return [(t - start, v) for t, v in points]


def html(table: list[Row], kairos: Run, bare: Run | None, setup: str) -> str:
    seconds = ("0 s", f"{kairos.seconds} s")
    throughput = {f"{kairos.label} req/s": _history(kairos, "Requests/s")}
    if bare is not None:
        throughput[f"{bare.label} req/s"] = _history(bare, "Requests/s")
    latency = {f"p{p}": _history(kairos, f"{p}%") for p in (50, 95, 99)}
    if bare is not None:
        latency["bare p99"] = _history(bare, "99%")
    memory: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s, name, _, mb in kairos.memory:
        memory[name].append((s, mb))
    groups = [(row["endpoint"], {"p50": row["p50_ms"], "p95": row["p95_ms"], "p99": row["p99_ms"],
                                 "bare p99": row.get("bare_p99_ms", float("nan"))})
              for row in table]  # fmt: skip
    head = ["endpoint", "requests", "failures", "req/s", "p50", "p95", "p99", "bare p50",
            "bare p99", "p50 × bare", "p99 × bare"]  # fmt: skip
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
            row["endpoint"], f"{row['requests']:,}", f"{row['failures']:,}",
            f"{row['requests_per_s']:,.1f}", _ms(row["p50_ms"]), _ms(row["p95_ms"]),
            _ms(row["p99_ms"]), _ms(row.get("bare_p50_ms", float("nan"))),
            _ms(row.get("bare_p99_ms", float("nan"))), _x(row.get("p50_x_bare")),
            _x(row.get("p99_x_bare")),
        )) + "</tr>"
        for row in table
    )  # fmt: skip
    notes_html = "".join(f"<li>{escape(n[2:])}</li>" for n in notes(kairos, bare))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kairos load test</title>
<style>
  body {{ font: 14px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 960px; }}
  table {{ border-collapse: collapse; }}
  td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; }}
  td:not(:first-child), th:not(:first-child) {{ text-align: right; }}
  .muted, .chart .axis {{ color: #666; fill: #666; }}
  .chart {{ width: 100%; height: auto; font-size: 11px; }} figure {{ margin: 0 0 1.5rem; }}
  .key {{ margin-right: 1rem; white-space: nowrap; }}
  .key i {{ display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; }}
</style></head><body>
<h1>Kairos load test</h1>
<p>{escape(setup)}</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{body}</table>
<ul>{notes_html}</ul>
<h2>Throughput</h2>{lines(throughput, "requests/s (all endpoints)", x_labels=seconds)}
<h2>Latency percentiles over time</h2>
{lines(latency, "ms, all endpoints (10 s window)", x_labels=seconds)}
<h2>Latency per endpoint</h2>{bars(groups, "ms over the whole run")}
<h2>Engine memory</h2>{lines(dict(memory), "RSS, MB per process", x_labels=seconds)}
</body></html>
"""
