"""Sending the outbox: each due action of the partitions an instance holds, once.

An action is claimed before anything else (``journeys.queues.claim``: no two instances deliver
it at once), then checked against its run as it is now (an exit since it was queued, a new
entry, a step or journey removed: it is cancelled), then against the partition's record of
what was sent (a crash after the delivery and before forgetting it), and only then sent; the
record is written before the action is forgotten. Emails with a template go out over SMTP
(``journeys.mailer``: the send-time checks, then the message); webhooks and email hand-offs are
POSTed (``journeys.actions``), with what they take from the engine's API; Discord and Telegram
messages go to those services (``journeys.community``: a 429 is retried when the service says,
not after the backoff); the other actions are messages into the spool, whose dedup keeps each
once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import redis

from collector.partitions import Layout
from collector.spool import append_now
from collector.versioned import Versioned
from journeys import queues, store
from journeys.actions import (
    GIVE_UP_MS,
    Api,
    ApiError,
    Delivery,
    backoff,
    message_for,
    post,
    webhook_secret,
)
from journeys.broadcasts import VERSION as BROADCASTS_VERSION
from journeys.broadcasts import Broadcast, broadcast_of, broadcasts, state_key
from journeys.community import Channels, ChannelSettings, Sent
from journeys.events import event, ids_of
from journeys.mailer import Mailer, capped, count_sent, message_event
from journeys.shards import Shard
from journeys.spec import Discord, Email, Journey, Telegram, Webhook
from profiles.store import ProfileStore, Snapshot
from profiles.views import describe, view_of

__all__ = ["Courier"]

log = logging.getLogger("kairos.journeys")

PAUSED_MS = 5_000  # how often a paused broadcast's fed messages look again


class Courier:
    """Delivers the due actions of the partitions ``holder`` holds."""

    def __init__(self, client: redis.Redis, layout: Layout, holder: str, http: httpx.Client,
                 api: Api | None, clock: Callable[[], int], mailer: Mailer | None = None,
                 channels: ChannelSettings | None = None):  # fmt: skip
        self.client = client
        self.mailer = mailer
        self.layout = layout
        self.holder = holder
        self.http = http
        self.api = api
        self.clock = clock
        self.profiles = ProfileStore(client)
        self._broadcasts: Versioned[dict[str, Broadcast]] = Versioned(BROADCASTS_VERSION, {})
        self.channels = Channels(channels or ChannelSettings(), http)

    def send(self, shards: list[Shard], journeys: dict[str, Journey], now: int, upto: int) -> int:
        """Deliver what the partitions' outboxes hold that is due by ``upto``; how many."""
        delivered = 0
        for shard in shards:
            for key in queues.due_actions(self.client, shard, upto):
                if queues.claim(self.client, shard, key, self.holder, now):
                    delivered += self._deliver(shard, key, journeys, now)
        return delivered

    def _deliver(self, shard: Shard, key: str, journeys: dict[str, Journey], now: int) -> int:
        """Send one claimed action, unless its run has moved on; 1 if it was delivered."""
        found = queues.find_action(self.client, shard, key)
        if found is None:  # done with already (an outbox entry put back meanwhile)
            queues.settle(self.client, shard, key, None, now, "gone")
            return 0
        item, where = found
        if broadcast_of(item.journey) is not None:
            return self._broadcast(shard, key, item, where, now)
        journey = journeys.get(item.journey)
        run = store.read_runs(self.client, [item.pid])[item.pid].get(item.journey)
        if journey is None or run is None or run.entry != item.entry or (
                run.ended.startswith("exited")) or item.step not in journey.steps:  # fmt: skip
            queues.settle(self.client, shard, key, where, now, "cancelled")
            return 0
        if queues.was_sent(self.client, shard, key):
            queues.settle(self.client, shard, key, where, now, "sent")
            return 0
        step = journey.steps[item.step]
        snapshot = self.profiles.read(item.pid)
        if isinstance(step, Email) and step.template is not None:
            if not self._mail(shard, key, item, where, step.template, step.group, snapshot, now,
                              journey=item.journey, step=item.step):  # fmt: skip
                return 0
        elif isinstance(step, Webhook | Email):
            payload = {
                "journey": item.journey, "step": item.step, "idempotencyKey": key,
                "person": _document(snapshot, now), "run": msgspec.to_builtins(run),
            }  # fmt: skip
            try:
                payload |= self._gathered(step, snapshot)
            except ApiError as exc:
                result = Delivery(False, exc.retry, str(exc))
            else:
                result = post(self.http, step, key, payload, webhook_secret(self.client))
            if not result.ok:
                if result.retry and now - item.created < GIVE_UP_MS:
                    queues.retry(self.client, shard, key, item, where,
                                 now + backoff(item.attempts), result.detail)  # fmt: skip
                else:
                    log.warning("journey action dropped: %s", result.detail,
                                extra={"action": key})  # fmt: skip
                    queues.settle(self.client, shard, key, where, now, "dropped")
                return 0
        elif isinstance(step, Discord | Telegram):
            # A Telegram message to the person's own chat keeps their quiet hours and counts
            # towards their frequency cap across channels, as email does (a Discord post is to
            # a channel, not to them).
            direct = isinstance(step, Telegram) and step.chat_id_trait is not None
            policy = self.mailer.policy if self.mailer is not None else None
            if direct and policy is not None and capped(self.client, policy, item.pid, now):
                skipped = message_event("Message Skipped", snapshot, key, now,
                                        channel="telegram", reason="frequency_cap",
                                        journey=item.journey, step=item.step)  # fmt: skip
                append_now(self.client, [skipped], self.layout)
                queues.settle(self.client, shard, key, where, now, "skipped")
                return 0
            traits = view_of(snapshot, now).traits if snapshot.exists else {}
            zone = traits.get("timezone")
            until = (policy.quiet_until(zone if isinstance(zone, str) else None, now)
                     if direct and policy is not None else None)  # fmt: skip
            if until is not None:  # quiet hours on the person's clock: it waits, as email does
                queues.retry(self.client, shard, key, item, where, until, "quiet_hours")
                return 0
            answer = self.channels.send(step, traits, now)
            if answer.skipped:
                log.info("journey action skipped: %s", answer.detail, extra={"action": key})
                queues.settle(self.client, shard, key, where, now, "skipped")
                return 0
            if not answer.ok:
                return self._failed(shard, key, item, where, now, answer)
            if direct:
                count_sent(self.client, item.pid, key, now)
        else:
            ids = ids_of(snapshot)
            if not ids:
                queues.settle(self.client, shard, key, where, now, "dropped")
                return 0
            said = message_for(step, key, ids, {"journey": item.journey})  # type: ignore[arg-type]
            append_now(self.client, [said], self.layout)
        queues.settle(self.client, shard, key, where, now, "sent")
        kind = step.__struct_config__.tag
        sent = event("Journey Action Sent", run, ids_of(snapshot), now, step=item.step,
                     action=kind)  # fmt: skip
        append_now(self.client, [sent], self.layout)
        return 1

    def _broadcast(self, shard: Shard, key: str, item: store.Outgoing, where: str,
                   now: int) -> int:  # fmt: skip
        """Send a broadcast's message to its person, unless the broadcast was cancelled (or
        is paused: then later); its variant is decided now, by the placement, if it has them."""
        name = broadcast_of(item.journey)
        assert name is not None
        found = self._broadcasts.get(self.client, broadcasts)
        status = (self.client.hget(state_key(name), "status") or b"").decode()
        if name not in found or status == "cancelled":
            queues.settle(self.client, shard, key, where, now, "cancelled")
            return 0
        if status == "paused":
            queues.retry(self.client, shard, key, item, where, now + PAUSED_MS, "paused")
            return 0
        if queues.was_sent(self.client, shard, key):
            queues.settle(self.client, shard, key, where, now, "sent")
            return 0
        broadcast = found[name]
        snapshot = self.profiles.read(item.pid)
        template, group = broadcast.template, "treated"
        if broadcast.variants is not None:
            try:
                if self.api is None:
                    raise ApiError("this worker has no API to decide variants (--api-url)",
                                   retry=False)  # fmt: skip
                group = str(self.api.decide(broadcast.variants.placement,
                                            ids_of(snapshot))["variant"])  # fmt: skip
            except (ApiError, KeyError) as exc:
                retry = isinstance(exc, ApiError) and exc.retry
                if retry and now - item.created < GIVE_UP_MS:
                    queues.retry(self.client, shard, key, item, where,
                                 now + backoff(item.attempts), str(exc))  # fmt: skip
                else:
                    log.warning("broadcast message dropped: %s", exc, extra={"action": key})
                    queues.settle(self.client, shard, key, where, now, "dropped")
                return 0
            template = broadcast.variants.templates.get(group)
        targeted = message_event("Broadcast Targeted", snapshot, key, now, broadcast=name,
                                 group=group)  # fmt: skip
        if template is None:  # a variant of the placement that names no template
            skipped = message_event("Message Skipped", snapshot, key, now, channel="email",
                                    reason="unknown_template", broadcast=name,
                                    variant=group)  # fmt: skip
            append_now(self.client, [targeted, skipped], self.layout)
            queues.settle(self.client, shard, key, where, now, "skipped")
            return 0
        if not self._mail(shard, key, item, where, template, broadcast.group, snapshot, now,
                          [targeted], broadcast=name, variant=group):  # fmt: skip
            return 0
        queues.settle(self.client, shard, key, where, now, "sent")
        return 1

    def _mail(self, shard: Shard, key: str, item: store.Outgoing, where: str, template: str,
              group: str | None, snapshot: Snapshot, now: int, said: list[Any] | None = None,
              **about: str) -> bool:  # fmt: skip
        """Send an email over SMTP; True when it was sent (the caller records it), else what
        became of it is settled or scheduled here. ``said``: events to append with its own
        (one append for all)."""
        if self.mailer is None:
            raise RuntimeError("an email with a template needs the worker's mailer")
        said = list(said or [])
        result = self.mailer.send(snapshot, template, key, group, now, said, **about)
        if result.status == "deferred":
            queues.retry(self.client, shard, key, item, where, result.until, result.reason)
        elif result.status == "retry" and now - item.created < GIVE_UP_MS:
            queues.retry(self.client, shard, key, item, where, now + backoff(item.attempts),
                         result.reason)  # fmt: skip
        elif result.status != "sent":
            if result.status != "skipped":
                log.warning("email not sent: %s", result.reason, extra={"action": key})
            queues.settle(self.client, shard, key, where, now, result.status)
        if said:
            append_now(self.client, said, self.layout)
        return result.status == "sent"

    def _failed(self, shard: Shard, key: str, item: store.Outgoing, where: str, now: int,
                result: Sent) -> int:  # fmt: skip
        """Retry a message that failed (when the service said, else with backoff), unless it
        cannot succeed or a day has passed: then drop it, logged."""
        if result.retry and now - item.created < GIVE_UP_MS:
            wait = result.after_ms if result.after_ms is not None else backoff(item.attempts)
            queues.retry(self.client, shard, key, item, where, now + wait, result.detail)
        else:
            log.warning("journey action dropped: %s", result.detail, extra={"action": key})
            queues.settle(self.client, shard, key, where, now, "dropped")
        return 0

    def _gathered(self, step: Webhook | Email, snapshot: Snapshot) -> dict[str, Any]:
        """What the step takes from the engine's API: a decision, rendered recommendations."""
        if self.api is None and (step.decide or isinstance(step, Email)):
            raise ApiError("this worker has no API to ask (--api-url)", retry=False)
        found: dict[str, Any] = {}
        if step.decide and self.api is not None:
            found["decision"] = self.api.decide(step.decide, ids_of(snapshot))
        if isinstance(step, Email) and self.api is not None:
            traits = view_of(snapshot, self.clock()).traits if snapshot.exists else {}
            found |= {"to": traits.get("email"), "subject": step.subject}
            if step.placement:
                block = self.api.rendered(snapshot.id, step.placement, step.n, step.layout)
                found |= {
                    "html": block["html"],
                    "text": block["text"],
                    "recommendations": {
                        k: block[k] for k in ("decisionId", "placement", "strategy", "items")
                    },
                }
        return found


def _document(snapshot: Snapshot, now: int) -> dict[str, Any]:
    return describe(snapshot, now) if snapshot.exists else {"id": snapshot.id}
