"""The dashboard's "Choosing a policy" page: which policy to pick for which situation, and the
cumulative regret of each policy on the four simulated scenarios of ``bench/bandits.py``.

The curves are the bench's own (``policies.json`` beside this module, written by a full run of
the bench, the same data as the charts in docs/img/), so the page shows what was measured and
nothing else.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.pages import charts
from edge.pages.dashboard import guarded, page

__all__ = ["routes"]

MEASURED = Path(__file__).with_name("policies.json")

# Situation -> the policy to pick and why (docs/decisions.md, "Choosing a policy", says more).
GUIDE = [
    ("A fixed split you will read with a significance test", "ab",
     "nothing is learned; every variant keeps its share"),
    ("Clicks or conversions, appeal steady", "thompson",
     "earns the most while it learns; the default"),
    ("Clicks or conversions, the best may change (promotions, seasons)",
     "thompson + detect_changes",
     "restarts when a variant's rate moves; as good as plain Thompson when nothing does"),
    ("Appeal drifts slowly and steadily", "thompson + window",
     "forgets evidence older than about window decisions; costs reward when nothing drifts"),
    ("Revenue, when the variant that converts most may not earn most", "revenue_thompson",
     "models conversion and order value apart, so a rarely converting high-value variant "
     "is found"),
    ("The best variant depends on who the visitor is (device, source, segment)", "linucb",
     "reads the context (features); linear_thompson is its Thompson twin"),
    ("You want the best variant named quickly, not the most reward meanwhile",
     "top_two_thompson", "keeps showing the runner-up"),
]  # fmt: skip


@lru_cache(maxsize=1)
def measured() -> dict[str, Any]:
    """The bench's curves (empty when no full run of the bench wrote them)."""
    try:
        found: dict[str, Any] = json.loads(MEASURED.read_text())
    except (OSError, ValueError):
        return {}
    return found


def regret_charts(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One chart per scenario: its name, what it is, and each policy's curve."""
    shown = []
    for name, scenario in data.get("scenarios", {}).items():
        series = {policy: [tuple(p) for p in points]
                  for policy, points in scenario["curves"].items()}  # fmt: skip
        chart = charts.lines(series, "cumulative regret (lower is better)",
                             x_labels=("0", f"{scenario['decisions']:,} decisions"))  # fmt: skip
        shown.append({"name": name, "title": scenario["title"], "chart": Markup(chart),
                      "ratios": scenario.get("ratios", {})})  # fmt: skip
    return shown


@guarded
async def policies_page(request: Request) -> Response:
    data = measured()
    return page(request, "policies.html", guide=GUIDE, scenarios=regret_charts(data),
                measured=data.get("measured"), seeds=data.get("seeds"),
                section="policies")  # fmt: skip


routes = [Route("/dashboard/policies", policies_page)]
