"""What a broadcast did and would do: its messages' outcomes per variant (from ClickHouse), and
the dry run (who would receive it now, and why the others would not).

Outcomes are counted from the messaging events, each tied to its message's key (a broadcast's
keys all start ``broadcast:<key>|``) and through it to the recipient's "Broadcast Targeted"
group: targeted, sent, skipped (by reason), bounced, opened and clicked — the last two as
people, not pixels or clicks, so a reader who opens twice counts once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from collector.store import EventStore
from journeys import subscriptions
from journeys.broadcasts import PREFIX, Broadcast, held_out
from journeys.lift import CONTROL, Exposure, Group, compare, group_stats
from journeys.mailer import SendPolicy, capped
from journeys.spec import parse_duration
from profiles.membership import member_key
from profiles.store import ProfileStore

__all__ = ["broadcast_results", "dry_run", "outcomes"]

_OUTCOMES = """
SELECT t.grp, e.event, JSONExtractString(e.properties, 'reason') AS reason,
       uniqExact(JSONExtractString(e.properties, 'message')) AS messages
FROM events AS e
INNER JOIN (
    SELECT JSONExtractString(properties, 'message') AS message,
           any(JSONExtractString(properties, 'group')) AS grp
    FROM events
    WHERE type = 'track' AND event = 'Broadcast Targeted'
      AND JSONExtractString(properties, 'broadcast') = {key:String}
    GROUP BY message
) AS t ON JSONExtractString(e.properties, 'message') = t.message
WHERE e.type = 'track'
  AND e.event IN ('Broadcast Targeted', 'Email Sent', 'Message Skipped', 'Email Bounced',
                  'Email Opened', 'Email Clicked')
  AND startsWith(JSONExtractString(e.properties, 'message'), {prefix:String})
GROUP BY t.grp, e.event, reason
"""
_NAMES = {"Broadcast Targeted": "targeted", "Email Sent": "sent", "Email Bounced": "bounced",
          "Email Opened": "opened", "Email Clicked": "clicked"}  # fmt: skip


def outcomes(store: EventStore, key: str) -> dict[str, dict[str, Any]]:
    """Per group (a variant, ``treated`` or ``holdout``): targeted, sent, skipped by reason,
    bounced, opened, clicked, and the rates of the last two over what was sent."""
    params = {"key": key, "prefix": f"{PREFIX}{key}|"}
    rows = store.query_sync(_OUTCOMES, params, limited=False).rows
    found: dict[str, dict[str, Any]] = {}
    for group, event, reason, messages in rows:
        row = found.setdefault(group, {"targeted": 0, "sent": 0, "skipped": {}, "bounced": 0,
                                       "opened": 0, "clicked": 0})  # fmt: skip
        if event == "Message Skipped":
            row["skipped"][reason] = int(messages)
        else:
            row[_NAMES[event]] = int(messages)
    for row in found.values():
        row["open_rate"] = row["opened"] / row["sent"] if row["sent"] else None
        row["click_rate"] = row["clicked"] / row["sent"] if row["sent"] else None
    return found


def broadcast_results(store: EventStore, key: str, broadcast: Broadcast,
                      started: int | None) -> dict[str, Any]:  # fmt: skip
    """``GET /v1/broadcasts/{key}/results``: per group, what its messages became
    (``outcomes``) and, with a goal, its conversion and revenue against the holdout
    (``journeys.lift``: rates, lift with an always-valid interval and p-value)."""
    document: dict[str, Any] = {"key": key, "goal": broadcast.goal,
                                "goalWindow": broadcast.goal_window, "control": CONTROL,
                                "groups": outcomes(store, key), "lift": []}  # fmt: skip
    if broadcast.goal:
        until = datetime.now(UTC) + timedelta(seconds=1)
        since = (datetime.fromtimestamp(started / 1000, UTC) - timedelta(seconds=1)
                 if started else until - timedelta(days=90))  # fmt: skip
        exposure = Exposure("Broadcast Targeted", "broadcast", key)
        found = group_stats(store, exposure, broadcast.goal,
                            parse_duration(broadcast.goal_window), since, until)  # fmt: skip
        empty = Group(0, 0, 0.0, 0.0)
        document["lift"] = compare({CONTROL: empty, **found})
    return document


def dry_run(client: redis.Redis, key: str, broadcast: Broadcast, policy: SendPolicy, now: int,
            limit: int = 200_000, sample: int = 20) -> dict[str, Any]:  # fmt: skip
    """Who would receive the broadcast if it started now, sending nothing: the audience, how
    many the holdout keeps back, and for the others the first send-time check each would fail
    (consent, subscription, suppression, the frequency cap), with a sample of recipients."""
    profiles = ProfileStore(client)
    held = 0
    skipped: dict[str, int] = {}
    recipients: list[dict[str, Any]] = []
    batch: list[str] = []
    truncated = False

    def check(pids: list[str]) -> None:
        for snapshot in profiles.read_many(pids):
            address = snapshot.traits().get("email")
            address = address if isinstance(address, str) and "@" in address else None
            reason = subscriptions.check(client, snapshot.id, broadcast.group, "email", address)
            if reason is None and capped(client, policy, snapshot.id, now):
                reason = "frequency_cap"
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
            elif len(recipients) < sample:
                recipients.append({"id": snapshot.id, "email": address})

    members: set[str] = set()  # SSCAN may give a member twice
    for raw in client.sscan_iter(member_key(broadcast.segment), count=1000):
        if len(members) == limit:
            truncated = True
            break
        members.add(raw.decode())
    audience = len(members)
    for pid in sorted(members):
        if held_out(key, pid, broadcast.holdout):
            held += 1
            continue
        batch.append(pid)
        if len(batch) == 500:
            check(batch)
            batch = []
    if batch:
        check(batch)
    would = audience - held - sum(skipped.values())
    return {"audience": audience, "held_out": held, "would_send": would, "skipped": skipped,
            "sample": recipients, "truncated": truncated}  # fmt: skip
