"""Placement admin API (secret key): ``PUT/GET/DELETE /v1/placements/{key}``,
``GET /v1/placements``, ``GET|POST /v1/placements/{key}/evaluate`` (off-policy evaluation) and
``GET /v1/placements/{key}/results?metric=&since=&until=&segment=`` (decisions.results).

``GET /v1/placements/{key}`` shows the definition and what the policy has learned so far: per
variant, the decisions it counted, the reward they earned, the mean, and (for policies that do
not depend on the context) the probability each variant is shown with now; with
``detect_changes``, the changes it found (newest first) and how many times it restarted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import redis
from scipy import stats as sp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bandits.spec import PolicySpec
from collector.errors import with_path
from collector.store import QueryFailed, StoreUnavailable
from decisions.changes import Detected, detected
from decisions.evaluate import evaluate_placement
from decisions.placements import (
    LEARNED,
    PLACEMENT,
    Placement,
    delete_placement,
    placements,
    policy_for,
    put_placement,
    state_key,
)
from decisions.results import placement_results
from edge.api.auth import needs
from edge.api.responses import Problem, error, json, path_key
from profiles.membership import member_key
from profiles.store import profile_keys

__all__ = ["check_window", "learned_summary", "results_of", "routes"]

log = logging.getLogger("kairos.placements")

# What a DateTime64 column holds comfortably (and what the tracking API accepts): a window
# outside it is the caller's mistake, not the store's failure.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class Evaluation(msgspec.Struct, forbid_unknown_fields=True):
    """What ``/evaluate`` takes (as a JSON body, or as query parameters)."""

    policy: PolicySpec
    since: datetime | None = None
    until: datetime | None = None
    train_share: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.5


def check_window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` in UTC (a time without a zone is UTC), between 1970 and 2200,
    ``since`` first; a 400 ``Problem`` naming the field otherwise."""
    found = []
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            if not _EARLIEST <= value < _LATEST:
                message = f"$.{name}: must lie between 1970 and 2200, got {value.isoformat()}"
                raise Problem(400, "invalid_request", message)
        found.append(value)
    since, until = found
    if since is not None and until is not None and since >= until:
        raise Problem(400, "invalid_request", "$.since: must be before `until`")
    return since, until


def _check_policy(key: str, placement: Placement, code: str = "invalid_placement") -> None:
    """The policy must build for these variants (``min_share`` × variants at most 1, a weight
    above 0…): a placement whose policy cannot be built would break every reader of it."""
    try:
        policy_for(key, placement, None, seed=0)
    except ValueError as exc:
        field = "$.variants" if "weights" in str(exc) else "$.policy"
        raise Problem(400, code, f"{field}: {exc}") from None


async def _placement(request: Request, key: str) -> Placement:
    found = (await run_in_threadpool(placements, request.state.redis_sync)).get(key)
    if found is None:
        raise Problem(404, "not_found", f"no placement {key!r}")
    return found


async def _serve_now(request: Request) -> None:
    """Refresh this process's catalog before answering a change: whoever wrote a placement and
    then asks for it (decide, recommendations) from the same process gets what they wrote, not
    a 404 until the next background refresh. Other API processes catch up within a second."""
    try:
        await request.state.catalog.refresh(request.state.redis)
    except (redis.RedisError, OSError) as exc:  # stored all the same: the background catches up
        log.warning("catalog not refreshed after a change", extra={"error": str(exc)})


@needs("placements:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        placement = PLACEMENT.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_placement", with_path(str(exc), of=Placement))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    _check_policy(key, placement)
    client = request.state.redis_sync
    existed = await run_in_threadpool(client.hexists, "{plc}:defs", key)
    changed = await run_in_threadpool(put_placement, client, key, placement)
    revision = (await run_in_threadpool(placements, client))[key].revision
    await _serve_now(request)
    body = {"key": key, "created": not existed, "changed": changed, "revision": revision}
    return json(body, 201 if not existed else 200)


@needs("read")
async def get_one(request: Request) -> Response:
    key = path_key(request)
    placement = await _placement(request, key)
    raw = await run_in_threadpool(request.state.redis_sync.get, state_key(key))
    learned = learned_summary(key, placement, raw)
    if placement.policy.detect_changes:
        found = await run_in_threadpool(detected, request.state.redis_sync, key)
        learned["changes"] = [_shown(change) for change in found]
    return json({"key": key, **msgspec.to_builtins(placement), "learned": learned})


def _shown(change: Detected) -> dict[str, Any]:
    at = datetime.fromtimestamp(change.at / 1000, UTC).isoformat().replace("+00:00", "Z")
    return {**msgspec.to_builtins(change), "at": at}


@needs("read")
async def list_all(request: Request) -> Response:
    found = await run_in_threadpool(placements, request.state.redis_sync)
    return json(
        {
            "placements": [
                {
                    "key": key,
                    "name": p.name,
                    "policy": p.policy.kind,
                    "variants": p.arms(),
                    "revision": p.revision,
                }
                for key, p in sorted(found.items())
            ]
        }
    )


