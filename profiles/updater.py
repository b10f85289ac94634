"""The profile updater: a consumer group on the spool that keeps every profile current.

For each batch of spool entries (of one partition) it resolves identities (one pipelined
lookup for the batch), claims the identities new to the engine, performs merges, then queues
one apply script per profile in one pipeline. Applying is idempotent per profile (the position
in the partition is recorded with the update), so a batch replayed after a crash changes
nothing twice. Afterwards it records, per entry, the profile of each message (the sink stamps
them on the events it stores) and re-evaluates the segments of the profiles the batch touched.

Any number of updaters share the partitions (one holds a partition at a time: the position
check relies on a partition's messages arriving in order). A person's messages can come
through several partitions (a server's events by ``userId``, a second device), so two updaters
may meet over one person:

- a strong identity (``userId``, email, …) new to the engine is claimed with ``SET NX`` before
  anything is applied; an updater that loses the claim reads the winner's profile and plans
  again, so two concurrent first logins of one person end in one profile (the loser's
  anonymous profile merges into it);
- a merge seals its source before moving its data (``ProfileStore.seal``), and an apply that
  meets a sealed profile (-1) goes again to where it points, so an apply from another
  partition during a merge is not lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from collector import wire
from collector.consent import SUPPRESSION, identity_hash
from collector.identifiers import identities as identities_of
from collector.pipeline import Pipeline
from collector.reader import SUPPRESSED, Entry, SpoolReader
from collector.worker import SpoolWorker
from profiles.computed import Update, compute
from profiles.resolve import Resolver
from profiles.scoring import LeadScoring
from profiles.store import ProfileStore, entry_position, identity_key, new_profile_id, profile_keys

Item = tuple[str, Update, list[str]]  # position, update, identities to add

__all__ = ["ProfileUpdater"]

log = logging.getLogger("kairos.profiles")

_SUPPRESSIBLE = ("user_id:", "anonymous_id:")
_CLAIM_ROUNDS = 8  # each lost claim means another updater won it: a round more at most
PIDS_TTL = 7 * 86_400  # the sink reads them within seconds; a week covers long outages


def _check(replies: list[object]) -> None:
    """Raise the first error reply."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        self._partition = 0  # of the batch in hand

    def between(self) -> None:
        if self.periodic is not None:
            self.periodic()

    def process(self, entries: list[Entry]) -> dict[str, float]:
        touched = self.apply(entries)
        if self.after_batch is not None:
            self.after_batch(touched, entries)
        return {"profiles_applied": sum(e.count for e in entries)}

    def apply(self, entries: list[Entry]) -> set[str]:
        """Apply ``entries`` (of one partition) to profiles; the ids of the profiles changed."""
        partition = entries[0].partition
        self._partition = partition.index
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
        live = [(at, msg, ids) for (_, at, msg, ids), hidden in zip(batch, withheld)
                if not (msg.anonymized or hidden)]  # fmt: skip
        links = self._claimed(live, self._links({i for *_, ids in live for i in ids}),
                              partition.index)  # fmt: skip
        resolver = Resolver(links, self._owners(set(links.values())))
        pipe = Pipeline(self.store.client)
        pids: dict[str, list[str]] = {}
        touched: set[str] = set()
        # A profile's messages go to Redis in one apply, in spool order: far fewer scripts.
        groups: dict[str, list[Item]] = {}
        for (entry, at, msg, ids), hidden in zip(batch, withheld):
            if msg.anonymized or hidden:  # consent denied: no profile; erased: not even stored
                pids.setdefault(entry.id, []).append(SUPPRESSED if hidden else "")
                continue
            new_id = lambda at=at: new_profile_id(at, partition.index)  # noqa: E731
            plan = resolver.plan(msg, ids, new_id)
            if plan.merges:  # the merged profiles must hold everything queued so far
                self._execute(pipe, self._send(pipe, groups, partition.index), partition.index)
                for source in plan.merges:
                    self._merge(source, plan.profile)
                    touched.discard(source)
            for identity in plan.links:
                kind, _, value = identity.partition(":")
                pipe.command("SET", identity_key(kind, value), plan.profile)
            groups.setdefault(plan.profile, []).append((at, compute(msg, self.scoring), plan.links))
            pids.setdefault(entry.id, []).append(plan.profile)
            touched.add(plan.profile)
        sent = self._send(pipe, groups, partition.index)
        for entry_id, profile_ids in pids.items():
            pipe.command("SET", partition.pids + entry_id, msgspec.json.encode(profile_ids),
                         "EX", PIDS_TTL)  # fmt: skip
        moved = self._execute(pipe, sent, partition.index)
        return {moved.get(pid, pid) for pid in touched}

    def _links(self, identities: set[str]) -> dict[str, str]:
        """Each known identity's profile, through merge pointers (finishing a merge a crash
        left half done)."""
        links = self.store.lookup(sorted(identities))
        unfinished: list[tuple[str, str]] = []
        final = self.store.resolve_many(list(links.values()), unfinished=unfinished)
        if unfinished:
            for source, target in unfinished:
                log.info("finishing a merge left half done", extra={"from": source})
                self._merge(source, target)
            final = self.store.resolve_many(list(links.values()))
        return {identity: final[pid] for identity, pid in links.items()}

    def _claimed(
        self, live: list[tuple[str, wire.Message, list[str]]], links: dict[str, str],
        partition: int,
    ) -> dict[str, str]:  # fmt: skip
        """``links`` plus the claims other updaters won: the strong identities new to the
        engine are claimed (``SET NX``) for the profiles this batch plans for them; a claim
        another updater won meanwhile joins the links and the batch is planned again with it,
        until every claim of the plan is ours. Claims won are left out: the plan then links
        them as new (the same profile: planning is deterministic), adding them to the
        profile's identities."""
        taken: dict[str, str] = {}
        for _ in range(_CLAIM_ROUNDS):
            known = {**links, **taken}
            new = {i for *_, ids in live for i in ids if i not in known and self._contended(i)}
            if not new:
                return known
            resolver = Resolver(dict(known), self._owners(set(known.values())))
            wanted: dict[str, str] = {}
            for at, msg, ids in live:
                plan = resolver.plan(msg, ids, lambda at=at: new_profile_id(at, partition))
                for identity in plan.links:
                    if identity in new:
                        wanted.setdefault(identity, plan.profile)
            pipe = self.store.client.pipeline(transaction=False)
            for identity in wanted:
                key = identity_key(*identity.split(":", 1))
                pipe.set(key, wanted[identity], nx=True)
                pipe.get(key)
            owners = pipe.execute()[1::2]
            lost = {i: _text(o) for i, o in zip(wanted, owners) if _text(o) != wanted[i]}
            if not lost:
                return known
            log.info("identity claimed by another updater meanwhile; planning again",
                     extra={"identities": len(lost)})  # fmt: skip
            final = self.store.resolve_many(list(lost.values()))
            taken.update({i: final[o] for i, o in lost.items()})
        raise RuntimeError(f"identity claims still contended after {_CLAIM_ROUNDS} rounds")

    def _contended(self, identity: str) -> bool:
        """Whether another partition's updater may link ``identity`` too: any but an anonymous
        id of this partition (an anonymousId decides its messages' partition)."""
        kind, _, value = identity.partition(":")
        return kind != "anonymous_id" or self.reader.layout.of(value) != self._partition

    def _send(self, pipe: Pipeline, groups: dict[str, list[Item]],
              partition: int) -> list[tuple[int, str, list[Item]]]:  # fmt: skip
        """Queue the groups' applies; where each reply will be, with what it applied."""
        sent = []
        for pid, items in groups.items():
            sent.append((len(pipe), pid, items))
            self.store.apply(pipe, pid, items, partition)
        groups.clear()
        return sent

    def _execute(self, pipe: Pipeline, sent: list[tuple[int, str, list[Item]]],
                 partition: int) -> dict[str, str]:  # fmt: skip
        """Run ``pipe``, raising the first error (a replay redoes the batch: applying is
        idempotent); applies that met a profile merged away meanwhile go again to where it
        points. Returns those moves (profile -> where its messages went)."""
        replies = pipe.execute()
        _check(replies)
        moved: dict[str, str] = {}
        again = [(pid, items) for at, pid, items in sent if replies[at] == -1]
        while again:
            final = self.store.resolve_many([pid for pid, _ in again])
            retry = Pipeline(self.store.client)
            sent = []
            for pid, items in again:
                moved[pid] = final[pid]
                sent.append((len(retry), final[pid], items))
                self.store.apply(retry, final[pid], items, partition)
            replies = retry.execute()
            _check(replies)
            again = [(pid, items) for at, pid, items in sent if replies[at] == -1]
        return {start: self.store.resolve(end) for start, end in moved.items()}

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
        # Seal, then copy: an apply to the source from another partition now goes to the
        # target (-1), none lands in between the snapshot and the forward.
        self.store.seal(source, target)
        snapshot = self.store.read(source)
        snapshot.fields.pop("merged_into", None)
        while self.store.merge(snapshot, target) == -1:  # the target was merged away too
            target = self.store.resolve(target)
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
