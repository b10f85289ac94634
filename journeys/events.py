"""The journey events the worker appends to the spool ("Journey Entered", …), and the person's
identities they carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from collector import wire
from journeys.runs import Run
from profiles.store import Snapshot

__all__ = ["ended", "event", "ids_of", "message_ids"]


def event(
    name: str, run: Run, ids: dict[str, str], now: int, when: int | None = None, **more: Any
) -> wire.Message:
    """A journey event, stamped ``when`` (the causing event's time) if given, else ``now``.
    Its messageId is made of the run and the step, so the spool's dedup keeps one of each
    however often a replay or a redone plan says it."""
    ids = ids or {"anonymous_id": f"profile-{run.pid}"}
    stamp = datetime.fromtimestamp((now if when is None else when) / 1000, UTC)
    properties = {"journey": run.journey, "entry": run.entry, "profile_id": run.pid, **more}
    suffix = "".join(f"|{more[k]}" for k in ("step", "at") if k in more)
    return wire.Track(
        event=name, user_id=ids.get("user_id"), anonymous_id=ids.get("anonymous_id"),
        message_id=f"{name.lower().replace(' ', '-')}-{run.key}{suffix}",
        timestamp=stamp, received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(properties)),
        context=msgspec.Raw(b'{"library":{"name":"kairos-journeys"}}'),
    )  # fmt: skip


def ended(run: Run, ids: dict[str, str], now: int, when: int | None = None) -> list[wire.Message]:
    """The journey event of a run that just ended (at ``now``), if it did."""
    if not run.ended or run.ended_at != now:
        return []
    if run.ended == "completed":
        return [event("Journey Completed", run, ids, now, when)]
    return [event("Journey Exited", run, ids, now, when, reason=run.ended)]


def ids_of(snapshot: Snapshot) -> dict[str, str]:
    """The identities a journey event or action of the person goes out with."""
    found = {}
    if snapshot.fields.get("user_id"):
        found["user_id"] = snapshot.fields["user_id"]
    anonymous = [i.partition(":")[2] for i in snapshot.identities if i.startswith("anonymous_id:")]
    if anonymous:
        found["anonymous_id"] = sorted(anonymous)[0]
    return found


def message_ids(msg: wire.Message) -> dict[str, str]:
    ids = {"user_id": msg.user_id, "anonymous_id": msg.anonymous_id}
    return {k: str(v) for k, v in ids.items() if v is not None}