@needs("placements:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    if not await run_in_threadpool(delete_placement, request.state.redis_sync, key):
        return error(404, "not_found", f"no placement {key!r}")
    await _serve_now(request)
    return json({"key": key, "deleted": True})


@needs("placements:write")
async def evaluate(request: Request) -> Response:
    key = path_key(request)
    placement = await _placement(request, key)
    try:
        ask = await _evaluation(request)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=Evaluation))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    since, until = check_window(ask.since, ask.until)
    try:  # the candidate must fit the placement (contextual kinds need features, …)
        candidate = msgspec.structs.replace(placement, policy=ask.policy)
        PLACEMENT.decode(msgspec.json.encode(candidate))
    except (msgspec.ValidationError, ValueError) as exc:  # replace() checks it too
        return error(400, "invalid_request", with_path(str(exc), of=Placement))
    _check_policy(key, candidate, "invalid_request")
    try:
        result = await evaluate_placement(
            request.state.store, key, placement, ask.policy, since, until, ask.train_share
        )
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json(result)


async def _evaluation(request: Request) -> Evaluation:
    """The body's JSON for a POST; for a GET, ``?kind=…&epsilon=…&features=a,b&since=…``."""
    if request.method == "POST":
        return msgspec.json.decode(await request.body(), type=Evaluation)
    query = dict(request.query_params)
    outer = {k: query.pop(k) for k in ("since", "until", "train_share") if k in query}
    policy: dict[str, Any] = dict(query)
    if "features" in policy:
        policy["features"] = [f for f in policy["features"].split(",") if f]
    return msgspec.convert({"policy": policy, **outer}, Evaluation, strict=False)


def learned_summary(key: str, placement: Placement, raw: bytes | None) -> dict[str, Any]:
    learned = LEARNED.decode(raw) if raw is not None else None
    policy = policy_for(key, placement, learned, seed=0)
    state = policy.state()
    pulls = state.get("n", [0.0] * len(placement.variants))
    sums = state.get("s")
    shares = None if policy.contextual else policy.probabilities().tolist()
    variants = []
    for i, variant in enumerate(placement.arms()):
        row: dict[str, Any] = {"variant": variant, "decisions": round(pulls[i], 3)}
        if sums is not None:
            row["reward"] = round(sums[i], 6)
            row["mean"] = round(sums[i] / pulls[i], 6) if pulls[i] else None
        if shares is not None:
            row["probability"] = round(shares[i], 4)
        if sums is not None and placement.policy.kind in ("thompson", "top_two_thompson"):
            alpha, beta = 1 + sums[i], 1 + max(pulls[i] - sums[i], 0)  # Beta(1, 1) prior
            row["posterior"] = [
                round(float(q), 6) for q in sp.beta.ppf([0.025, 0.975], alpha, beta)
            ]
        variants.append(row)
    summary = {
        "policy": placement.policy.kind,
        "revision": learned.rev if learned else 0,
        "decisions": round(policy.pulls, 3),
        "variants": variants,
    }
    if placement.policy.detect_changes:
        summary["restarts"] = int(state.get("restarts", 0))
    return summary


async def results_of(
    request: Request,
    key: str,
    placement: Placement,
    metric: str = "reward",
    since: datetime | None = None,
    until: datetime | None = None,
    units: list[str] | None = None,
) -> dict[str, Any]:
    """The results document with what the policy has learned (per variant, its posterior and
    the share it shows the variant with now). ``/results``, the dashboard's overview and its
    placement page all read a placement through this one function, so they say the same."""
    raw = await run_in_threadpool(request.state.redis_sync.get, state_key(key))
    learned = learned_summary(key, placement, raw)
    posterior = {row["variant"]: row for row in learned["variants"]}
    return await placement_results(request.state.store, key, placement, metric, since, until,
                                   units, posterior)  # fmt: skip


class ResultsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """What ``/results`` takes as query parameters."""

    metric: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "reward"
    since: datetime | None = None
    until: datetime | None = None
    segment: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$")] | None = None


@needs("read")
async def results(request: Request) -> Response:
    key = path_key(request)
    placement = await _placement(request, key)
    try:
        ask = msgspec.convert(dict(request.query_params), ResultsQuery, strict=False)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=ResultsQuery))
    since, until = check_window(ask.since, ask.until)
    client = request.state.redis_sync
    units = None
    if ask.segment is not None:
        if not await run_in_threadpool(client.hexists, "{seg}:defs", ask.segment):
            return error(404, "not_found", f"$.segment: no segment {ask.segment!r}")
        units = await run_in_threadpool(_segment_units, client, ask.segment) or ["-"]
    try:
        found = await results_of(request, key, placement, ask.metric, since, until, units)
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json(found)


def _segment_units(client: redis.Redis, segment: str) -> list[str]:
    """The anonymous and user ids of the segment's members (the units results count)."""
    members = [m.decode() for m in client.smembers(member_key(segment))]
    pipe = client.pipeline(transaction=False)
    for pid in members:
        pipe.smembers(profile_keys(pid)[4])
    units = set()
    for identities in pipe.execute():
        for identity in identities:
            kind, _, value = identity.decode().partition(":")
            if kind in ("anonymous_id", "user_id"):
                units.add(value)
    return sorted(units)


routes = [
    Route("/v1/placements", list_all, methods=["GET"]),
    Route("/v1/placements/{key}", put, methods=["PUT"]),
    Route("/v1/placements/{key}", get_one, methods=["GET"]),
    Route("/v1/placements/{key}", delete, methods=["DELETE"]),
    Route("/v1/placements/{key}/evaluate", evaluate, methods=["GET", "POST"]),
    Route("/v1/placements/{key}/results", results, methods=["GET"]),
]
