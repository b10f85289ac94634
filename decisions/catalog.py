"""This process's copy of the placements and their learned policies, for the decide path.

``/v1/decide`` never waits on Redis for a definition or a policy: it reads this catalog, which a
background task refreshes every ``REFRESH_SECONDS`` (0.5 s). Each refresh is one round trip
when nothing changed (the definitions' version and the learned states' revisions); definitions
are read again only when their version moved, a learned state only when its revision did. So a
placement edit, or what the reward worker learned, reaches every API process within a second;
the process that took the edit (``PUT``/``DELETE /v1/placements/{key}``) refreshes before it
answers, so its own next decide already serves it.

When Redis is unreachable the catalog keeps what it had.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis
import redis.asyncio
from jinja2 import Template

from bandits.policy import Policy
from collector.versioned import Versioned
from decisions.placements import (
    DEFS,
    LEARNED,
    PLACEMENT,
    REVS,
    VERSION,
    Placement,
    compile_template,
    policy_for,
    render,
    repeatable,
    state_key,
)

__all__ = ["REFRESH_SECONDS", "Catalog", "Slot"]

log = logging.getLogger("kairos.decide")

REFRESH_SECONDS = 0.5
_RENDERS = 1024  # renders kept per placement (most visitors share theirs: no traits at all)
_key = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Slot:
    """One placement as this process serves it."""

    key: str
    placement: Placement
    policy: Policy
    templates: list[Template | None]
    learned_rev: int = 0
    default: int = 0
    arms: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)  # a recommendation placement's, per arm
    repeatable: list[bool] = field(default_factory=list)  # per arm: its renders may be reused
    rendered: dict[tuple[int, bytes], Any] = field(default_factory=dict)  # (arm, traits) -> content

    @classmethod
    def of(cls, key: str, placement: Placement) -> Slot:
        return cls(
            key=key,
            placement=placement,
            policy=policy_for(key, placement, None),
            templates=[compile_template(v) for v in placement.variants],
            default=placement.default_index(),
            arms=placement.arms(),
            strategies=[placement.strategy(v) for v in placement.variants],
            repeatable=[repeatable(v) for v in placement.variants],
        )

    def content(
        self, arm: int, traits: dict[str, Any], items: list[dict[str, Any]] | None = None
    ) -> Any:
        """The arm's content for a visitor with ``traits``. A template's render is a sixth of
        a decision's cost and the same for the same traits: it is kept (a copy goes out)."""
        template = self.templates[arm]
        if template is None or items is not None or not self.repeatable[arm]:
            return render(self.placement.variants[arm], template, traits, items)
        key = (arm, _key(traits))
        found = self.rendered.get(key)
        if found is None:
            if len(self.rendered) >= _RENDERS:
                self.rendered.clear()
            found = self.rendered[key] = render(self.placement.variants[arm], template, traits)
        return dict(found) if isinstance(found, dict) else found


class Catalog:
    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.loaded = False  # True once a refresh has read the definitions
        self._defs: Versioned[None] = Versioned(VERSION, None)  # when ``slots`` were rebuilt
        self._broken: set[str] = set()  # placements skipped (logged once each)
        # One refresh at a time: the background one and an admin write's may overlap, and the
        # one that read the definitions first must not install them after the other.
        self._refreshing = asyncio.Lock()

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        """Bring the catalog up to date (raises redis errors; the caller retries)."""
        async with self._refreshing:
            await self._refresh(client)

    async def _refresh(self, client: redis.asyncio.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.get(VERSION)
        pipe.hgetall(REVS)
        version, revs = await pipe.execute()
        if self._defs.stale(version):
            defs = await client.hgetall(DEFS)
            self._defs.update(version, self._rebuild({k.decode(): v for k, v in defs.items()}))
            self.loaded = True
        stale = [
            slot
            for slot in self.slots.values()
            if int(revs.get(slot.key.encode(), 0)) != slot.learned_rev
        ]
        if stale:
            pipe = client.pipeline(transaction=False)
            for slot in stale:
                pipe.get(state_key(slot.key))
            for slot, raw in zip(stale, await pipe.execute()):
                self._learn(slot, raw)

    def _rebuild(self, defs: dict[str, bytes]) -> None:
        slots = {}
        for key, raw in defs.items():
            try:
                placement = PLACEMENT.decode(raw)
                current = self.slots.get(key)
                if current is not None and current.placement.revision == placement.revision:
                    slots[key] = current  # unchanged: keep its policy and what it learned
                else:
                    slots[key] = Slot.of(key, placement)
            except (msgspec.MsgspecError, ValueError, KeyError) as exc:
                # One placement stored before a check refused it must not stop the others
                # from refreshing: it is skipped (its slots answer their defaults).
                if key not in self._broken:
                    log.error("placement skipped", extra={"placement": key, "error": str(exc)})
                self._broken.add(key)
                continue
            self._broken.discard(key)
        self.slots = slots

    def _learn(self, slot: Slot, raw: bytes | None) -> None:
        if raw is None:
            slot.policy = policy_for(slot.key, slot.placement, None)
            slot.learned_rev = 0
            return
        learned = LEARNED.decode(raw)
        try:
            slot.policy = policy_for(slot.key, slot.placement, learned)
        except (ValueError, KeyError) as exc:  # a state that no longer fits: serve the prior
            log.warning("learned state ignored", extra={"placement": slot.key, "error": str(exc)})
            slot.policy = policy_for(slot.key, slot.placement, None)
        slot.learned_rev = learned.rev
