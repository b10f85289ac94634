"""The choice: each requested placement's variant for one visitor (what ``POST /v1/decide``
and the recommendations API answer).

A request (``Ask``)::

    {"anonymousId": "a1", "userId": "u1", "userHash": "9f…", "placements": ["home_hero"],
     "context": {"page": {"url": "…", "referrer": "…"}, "userAgent": "…", "campaign": {…}}}

Answer: ``{"decisions": {"home_hero": {"decisionId", "variant", "content", "propensity"}},
"identity": "verified"}``. A browser's ``userId`` counts only with its ``userHash``
(``decisions.identity``); ``identity`` says what became of it: ``verified`` (a valid userHash,
or the secret key), ``unverified`` (none, or a wrong one: decided for the anonymous visitor
alone, without contact traits), ``unchecked`` (``[identity] verification = "off"``); absent
when the request names no ``userId``.

A decision that did not come from the policy says why in ``fallback``:

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
reward worker learns from it. A decision the policy made gets a signed id, which carries what
its reward needs (``decisions.records``): the reward worker keeps nothing per decision. The
choice itself uses this process's catalog (``decisions.catalog``): no Redis read for
definitions or policy state on this path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import redis

from bandits.abtest import ABTest
from collector.coalesce import Coalescer
from collector.consent import SuppressionCache, identity_hash
from collector.errors import InvalidInput, with_path
from collector.partitions import Layout
from collector.spool import DecisionLog
from collector.wire import BLOCKED, EMPTY, Id
from decisions.catalog import Catalog, Slot
from decisions.features import build
from decisions.identity import Verifier, without_contact
from decisions.placements import KEY
from decisions.records import SIGNING_KEY, DecisionIds, Logged, new_decision_id
from decisions.visitors import Visitor, Visitors
from profiles.products import Item
from profiles.recommend import arecommend, person_of, plan
from profiles.segments import matches
from profiles.store import Snapshot
from profiles.views import view_of

__all__ = ["Answer", "Ask", "Decider", "Decision", "UnknownPlacement", "read_ask"]

log = logging.getLogger("kairos.decide")

_BREAK_SECONDS = 1.0
_PUBLISH_SECONDS = 60.0  # how often the signing key is written again (a Redis that lost it)
_EMPTY_SNAPSHOT = Snapshot(
    id="", fields={}, viewed=[], cart={}, daily={}, identities=[], segments=[], merged_from=[]
)
_context = msgspec.json.Decoder(dict[str, Any]).decode
_OPEN_BRACE = ord("{")
_INTERNAL = ("available", "stock", "source")  # item fields a visitor has no use for


class Ask(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    placements: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=f"^{KEY.pattern}$")]],
        msgspec.Meta(min_length=1, max_length=20),
    ]
    anonymous_id: Id | None = None
    user_id: Id | None = None
    # hex HMAC-SHA256 of userId under the identity secret; a wrong one counts as none (no 4xx:
    # a page must keep working), so only its length is bounded here.
    user_hash: Annotated[str, msgspec.Meta(max_length=256, description=(
        "lowercase hex HMAC-SHA256 of userId under the identity secret, made by the site's "
        "server; without a valid one a browser's userId is not used (see Answer.identity)"
    ))] | None = None  # fmt: skip
    context: msgspec.Raw = msgspec.field(default_factory=lambda: EMPTY)  # (see wire.EMPTY)
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


def read_ask(body: bytes) -> Ask:
    """The request body as an ``Ask``; ``InvalidInput`` naming the field if it is not one."""
    try:
        ask = ASK.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput("invalid_request", with_path(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput("invalid_json", f"$: {exc}") from None
    if ask.context is not EMPTY and memoryview(ask.context)[0] != _OPEN_BRACE:
        raise InvalidInput("invalid_request", "$.context: must be a JSON object")
    return ask


class UnknownPlacement(Exception):
    pass


class Decision(msgspec.Struct, omit_defaults=True, rename="camel", kw_only=True):
    decision_id: str
    variant: str | None
    content: Any
    propensity: float
    fallback: str | None = None
    strategy: str | None = None  # a recommendation placement's: how its items were chosen
    items: list[dict[str, Any]] | None = None  # a recommendation's items, best first


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
        verifier: Verifier | None = None,
        layout: Layout | None = None,
        *,
        ids: DecisionIds,
    ):
        """``calls``: this path's own pipeline to Redis, whose timeout bounds each round trip;
        ``suppression``: the erased people, who get defaults and leave no trace; ``verifier``:
        the site's identity check for browsers' ``userId`` (none: nothing verifies); ``ids``:
        what signs decision ids (from the engine's secret key: ``DecisionIds.of_secret``)."""
        self.catalog = catalog
        self.ids = ids
        self._publish_at = 0.0  # when to write the signing key to Redis next
        self.verifier = verifier or Verifier("")
        self.suppression = suppression or SuppressionCache()
        self.calls = calls
        self.visitors = Visitors(calls)
        self.log = DecisionLog(calls, layout)  # the spool's partitions (default: one)
        self.rng = np.random.default_rng(seed)
        self._closed_until = 0.0

    async def decide(
        self, ask: Ask, user_agent: str | None, trusted: bool = False
    ) -> tuple[dict[str, Decision], str | None]:
        """The decisions for a ``POST /v1/decide`` and what became of its ``userId`` (see the
        module's docstring); ``trusted``: the request carries the secret key (a server)."""
        identities = ask.identities()  # ValueError: the caller answers 400
        if trusted:
            verified, identity = True, "verified" if ask.user_id is not None else None
        elif not self.verifier.required:
            verified, identity = True, "unchecked" if ask.user_id is not None else None
        elif ask.user_id is None:
            verified, identity = False, None
        elif self.verifier.verified(identities[0][1], ask.user_hash):
            verified, identity = True, "verified"
        else:  # the userId is only a claim: the device alone
            verified, identity = False, "unverified"
            identities = identities[1:]
        decisions = await self.decide_for(
            identities, ask.placements, ask.context, user_agent, verified=verified
        )
        return decisions, identity

    async def decide_for(
        self,
        identities: list[tuple[str, str]],
        keys: list[str],
        context: msgspec.Raw = EMPTY,
        user_agent: str | None = None,
        n: int | None = None,
        verified: bool = True,
    ) -> dict[str, Decision]:
        """Decide placements ``keys`` for the person known by ``identities`` (``user_id``,
        ``anonymous_id``, ``email``… or ``profile``: a profile id), strongest first (none: an
        unknown visitor); ``n``: how many items a recommendation placement returns, if not its
        own number. ``verified=False``: a browser that has not proven who it is: only a profile
        that is still anonymous is used, and contact traits never reach a template."""
        if not self.catalog.loaded:
            return {key: _unknown("catalog_unavailable") for key in keys}
        slots = [self.catalog.slots[k] for k in keys if k in self.catalog.slots]
        if not slots:
            raise UnknownPlacement(f"$.placements: no placement {', '.join(map(repr, keys))}")
        hashes = self.suppression.hashes
        if hashes and any(identity_hash(kind, value) in hashes for kind, value in identities):
            return {slot.key: _default(slot, "suppressed") for slot in slots}
        if time.monotonic() < self._closed_until:
            return {slot.key: _default(slot, "redis_unavailable") for slot in slots}
        try:
            return await self._decide(identities, slots, context, user_agent, n, verified)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "redis_unavailable"
            if time.monotonic() >= self._closed_until:
                log.warning("decide answers defaults", extra={"reason": reason, "error": str(exc)})
            self._closed_until = time.monotonic() + _BREAK_SECONDS
            return {slot.key: _default(slot, reason) for slot in slots}

    async def _decide(
        self,
        identities: list[tuple[str, str]],
        slots: list[Slot],
        raw_context: msgspec.Raw,
        user_agent: str | None,
        n: int | None,
        verified: bool,
    ) -> dict[str, Decision]:
        recommends = any(s.placement.recommend is not None for s in slots)
        visitor = Visitor()
        if identities:
            visitor = await self.visitors.read(
                identities,
                history=recommends or any(s.placement.eligibility is not None for s in slots),
                assignments=[s.key for s in slots if isinstance(s.policy, ABTest)],
                ids=identities[0][0] not in ("user_id", "anonymous_id"),
                anonymous=not verified,
            )
        context: dict[str, Any] | None = None
        if recommends or any(s.placement.policy.features for s in slots):
            context = _context(raw_context)
            if user_agent and "userAgent" not in context:
                context["userAgent"] = user_agent
        now = datetime.now(UTC)
        # A/B tests hash the weakest identity (the anonymous id); an unknown visitor, a draw.
        unit = identities[-1][1] if identities else new_decision_id()
        chosen = [(slot, *self._choose(slot, unit, visitor, context, now)) for slot in slots]
        items = (
            await self._items(chosen, visitor, now, n, (context or {}).get("item"))
            if recommends
            else [None] * len(chosen)
        )
        traits = visitor.traits() if any(s.templates[arm] for s, arm, *_ in chosen) else {}
        if traits and not verified:
            traits = without_contact(traits)
        user_id, anonymous_id = visitor.logged_ids(identities)
        decisions, lines = {}, []
        ms = int(now.timestamp() * 1000)
        for (slot, arm, propensity, features, fallback), found in zip(chosen, items):
            listed = None if found is None else [_listed(item) for item in found]
            if fallback:  # earns nothing: a plain id, which claims nothing a click could cash in
                decision_id = new_decision_id()
            else:
                decision_id = self.ids.new(slot.key, arm, slot.arms[arm], propensity, ms)
            decision = Decision(
                decision_id=decision_id,
                variant=slot.arms[arm],
                content=slot.content(arm, traits, listed),
                propensity=propensity,
                fallback=fallback,
                strategy=None if found is None else slot.strategies[arm],
                items=listed,
            )
            decisions[slot.key] = decision
            logged = Logged(
                decision_id=decision.decision_id,
                timestamp=now,
                placement=slot.key,
                variant=decision.variant or "",
                arm=arm,
                policy=slot.placement.policy.kind,
                policy_revision=slot.placement.revision,
                propensity=propensity,
                profile_id=visitor.profile_id,
                anonymous_id=anonymous_id,
                user_id=user_id,
                features=features,
                context=raw_context,
                fallback=fallback or "",
                items=[] if found is None else [item.id or "" for item in found],
            )
            lines.append(_line(logged))
        self._publish()
        await self.log.append(lines, anonymous_id or user_id)  # the person's partition
        return decisions

    def _publish(self) -> None:
        """Write the signing key where the reward worker reads it (``{dsig}``; it is not given
        the secret key), with this tick's decision log rather than a round trip of its own:
        with the first decision, then once a minute, so a Redis that lost it has it again."""
        if time.monotonic() < self._publish_at:
            return
        self._publish_at = time.monotonic() + _PUBLISH_SECONDS
        sent = self.calls.command("SET", SIGNING_KEY, self.ids.key)
        sent.add_done_callback(self._published)

    def _published(self, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._publish_at = 0.0  # again with the next decision

    async def _items(
        self,
        chosen: list[tuple[Slot, int, float, list[float], str | None]],
        visitor: Visitor,
        now: datetime,
        n: int | None,
        in_view: Any = None,
    ) -> list[list[Item] | None]:
        """Each recommendation placement's items (None for the others), read concurrently;
        ``in_view``: the product the page shows (``context.item``), the newest view."""
        who = None
        plans: dict[int, Any] = {}
        for i, (slot, arm, *_) in enumerate(chosen):
            filters = slot.placement.recommend
            if filters is None:
                continue
            if who is None:
                snapshot = visitor.snapshot
                viewed = snapshot.viewed if snapshot is not None else []
                if isinstance(in_view, str) and in_view:  # its view may still be on its way
                    viewed = [in_view, *(v for v in viewed if v != in_view)]
                cart = list(snapshot.cart) if snapshot is not None else []
                who = person_of(visitor.fields, viewed, cart)
            ms = int(now.timestamp() * 1000)
            plans[i] = arecommend(self.calls.command, plan(slot.strategies[arm], who, filters,
                                                           ms, n))  # fmt: skip
        found = dict(zip(plans, await asyncio.gather(*plans.values()))) if plans else {}
        return [found.get(i) for i in range(len(chosen))]

    def _choose(
        self,
        slot: Slot,
        unit: str,
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
            arm, propensity = policy.assign(unit)
            sticky = visitor.assignments.get(slot.key)
            if sticky is not None and sticky in slot.arms and slot.arms.index(sticky) != arm:
                arm = slot.arms.index(sticky)  # assigned before an edit: keep it
                propensity = float(policy.probabilities()[arm])
            return arm, propensity, features, None
        arm, propensity = policy.choose(x if policy.contextual else None, self.rng)
        return arm, propensity, features, None


def _listed(item: Item) -> dict[str, Any]:
    """An item as a decision shows it (what a page or an email needs, nothing internal)."""
    fields = msgspec.structs.asdict(item)
    return {k: v for k, v in fields.items() if v is not None and k not in _INTERNAL}


def _default(slot: Slot, reason: str) -> Decision:
    arm = slot.default
    return Decision(
        decision_id=new_decision_id(),
        variant=slot.arms[arm],
        content=slot.content(arm, {}),
        propensity=1.0,
        fallback=reason,
    )


def _unknown(reason: str) -> Decision:
    return Decision(
        decision_id=new_decision_id(), variant=None, content=None, propensity=1.0, fallback=reason
    )


Identity = Annotated[
    Literal["verified", "unverified", "unchecked"],
    msgspec.Meta(description=(
        "What became of the request's userId (absent when it names none): verified (a valid "
        "userHash, or the secret key), unverified (no userHash, or a wrong one: decided for "
        "the anonymousId's anonymous visitor alone, without contact traits), unchecked "
        "([identity] verification = \"off\": taken as given)"
    )),
]  # fmt: skip


class Answer(msgspec.Struct, omit_defaults=True):
    decisions: dict[str, Decision]
    errors: dict[str, str] | None = None
    identity: Identity | None = None
