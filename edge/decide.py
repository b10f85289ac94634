"""``POST /v1/decide``: choose each requested placement's variant for one visitor.

Request (write key, like the tracking API)::

    {"anonymousId": "a1", "userId": "u1", "placements": ["home_hero", "cart_offer"],
     "context": {"page": {"url": "…", "referrer": "…"}, "userAgent": "…", "campaign": {…}}}

Answer: ``{"decisions": {"home_hero": {"decisionId", "variant", "content", "propensity"}}}``;
a decision that did not come from the policy says why in ``fallback``:

- ``ineligible``: the visitor does not meet the placement's eligibility rule (default shown);
- ``redis_unavailable`` / ``timeout``: Redis failed, or a round trip to it took longer than
  ``decide_timeout`` (at most three round trips per request, usually two), so every placement
  shows its default (and nothing is logged); after a failure, requests skip Redis for a second
  rather than queue behind it;
- ``catalog_unavailable``: this process has not been able to read the placements yet;
- ``suppressed``: the visitor was erased (``DELETE /v1/profiles/…``): defaults, nothing logged.

A placement that does not exist is named in ``errors`` while the others are decided (a page
asking for a deleted slot keeps its other slots); a request naming none that exist is a 404.

Every decision is logged to the spool before the answer (the decisions of all requests in one
event-loop tick share one stream entry); the sink stores it in the ``decisions`` table, the
reward worker learns from it. The choice itself uses this process's catalog (``edge.catalog``):
no Redis read for definitions or policy state on this path.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import redis
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bandits.abtest import ABTest
from collector.coalesce import Coalescer
from collector.consent import SuppressionCache, identity_hash
from collector.errors import InvalidInput, Unauthorized, with_path
from collector.spool import DecisionLog
from collector.wire import BLOCKED, EMPTY, Id
from edge.auth import key_from_header, require_key
from edge.catalog import Catalog, Slot
from edge.decisions import Logged, new_decision_id
from edge.features import build
from edge.placements import KEY
from edge.responses import error
from edge.visitors import Visitor, Visitors
from profiles.segments import matches
from profiles.store import Snapshot
from profiles.views import view_of

__all__ = ["Decider", "routes"]

log = logging.getLogger("kairos.decide")

MAX_BODY = 64 * 1024
_BREAK_SECONDS = 1.0
_EMPTY_SNAPSHOT = Snapshot("", {}, [], {}, {}, [], [], [])
_context = msgspec.json.Decoder(dict[str, Any]).decode
_OPEN_BRACE = ord("{")
_JSON = b"application/json"


class Ask(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    placements: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=f"^{KEY.pattern}$")]],
        msgspec.Meta(min_length=1, max_length=20),
    ]
    anonymous_id: Id | None = None
    user_id: Id | None = None
    context: msgspec.Raw = EMPTY
    write_key: str | None = None

    def identities(self) -> list[tuple[str, str]]:
        """("user_id", …) then ("anonymous_id", …): the strongest first."""
        found = []
        for kind, value, name in (
            ("user_id", self.user_id, "userId"),
            ("anonymous_id", self.anonymous_id, "anonymousId"),
        ):
            if value is None:
                continue
            value = str(value)
            if len(value) <= 32 and value.strip().lower() in BLOCKED:
                raise ValueError(
                    f"`{name}` must be a real identifier, not the placeholder {value!r}"
                )
            found.append((kind, value))
        if not found:
            raise ValueError("one of `userId` or `anonymousId` is required")
        return found


ASK = msgspec.json.Decoder(Ask)


class UnknownPlacement(Exception):
    pass


class Decision(msgspec.Struct, omit_defaults=True, rename="camel"):
    decision_id: str
    variant: str | None
    content: Any
    propensity: float
    fallback: str | None = None


_encoder = msgspec.json.Encoder()


def _line(decision: Logged) -> bytes:
    return _encoder.encode(decision) + b"\n"


class Decider:
    """The decide path of one API process: catalog, visitor reads, choice, log."""

    def __init__(
        self,
        catalog: Catalog,
        calls: Coalescer,
        suppression: SuppressionCache | None = None,
        seed: int | None = None,
    ):
        """``calls``: this path's own pipeline to Redis, whose timeout bounds each round trip;
        ``suppression``: the erased people, who get defaults and leave no trace."""
        self.catalog = catalog
        self.suppression = suppression or SuppressionCache()
        self.calls = calls
        self.visitors = Visitors(calls)
        self.log = DecisionLog(calls)
        self.rng = np.random.default_rng(seed)
        self._closed_until = 0.0

    async def decide(self, ask: Ask, user_agent: str | None) -> dict[str, Decision]:
        identities = ask.identities()  # ValueError: the caller answers 400
        if not self.catalog.loaded:
            return {key: _unknown("catalog_unavailable") for key in ask.placements}
        slots = [self.catalog.slots[k] for k in ask.placements if k in self.catalog.slots]
        if not slots:
            raise UnknownPlacement(
                f"$.placements: no placement {', '.join(map(repr, ask.placements))}"
            )
        hashes = self.suppression.hashes
        if hashes and any(identity_hash(kind, value) in hashes for kind, value in identities):
            return {slot.key: _default(slot, "suppressed") for slot in slots}
        if time.monotonic() < self._closed_until:
            return {slot.key: _default(slot, "redis_unavailable") for slot in slots}
        try:
            return await self._decide(ask, identities, slots, user_agent)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "redis_unavailable"
            if time.monotonic() >= self._closed_until:
                log.warning("decide answers defaults", extra={"reason": reason, "error": str(exc)})
            self._closed_until = time.monotonic() + _BREAK_SECONDS
            return {slot.key: _default(slot, reason) for slot in slots}

    async def _decide(
        self,
        ask: Ask,
        identities: list[tuple[str, str]],
        slots: list[Slot],
        user_agent: str | None,
    ) -> dict[str, Decision]:
        visitor = await self.visitors.read(
            identities,
            history=any(s.placement.eligibility is not None for s in slots),
            assignments=any(isinstance(s.policy, ABTest) for s in slots),
        )
        context: dict[str, Any] | None = None
        if any(s.placement.policy.features for s in slots):
            context = _context(ask.context)
            if user_agent and "userAgent" not in context:
                context["userAgent"] = user_agent
        traits: dict[str, Any] | None = None
        now = datetime.now(UTC)
        decisions, lines = {}, []
        for slot in slots:
            arm, propensity, features, fallback = self._choose(slot, ask, visitor, context, now)
            if traits is None and slot.templates[arm] is not None:
                traits = visitor.traits()
            decision = Decision(
                new_decision_id(), slot.arms[arm], slot.content(arm, traits or {}), propensity,
                fallback,
            )  # fmt: skip
            decisions[slot.key] = decision
            lines.append(
                _line(
                    Logged(
                        decision.decision_id,
                        now,
                        slot.key,
                        decision.variant or "",
                        arm,
                        slot.placement.policy.kind,
                        slot.placement.revision,
                        propensity,
                        visitor.profile_id,
                        str(ask.anonymous_id or ""),
                        str(ask.user_id or ""),
                        features,
                        ask.context,
                        fallback or "",
                    )
                )
            )
        await self.log.append(lines)
        return decisions

    def _choose(
        self,
        slot: Slot,
        ask: Ask,
        visitor: Visitor,
        context: dict[str, Any] | None,
        now: datetime,
    ) -> tuple[int, float, list[float], str | None]:
        """(arm, propensity, features used, fallback reason) for one placement."""
        rule = slot.placement.eligibility
        if rule is not None:
            view = view_of(visitor.snapshot or _EMPTY_SNAPSHOT, int(now.timestamp() * 1000))
            if not matches(rule, view):
                return slot.default, 1.0, [], "ineligible"
        policy, names = slot.policy, slot.placement.policy.features
        # Features are logged whenever the placement lists them, so that a contextual candidate
        # can be evaluated on the log of a policy that does not use them.
        x = build(names, context, visitor.fields) if names and context is not None else None
        features = [] if x is None else x.tolist()
        if isinstance(policy, ABTest):
            unit = str(ask.anonymous_id if ask.anonymous_id is not None else ask.user_id)
            arm, propensity = policy.assign(unit)
            sticky = visitor.assignments.get(slot.key)
            if sticky is not None and sticky in slot.arms and slot.arms.index(sticky) != arm:
                arm = slot.arms.index(sticky)  # assigned before an edit: keep it
                propensity = float(policy.probabilities()[arm])
            return arm, propensity, features, None
        arm, propensity = policy.choose(x if policy.contextual else None, self.rng)
        return arm, propensity, features, None


def _default(slot: Slot, reason: str) -> Decision:
    arm = slot.default
    return Decision(new_decision_id(), slot.arms[arm], slot.content(arm, {}), 1.0, reason)


def _unknown(reason: str) -> Decision:
    return Decision(new_decision_id(), None, None, 1.0, reason)


class Answer(msgspec.Struct, omit_defaults=True):
    decisions: dict[str, Decision]
    errors: dict[str, str] | None = None


@functools.lru_cache(maxsize=256)
def _key(authorization: str | None) -> str | None:
    return key_from_header(authorization)  # the same few headers over and over: parse once


async def _read(receive: Receive, declared: bytes | None) -> bytes:
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise InvalidInput("message_too_large", f"the request is over {MAX_BODY // 1024} KB")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise InvalidInput("message_too_large", f"the request is over {MAX_BODY // 1024} KB")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _answer(
    scope: Scope, receive: Receive, state: dict[str, Any], headers: dict[bytes, bytes]
) -> Response | bytes:
    """The answer's JSON, or an error response."""
    try:
        authorization = headers.get(b"authorization")
        header_key = _key(authorization.decode("latin-1") if authorization else None)
        body = await _read(receive, headers.get(b"content-length"))
        try:
            ask = ASK.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidInput("invalid_request", with_path(str(exc))) from None
        except msgspec.DecodeError as exc:
            raise InvalidInput("invalid_json", f"$: {exc}") from None
        if ask.context is not EMPTY and memoryview(ask.context)[0] != _OPEN_BRACE:
            raise InvalidInput("invalid_request", "$.context: must be a JSON object")
        require_key(header_key or ask.write_key, state["settings"].write_key, "write key")
        agent = headers.get(b"user-agent")
        try:
            decisions = await state["decider"].decide(
                ask, agent.decode("latin-1") if agent else None
            )
        except ValueError as exc:
            raise InvalidInput("invalid_request", with_path(str(exc))) from None
        except UnknownPlacement as exc:
            return error(404, "unknown_placement", str(exc))
    except InvalidInput as exc:
        return error(400, exc.code, exc.message)
    except Unauthorized as exc:
        return error(
            401, exc.code, exc.message, headers={"WWW-Authenticate": 'Basic realm="kairos"'}
        )
    unknown = {k: f"no placement {k!r}" for k in ask.placements if k not in decisions}
    return _encoder.encode(Answer(decisions, unknown or None))


class DecideEndpoint:
    """``POST /v1/decide`` as a plain ASGI app: the hottest route skips building a Request and
    a Response per call (most of a bare Starlette endpoint's own cost)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await _answer(scope, receive, scope["state"], dict(scope["headers"]))
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        headers = [(b"content-type", _JSON), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


routes = [Route("/v1/decide", DecideEndpoint(), methods=["POST"])]
