"""Erasure: forget a person everywhere, and keep them forgotten.

``erase`` puts the person's identities on the suppression list first (so nothing the spool still
holds, nor anything sent later, brings them back), then deletes their Redis profile, merged
profiles, identity links and segment memberships, and last queues a spool command that deletes
their rows in ClickHouse — in order, after every event of theirs accepted before it.

Each erasure has a request id (``er_…``): the API answers it, the spool command carries it (the
sink's log line names it when the rows are gone), and the audit log names the erasure by it,
never by the person.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis

from collector.consent import SUPPRESSION, SUPPRESSION_VERSION, identity_hash
from collector.spool import append_command
from profiles.membership import member_key
from profiles.store import ProfileStore, identity_key, profile_keys

__all__ = ["Erasure", "erase"]


@dataclass(frozen=True)
class Erasure:
    profile: str
    profiles: list[str]  # the profile and those merged into it
    identities: list[str]
    commands: list[str]  # the spool entries (one per partition) that delete the events
    request: str = ""  # the erasure's id (er_…): what the audit log and the sink's log name

    def as_json(self) -> dict[str, Any]:
        return {
            "erased": self.profile,
            "profiles": self.profiles,
            "identities": len(self.identities),
            "events": "deleting",
            "request": self.request,
        }


def erase(store: ProfileStore, pid: str) -> Erasure:
    client: redis.Redis = store.client
    request = f"er_{secrets.token_hex(8)}"
    snapshot = store.read(pid)
    profiles = [pid, *snapshot.merged_from]
    pairs = [identity.partition(":")[::2] for identity in snapshot.identities]
    hashes = [identity_hash(kind, value) for kind, value in pairs]
    if hashes:
        client.sadd(SUPPRESSION, *hashes)
    client.incr(SUPPRESSION_VERSION)
    pipe = client.pipeline(transaction=False)
    for segment in snapshot.segments:
        pipe.srem(member_key(segment), pid)
    for profile in profiles:
        for key in profile_keys(profile):  # one key per DEL: a cluster pipeline takes no other
            pipe.delete(key)
    for kind, value in pairs:
        pipe.delete(identity_key(kind, value))
    pipe.execute()
    commands = append_command(
        client,
        {
            "kind": "erase",
            "request": request,
            "profiles": profiles,
            "anonymous_ids": [v for k, v in pairs if k == "anonymous_id"],
            "user_ids": [v for k, v in pairs if k == "user_id"],
        },
    )
    return Erasure(pid, profiles, snapshot.identities, commands, request)
