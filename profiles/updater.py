"""The profile updater: a consumer group on the spool that keeps every profile current.

For each batch of spool entries it resolves identities (one pipelined lookup for the batch),
performs merges, then queues one apply script per message in one pipeline. Applying is
idempotent per profile (the spool position is recorded with the update), so a batch replayed
after a crash changes nothing twice. Afterwards it records, per entry, the profile of each
message (the sink stamps them on the events it stores) and re-evaluates the segments of the
profiles the batch touched.

One updater per spool: the position check relies on messages arriving in spool order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from collector import wire
from collector.consent import SUPPRESSION, identity_hash
from collector.identifiers import identities as identities_of
from collector.pipeline import Pipeline
from collector.spool import PIDS, SUPPRESSED, Entry, SpoolReader
from collector.worker import SpoolWorker
from profiles.computed import Update, compute
from profiles.resolve import Resolver
from profiles.scoring import LeadScoring
from profiles.store import ProfileStore, entry_position, identity_key, new_profile_id, profile_keys

__all__ = ["ProfileUpdater"]

log = logging.getLogger("kairos.profiles")

_SUPPRESSIBLE = ("user_id:", "anonymous_id:")
PIDS_TTL = 7 * 86_400  # the sink reads them within seconds; a week covers long outages


def _check(replies: list[object]) -> None:
    """Raise the first error reply (a replay will redo the batch: applying is idempotent)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class ProfileUpdater(SpoolWorker):
    name = "profile updater"

    def __init__(
        self,
        reader: SpoolReader,
        store: ProfileStore,
        scoring: LeadScoring | None = None,
        after_batch: Callable[[set[str], list[Entry]], object] | None = None,
        periodic: Callable[[], object] | None = None,
        max_entries: int = 500,
        interval: float = 0.2,
    ):
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.store = store
        self.scoring = scoring or LeadScoring()
        self.after_batch = after_batch  # with the profiles a batch changed, before its ack
        self.periodic = periodic  # between batches, at most once per poll interval

    def between(self) -> None:
        if self.periodic is not None:
            self.periodic()

    def process(self, entries: list[Entry]) -> dict[str, float]:
        touched = self.apply(entries)
        if self.after_batch is not None:
            self.after_batch(touched, entries)
        return {"profiles_applied": sum(e.count for e in entries)}

    def apply(self, entries: list[Entry]) -> set[str]:
        """Apply ``entries`` to profiles; returns the ids of the profiles changed."""
        batch: list[tuple[Entry, str, wire.Message, list[str]]] = []
        for entry in entries:
            prefix = entry_position(entry.id)
            for index, msg in enumerate(entry.messages()):
                ids = [f"{kind}:{value}" for kind, value in identities_of(msg)]
                if type(msg) is wire.Alias:
                    ids.append(f"anonymous_id:{msg.previous_id}")
                    ids.append(f"user_id:{msg.previous_id}")
                batch.append((entry, f"{prefix}{index:06d}", msg, ids))
        withheld = self._suppressed([ids for *_, ids in batch])
        links = self.store.lookup(sorted({i for *_, ids in batch for i in ids}))
        final = self.store.resolve_many(list(links.values()))
        links = {identity: final[pid] for identity, pid in links.items()}
        resolver = Resolver(links, self._owners(set(links.values())))
        pipe = Pipeline(self.store.client)
        pids: dict[str, list[str]] = {}
        touched: set[str] = set()
        # A profile's messages go to Redis in one apply, in spool order: far fewer scripts.
        groups: dict[str, list[tuple[str, Update, list[str]]]] = {}
        for (entry, at, msg, ids), hidden in zip(batch, withheld):
            if msg.anonymized or hidden:  # consent denied: no profile; erased: not even stored
                pids.setdefault(entry.id, []).append(SUPPRESSED if hidden else "")
                continue
            plan = resolver.plan(msg, ids, lambda at=at: new_profile_id(at))
            if plan.merges:  # the merged profiles must hold everything queued so far
                self._send(pipe, groups)
                _check(pipe.execute())
                for source in plan.merges:
                    self._merge(source, plan.profile)
                    touched.discard(source)
            for identity in plan.links:
                kind, _, value = identity.partition(":")
                pipe.command("SET", identity_key(kind, value), plan.profile)
            groups.setdefault(plan.profile, []).append((at, compute(msg, self.scoring), plan.links))
            pids.setdefault(entry.id, []).append(plan.profile)
            touched.add(plan.profile)
        self._send(pipe, groups)
        for entry_id, profile_ids in pids.items():
            pipe.command("SET", PIDS + entry_id, msgspec.json.encode(profile_ids), "EX", PIDS_TTL)
        _check(pipe.execute())
        return touched

    def _send(self, pipe: Pipeline, groups: dict[str, list[tuple[str, Update, list[str]]]]) -> None:
        for pid, items in groups.items():
            self.store.apply(pipe, pid, items)
        groups.clear()

    def _suppressed(self, identities: list[list[str]]) -> list[bool]:
        """Which messages belong to erased people (the authoritative check; intake's is cached)."""
        if not self.store.client.exists(SUPPRESSION):  # nobody erased yet: nothing to hash
            return [False] * len(identities)
        hashes = [
            [identity_hash(*i.split(":", 1)) for i in ids if i.startswith(_SUPPRESSIBLE)]
            for ids in identities
        ]
        flat = [h for per in hashes for h in per]
        if not flat:
            return [False] * len(identities)
        hits = dict(zip(flat, self.store.client.smismember(SUPPRESSION, flat)))
        return [any(hits[h] for h in per) for per in hashes]

    def _owners(self, pids: set[str]) -> dict[str, str | None]:
        pipe = self.store.client.pipeline(transaction=False)
        ordered = sorted(pids)
        for pid in ordered:
            pipe.hget(profile_keys(pid)[0], "user_id")
        return {pid: (v.decode() if v else None) for pid, v in zip(ordered, pipe.execute())}

    def _merge(self, source: str, target: str) -> None:
        snapshot = self.store.read(source)
        self.store.merge(snapshot, target)
        # Forward before re-pointing the identities: a crash in between leaves identities that
        # resolve through the pointer. The other way round, the replay finds every identity on
        # the target already, plans no merge, and the source stays whole beside it (an orphan
        # still in its segments).
        self.store.forward(source, target)
        pipe = self.store.client.pipeline(transaction=False)
        for identity in snapshot.identities:
            kind, _, value = identity.partition(":")
            pipe.set(identity_key(kind, value), target)
        pipe.execute()
        log.info("profiles merged", extra={"from": source, "into": target})
