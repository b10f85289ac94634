"""The growth team's dashboard, server-rendered (jinja2, inline SVG charts, no front-end build).

Pages under ``/dashboard``: the overview (placements with a one-line verdict, the models), a
placement's results (table, cumulative conversion rate per variant, allocation over time, lift
intervals, method notes), a profile lookup, a live tail of incoming events, the learner's model
metrics, and subscriptions (people per group and state, unsubscribes, the
suppression list).

Sign-in, sessions and roles: ``edge.pages.signin`` and ``edge.pages.frame`` (every page names
the scope it needs; a viewer's profile hides its contact fields, ``edge.access.contact``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.errors import QueryFailed, StoreUnavailable
from decisions.changes import detected
from decisions.placements import placements
from decisions.results import allocation, store_time, timeline
from edge.access.contact import CONTACT_IDENTITIES, masked
from edge.api.auth import holds
from edge.pages import charts
from edge.pages.frame import form_checked, form_token, guarded, page
from edge.pages.signin import login, logout
from edge.pages.text import exact, plural
from edge.routes.models import models_summary
from edge.routes.placements import results_of
from edge.routes.profiles import NotFound, find_profile
from journeys.lift import CONTROL, journey_results
from journeys.spec import ACTIONS, Journey, in_order
from journeys.stats import active_by_step
from journeys.stats import counts as journey_counts
from journeys.store import journeys
from journeys.subscriptions import STATES
from journeys.subscriptions import groups as subscription_groups
from journeys.suppression import size as suppressed
from profiles.views import describe

# form_checked, form_token, guarded and page stay importable from here (edge.pages.frame's)
__all__ = ["form_checked", "form_token", "guarded", "page", "routes"]


async def root(request: Request) -> Response:
    """``/`` has nothing of its own: send people to the dashboard (which asks them to sign in)."""
    return RedirectResponse("/dashboard", 303)


def verdict(found: dict[str, Any]) -> str:
    """One line a growth team can act on, from ``results_of`` (for a bandit, the share it
    shows each variant with now comes from the policy's learned state)."""
    treated = [v for v in found["variants"] if v["variant"] != found["control"]]
    units = sum(v["units"] for v in found["variants"])
    visitors = plural(units, "visitor")
    if units == 0:
        return "Waiting for traffic."
    if found.get("srm"):
        return "Sample ratio mismatch: the split is off, check the assignment before reading on."
    if found["policy"] != "ab":
        return _bandit_verdict(found, visitors)
    significant = [v for v in treated if v.get("pValueHolm", v["pValue"]) < 0.05]
    if not significant:
        return f"No clear difference yet ({visitors})."
    best = max(significant, key=lambda v: v["lift"])
    word = "beats" if best["lift"] > 0 else "trails"
    chance = best["chanceToBeatControl"] or 0
    return (f"{best['variant']} {word} {found['control']}: {best['lift']:+.1%} "
            f"(p = {best['pValue']:.3g}, {chance:.0%} chance to beat).")  # fmt: skip


def _bandit_verdict(found: dict[str, Any], visitors: str) -> str:
    shares = {v["variant"]: v["posterior"]["probability"] for v in found["variants"]
              if "probability" in (v.get("posterior") or {})}  # fmt: skip
    if shares:
        leader = max(shares, key=lambda v: shares[v])
        return f"The bandit shows {leader} {shares[leader]:.0%} of the time ({visitors})."
    # A contextual policy's share depends on who asks: say what it did lately instead.
    latest = (found.get("allocation") or [{}])[-1].get("decisions") or {}
    if not latest:
        return f"The bandit has not decided yet ({visitors})."
    leader = max(latest, key=lambda v: latest[v])
    share = latest[leader] / sum(latest.values())
    return f"The bandit showed {leader} in {share:.0%} of its latest decisions ({visitors})."


_LAST_DECISIONS = "SELECT placement, max(timestamp) FROM decisions GROUP BY placement"


def status(last: Any) -> str:
    """live (decided in the last hour), quiet (decided before), or no traffic yet."""
    if last is None:
        return "no traffic yet"
    ago = datetime.now(UTC) - store_time(last)
    return "live" if ago.total_seconds() < 3600 else "quiet"


@guarded
async def overview(request: Request) -> Response:
    defined = await run_in_threadpool(placements, request.state.redis_sync)
    last = dict((await request.state.store.query(_LAST_DECISIONS, {}, limited=False)).rows)
    rows = []
    for key, placement in sorted(defined.items()):
        found = await results_of(request, key, placement)
        rows.append({"key": key, "name": placement.name or key, "policy": placement.policy.kind,
                     "variants": len(placement.variants), "verdict": verdict(found),
                     "status": status(last.get(key)),
                     "units": sum(v["units"] for v in found["variants"])})  # fmt: skip
    models = (await models_summary(request))["models"]
    return page(request, "overview.html", placements=rows, models=models, section="overview")


@guarded
async def placement_page(request: Request) -> Response:
    key = request.path_params["key"]
    defined = await run_in_threadpool(placements, request.state.redis_sync)
    placement = defined.get(key)
    if placement is None:
        return page(request, "error.html", 404, message=f"No placement {key!r}.")
    found = await results_of(request, key, placement)
    since, until = found["window"]["since"], found["window"]["until"]
    curves = await timeline(request.state.store, key, placement, since=since, until=until)
    counts = await allocation(request.state.store, key, since, until)
    colors = charts.palette(placement.arms())  # one per variant, the same in every chart
    rate = charts.lines({v: [(_x(at), r) for at, r in curves.get(v, [])] for v in placement.arms()},
                        "cumulative conversion rate", percent=True,
                        x_labels=_span(curves), colors=colors)  # fmt: skip
    shares: dict[str, list[tuple[float, float]]] = {v: [] for v in placement.arms()}
    for bucket in counts:
        total = sum(bucket["decisions"].values())
        for variant in shares:
            shares[variant].append((_x(bucket["at"]), bucket["decisions"].get(variant, 0) / total))
    changes = []
    if placement.policy.detect_changes:
        changes = await run_in_threadpool(detected, request.state.redis_sync, key)
    marks = [(c.at / 1000, f"{c.variant} {c.direction} ({c.rate:.2%} since the previous "
              "restart): restarted") for c in changes]  # fmt: skip
    allocated = charts.lines(shares, "share of decisions", percent=True,
                             x_labels=_span({"": [(b["at"], 0) for b in counts]}),
                             colors=colors, marks=marks)  # fmt: skip
    lifts = charts.intervals(
        [(v["variant"], v["liftCI"][0], v["lift"], v["liftCI"][1]) for v in found["variants"]
         if v["variant"] != found["control"] and v["units"]],
        f"relative lift against {found['control']}, 95% interval", colors,
    )  # fmt: skip
    return page(request, "placement.html", key=key, placement=placement, found=found,
                 verdict=verdict(found), rate=rate, allocated=allocated, lifts=lifts,
                 changes=[(datetime.fromtimestamp(c.at / 1000, UTC), c) for c in changes],
                 section="overview")  # fmt: skip


@guarded
async def profile_page(request: Request) -> Response:
    """A person's profile; without ``profiles:read`` (a viewer) its contact fields are hidden,
    and a person cannot be looked up by one."""
    wanted = request.query_params.get("id", "").strip()
    profile, problem = None, None
    contact = holds(request, "profiles:read")
    if wanted and not contact and wanted.partition(":")[0] in CONTACT_IDENTITIES:
        problem = (
            "Looking a person up by a contact field needs the profiles:read scope (the "
            "editor or admin role): give a profile id, user_id:… or anonymous_id:…."
        )
    elif wanted:
        try:
            snapshot = await run_in_threadpool(find_profile, request.state.profiles, wanted)
            profile = describe(snapshot, int(time.time() * 1000))
        except (ValueError, NotFound) as exc:
            problem = str(exc)
    if profile is not None and not contact:
        profile = masked(profile)
    pretty = msgspec.json.format(msgspec.json.encode(_readable(profile))) if profile else b""
    return page(request, "profile.html", wanted=wanted, profile=profile, pretty=pretty.decode(),
                 problem=problem, contact=contact, section="profiles")  # fmt: skip


_TIMES = ("first_seen", "last_seen")  # epoch ms in the API's profile


def _readable(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile as the API returns it, but with its times for a person to read."""
    computed = dict(profile["computed"])
    for name in _TIMES:
        if name in computed:
            computed[name] = exact(computed[name])
    return {**profile, "computed": computed}


_LIVE = """
SELECT received_at, type, if(event != '', event, name),
       if(user_id != '', user_id, anonymous_id), page_path
FROM events
WHERE received_at > now64(3) - toIntervalHour(1)
ORDER BY received_at DESC
LIMIT 50
"""


@guarded
async def live(request: Request) -> Response:
    """The newest events stored (the sink stores them within a second or two)."""
    rows = (await request.state.store.query(_LIVE, {}, limited=False)).rows
    events = [{"at": store_time(at), "type": kind, "name": name, "who": who, "path": path}
              for at, kind, name, who, path in rows]  # fmt: skip
    return page(request, "live.html", events=events, section="live")


@guarded
async def models(request: Request) -> Response:
    found = await models_summary(request)
    calibration = {
        m["target"]: charts.lines(
            {"predicted = observed": [(0.0, 0.0), (1.0, 1.0)],
             "observed": [(d["predicted"], d["observed"]) for d in m["calibration"]]},
            "observed rate by decile of prediction", percent=True,
            x_labels=("predicted 0%", "100%"))
        for m in found["models"]
    }  # fmt: skip
    updated = found.get("updated")  # epoch seconds, from the learner's clock
    return page(request, "models.html", models=found["models"], ltv=found.get("ltv"),
                 calibration=calibration, section="models",
                 updated=datetime.fromtimestamp(updated, UTC) if updated else None)  # fmt: skip


@guarded
async def journeys_page(request: Request) -> Response:
    """Each journey as a funnel: entered, each action step, completed, converted."""
    client, store = request.state.redis_sync, request.state.store
    found = await run_in_threadpool(journeys, client)
    shown = []
    for key, journey in sorted(found.items()):
        try:
            stats = await run_in_threadpool(journey_counts, store, key, journey)
        except (StoreUnavailable, QueryFailed):
            stats = {"entered": 0, "people": 0, "completed": 0, "exited": {}, "actions": {}}
        active = await run_in_threadpool(active_by_step, client, key)
        stages = [("entered", stats["entered"])]
        stages += [(step, stats["actions"].get(step, 0)) for step in in_order(journey)
                   if isinstance(journey.steps[step], ACTIONS)]  # fmt: skip
        stages.append(("completed", stats["completed"]))
        if journey.goal:
            stages.append(("converted", stats.get("converted", 0)))
        chart = charts.funnel(stages, f"{journey.name or key}: people by stage")
        shown.append({"key": key, "journey": journey, "stats": stats, "active": active,
                      "chart": chart, **await _lift(store, key, journey)})  # fmt: skip
    return page(request, "journeys.html", journeys=shown, section="journeys")


async def _lift(store: Any, key: str, journey: Journey) -> dict[str, Any]:
    """A journey's treated people against its holdout (``journeys.lift``), and the interval of
    the difference in conversion rate drawn: nothing for a journey that holds no one out."""
    if not journey.goal:
        return {}
    try:
        found = await run_in_threadpool(journey_results, store, key, journey)
    except (StoreUnavailable, QueryFailed):
        return {}
    held = next((g for g in found["groups"] if g["group"] == CONTROL), None)
    if not journey.holdout and not (held and held["people"]):
        return {}
    chart = charts.holdout_lift(
        found["groups"],
        f"{journey.name or key}: conversion lift against the holdout, 95% interval (points)",
    )
    return {"results": found, "lift_chart": chart}


# Each person's latest state per group, from the "Subscription Changed" history (a merged
# person's two profiles count twice until their next change), and the latest unsubscribes.
_SUBSCRIBERS = """
SELECT g, s, count() FROM (
    SELECT JSONExtractString(properties, 'profile_id') AS pid,
           JSONExtractString(properties, 'group') AS g,
           argMax(JSONExtractString(properties, 'state'), timestamp) AS s
    FROM events WHERE type = 'track' AND event = 'Subscription Changed' GROUP BY pid, g
) GROUP BY g, s
"""
_UNSUBSCRIBES = """
SELECT timestamp, JSONExtractString(properties, 'group'), JSONExtractString(properties, 'source'),
       JSONExtractString(properties, 'profile_id')
FROM events WHERE type = 'track' AND event = 'Subscription Changed'
  AND JSONExtractString(properties, 'state') = 'unsubscribed'
ORDER BY timestamp DESC LIMIT 20
"""


@guarded
async def subscriptions_page(request: Request) -> Response:
    """People per group and state, the latest unsubscribes, the suppression list's size."""
    client, store = request.state.redis_sync, request.state.store
    defined = await run_in_threadpool(subscription_groups, client)
    counted: dict[str, dict[str, int]] = {}
    for group, state, n in (await store.query(_SUBSCRIBERS, {}, limited=False)).rows:
        counted.setdefault(group, {})[state] = n
    rows = [{"key": k, "group": g, "counts": [counted.get(k, {}).get(s, 0) for s in STATES]}
            for k, g in sorted(defined.items())]  # fmt: skip
    recent = [{"at": store_time(at), "group": group, "source": source, "profile": pid}
              for at, group, source, pid in
              (await store.query(_UNSUBSCRIBES, {}, limited=False)).rows]  # fmt: skip
    size = await run_in_threadpool(suppressed, client)
    return page(request, "subscriptions.html", groups=rows, states=STATES, recent=recent,
                 suppressed=size, section="subscriptions")  # fmt: skip


def _x(at: Any) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


def _span(series: dict[str, Any]) -> tuple[str, str]:
    moments = [at for points in series.values() for at, _ in points]
    if not moments:
        return "", ""
    return f"{min(moments):%b %d %H:%M}", f"{max(moments):%b %d %H:%M}"


routes = [
    Route("/", root, methods=["GET"]),
    Route("/dashboard/login", login, methods=["GET", "POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard", overview),
    Route("/dashboard/placements/{key}", placement_page),
    Route("/dashboard/profiles", profile_page),
    Route("/dashboard/live", live),
    Route("/dashboard/models", models),
    Route("/dashboard/journeys", journeys_page),
    Route("/dashboard/subscriptions", subscriptions_page),
]
