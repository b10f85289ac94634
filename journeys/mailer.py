"""Sending one email to one person: the send-time checks, the template, SMTP, and what is said.

Before anything is rendered, a message is checked in this order, and one held back says why in
a "Message Skipped" event (``reason``): the person's address, consent, subscription and the
address suppression list (``journeys.subscriptions.check``: ``no_address``, ``suppressed``,
``unsubscribed``, ``not_subscribed``, ``pending_confirmation``, ``unknown_group``), the template
(``unknown_template``), a sender (``no_smtp_server``), quiet hours in the person's time zone
(the message waits until they end: ``deferred``, not skipped) and the per-person frequency cap
across channels (``frequency_cap``). Then the template is rendered for the person (with their
recommendations and a decided offer, from the engine's API), its links tracked, and the message
handed to the SMTP server.

What an answer means: 2xx is "Email Sent" (and counts towards the cap); a 5xx is "Email
Bounced" and suppresses the address (``journeys.suppression``); a 4xx or no answer is retried by
the caller with backoff. The caller records what was sent before forgetting the message (see
``journeys.delivery``): a crash between the server's accept and that record sends the message a
second time at most, with the same ``Message-ID``, which mailbox providers fold into one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import redis

from collector import wire
from collector.versioned import Versioned
from journeys import subscriptions, suppression
from journeys.actions import Api, ApiError
from journeys.confirmation import send_confirmation
from journeys.emails import DEFS, TEMPLATE, VERSION, EmailTemplate, render, track
from journeys.events import ids_of
from journeys.links import link_secret, token
from journeys.smtp import EmailSettings, Sender, compose, deliver
from profiles.store import Snapshot
from profiles.views import describe

__all__ = ["Mailer", "Ready", "Sent", "SendPolicy", "capped", "count_sent", "message_event",
           "sent_key"]  # fmt: skip

log = logging.getLogger("kairos.messaging")

_HH_MM = r"([01]\d|2[0-3]):[0-5]\d"


class SendPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The config file's ``[messaging]`` section::

        [messaging]
        frequency_cap = 3            # messages per person per cap_days, every channel (0: none)
        cap_days = 1.0
        quiet_hours = "21:00-08:00"  # in the person's `timezone` trait; none by default
        timezone = "Europe/Berlin"   # for people without one (default UTC)

    Examples:
        >>> policy = SendPolicy(quiet_hours="21:00-08:00")
        >>> at = int(datetime(2026, 3, 1, 22, 30, tzinfo=UTC).timestamp() * 1000)
        >>> datetime.fromtimestamp(policy.quiet_until(None, at) / 1000, UTC).isoformat()
        '2026-03-02T08:00:00+00:00'
        >>> policy.quiet_until(None, at + 10 * 3_600_000) is None
        True
    """

    frequency_cap: int = 0
    cap_days: float = 1.0
    quiet_hours: str | None = msgspec.field(default=None)
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.quiet_hours is not None and not re.fullmatch(f"{_HH_MM}-{_HH_MM}",
                                                             self.quiet_hours):  # fmt: skip
            raise ValueError(f'quiet_hours: "HH:MM-HH:MM", e.g. "21:00-08:00"; got '
                             f"{self.quiet_hours!r}")  # fmt: skip
        if self.frequency_cap < 0 or self.cap_days <= 0:
            raise ValueError("frequency_cap: 0 or more messages per cap_days (more than 0)")
        _zone(self.timezone, strict=True)

    def quiet_until(self, timezone: str | None, now: int) -> int | None:
        """When the quiet hours around ``now`` end on the person's clock; None outside them."""
        if self.quiet_hours is None:
            return None
        zone = _zone(timezone) or _zone(self.timezone) or UTC
        local = datetime.fromtimestamp(now / 1000, zone)
        start, end = (_minutes(part) for part in self.quiet_hours.split("-"))
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        until = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
        if until <= local:
            until += timedelta(days=1)
        return int(until.timestamp() * 1000)


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


def _zone(name: str | None, strict: bool = False) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if strict:
            raise ValueError(f"timezone: not an IANA time zone: {name!r}") from None
        return None


def sent_key(pid: str) -> str:
    """The person's messages of the last days, any channel (a sorted set by time): the cap."""
    return f"{{p:{pid}}}:sent"


_KEEP_MS = 90 * 86_400_000  # the longest cap window worth keeping


def capped(client: redis.Redis, policy: SendPolicy, pid: str, now: int) -> bool:
    if policy.frequency_cap == 0:
        return False
    since = now - int(policy.cap_days * 86_400_000)
    return int(client.zcount(sent_key(pid), since, "+inf")) >= policy.frequency_cap


def count_sent(client: redis.Redis, pid: str, key: str, now: int) -> None:
    """Count a message towards the person's cap (idempotent: the key is the member)."""
    pipe = client.pipeline(transaction=True)  # the person's slot
    pipe.zadd(sent_key(pid), {key: now})
    pipe.zremrangebyscore(sent_key(pid), "-inf", now - _KEEP_MS)
    pipe.execute()


@dataclass(frozen=True)
class Sent:
    """What became of a message: ``sent``, ``skipped`` (``reason``), ``deferred`` (until
    ``until``), ``retry`` (a temporary failure) or ``bounced`` / ``failed`` (permanent)."""

    status: str
    reason: str = ""
    until: int = 0


@dataclass(frozen=True)
class Ready:
    """A message rendered for its person, as it goes out."""

    subject: str
    preheader: str
    html: str
    text: str
    unsubscribe_url: str


def message_event(name: str, snapshot: Snapshot, key: str, now: int,
                  **properties: Any) -> wire.Message:  # fmt: skip
    """A messaging event of the person ("Email Sent", "Message Skipped", …), once per message:
    its messageId is made of the event and the message's key."""
    ids = ids_of(snapshot) or {"anonymous_id": f"profile-{snapshot.id}"}
    stamp = datetime.fromtimestamp(now / 1000, UTC)
    return wire.Track(
        event=name, user_id=ids.get("user_id"), anonymous_id=ids.get("anonymous_id"),
        message_id=f"{name.lower().replace(' ', '-')}-{key}",
        timestamp=stamp, received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(
            {"message": key, "profile_id": snapshot.id, **properties})),
        context=msgspec.Raw(b'{"library":{"name":"kairos-messaging"}}'),
    )  # fmt: skip


class Mailer:
    """Sends templates to people through the configured SMTP server."""

    def __init__(self, client: redis.Redis, settings: EmailSettings, sender: Sender | None,
                 policy: SendPolicy, api: Api | None,
                 clock: Callable[[], int], timeout: float = 30.0):  # fmt: skip
        self.client = client
        self.settings = settings
        self.sender = sender
        self.policy = policy
        self.api = api
        self.clock = clock
        self.timeout = timeout
        self._templates: Versioned[dict[str, EmailTemplate]] = Versioned(VERSION, {})
        # One event loop for the mailer's life (made at the first send): asyncio.run per
        # message would make a loop and start a resolver thread for every one (a third of a
        # message's cost, measured by bench/messaging.py).
        self._loop: asyncio.AbstractEventLoop | None = None
        own = api.url if api is not None else "http://127.0.0.1:8000"
        self.public_url = (settings.public_url or own).rstrip("/")  # links in messages

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()

    def confirm(self, pending: list[tuple[str, str]]) -> None:
        """Send the double opt-in confirmation to each (person, group) waiting for one (a
        subscription by a tracked event); without a server or an address, the person stays
        pending (logged), as a subscription through the API does."""
        groups = subscriptions.cached_groups(self.client)
        for pid, key in pending:
            to = subscriptions.address_of(self.client, pid)
            if self.sender is None or to is None or key not in groups:
                log.info("double opt-in confirmation not sent: %s",
                         "no SMTP server" if self.sender is None else "no address",
                         extra={"group": key})  # fmt: skip
                continue
            self._loop = self._loop or asyncio.new_event_loop()
            outcome = self._loop.run_until_complete(send_confirmation(
                self.client, self.sender, self.public_url, pid, key, groups[key], to))  # fmt: skip
            if outcome.status != "sent":
                log.warning("double opt-in confirmation not sent: %s", outcome.detail,
                            extra={"group": key})  # fmt: skip

    def templates(self) -> dict[str, EmailTemplate]:
        return self._templates.get(self.client, lambda c: {
            k.decode(): TEMPLATE.decode(v) for k, v in c.hgetall(DEFS).items()})  # fmt: skip

    def send(self, snapshot: Snapshot, template_key: str, key: str, group: str | None,
             now: int, said: list[wire.Message], **about: Any) -> Sent:  # fmt: skip
        """Send template ``template_key`` to the person as message ``key``; the events it
        makes go into ``said`` (the caller appends them once it has recorded the outcome)."""
        person: dict[str, Any] = (describe(snapshot, now) if snapshot.exists
                                  else {"id": snapshot.id, "traits": {}})  # fmt: skip

        def skipped(reason: str) -> Sent:
            said.append(message_event("Message Skipped", snapshot, key, now, channel="email",
                                      reason=reason, template=template_key, **about))  # fmt: skip
            return Sent("skipped", reason)

        address = person["traits"].get("email")
        address = address if isinstance(address, str) and "@" in address else None
        reason = subscriptions.check(self.client, snapshot.id, group, "email", address)
        template = self.templates().get(template_key)
        if reason is None and template is None:
            reason = "unknown_template"
        if reason is None and self.sender is None:
            reason = "no_smtp_server"
        if reason is not None:
            return skipped(reason)
        timezone = person["traits"].get("timezone")
        until = self.policy.quiet_until(timezone if isinstance(timezone, str) else None, now)
        if until is not None:
            said.append(message_event("Message Deferred", snapshot, key, now, channel="email",
                                      reason="quiet_hours", until=until, **about))  # fmt: skip
            return Sent("deferred", "quiet_hours", until)
        if capped(self.client, self.policy, snapshot.id, now):
            return skipped("frequency_cap")
        assert template is not None and self.sender is not None and address is not None
        try:
            ready = self.render(template, snapshot, key, group, link_secret(self.client),
                                person)  # fmt: skip
        except ApiError as exc:
            return Sent("retry" if exc.retry else "failed", str(exc))
        message = compose(self.sender, address, ready.subject, ready.html, ready.text, key=key,
                          unsubscribe_url=ready.unsubscribe_url,
                          preheader=ready.preheader)  # fmt: skip
        self._loop = self._loop or asyncio.new_event_loop()
        answer = self._loop.run_until_complete(deliver(self.sender, address, message,
                                                       self.timeout))  # fmt: skip
        if answer.status == "sent":
            count_sent(self.client, snapshot.id, key, now)
            said.append(message_event("Email Sent", snapshot, key, now, template=template_key,
                                      subject=ready.subject, group=group or "",
                                      **about))  # fmt: skip
            return Sent("sent")
        if answer.status == "bounced":
            suppression.record_bounce(self.client, address, f"{answer.code} {answer.detail}")
            said.append(message_event("Email Bounced", snapshot, key, now, code=answer.code,
                                      detail=answer.detail[:300], template=template_key,
                                      **about))  # fmt: skip
            return Sent("bounced", f"{answer.code} {answer.detail}")
        return Sent("retry", f"SMTP {answer.code}: {answer.detail}"[:500])

    def render(self, template: EmailTemplate, snapshot: Snapshot, key: str, group: str | None,
               secret: bytes, person: dict[str, Any] | None = None) -> Ready:  # fmt: skip
        """The message ``key`` as the person gets it: rendered, links tracked, with its
        unsubscribe link (``ApiError`` when the blocks cannot be had). ``person``: the profile
        document, when the caller has it already."""
        if person is None:
            person = (describe(snapshot, self.clock()) if snapshot.exists
                      else {"id": snapshot.id, "traits": {}})  # fmt: skip
        variables = self._variables(template, snapshot, person, group, secret)
        rendered = render(template, variables)
        public = self.public_url
        ids = ids_of(snapshot)
        who = (snapshot.id, key, ids.get("user_id", ""), ids.get("anonymous_id", ""))
        html = track(rendered.html,
                     lambda url: f"{public}/v1/m/c/{token(secret, 'c', *who, url)}",
                     f"{public}/v1/m/o/{token(secret, 'o', *who)}.gif", public)  # fmt: skip
        return Ready(rendered.subject, rendered.preheader, html, rendered.text,
                     variables["unsubscribe_url"])  # fmt: skip

    def _variables(self, template: EmailTemplate, snapshot: Snapshot, person: dict[str, Any],
                   group: str | None, secret: bytes) -> dict[str, Any]:  # fmt: skip
        """What the template sees (``journeys.emails``), asking the engine's API for blocks."""
        public = self.public_url
        computed = person.get("computed", {})
        found: dict[str, Any] = {
            "person": person, "traits": person.get("traits", {}), "computed": computed,
            "cart": computed.get("cart", []), "scores": person.get("scores", {}),
            "unsubscribe_url": subscriptions.unsubscribe_url(public, secret, snapshot.id, group),
            "preferences_url": subscriptions.preferences_url(public, secret, snapshot.id),
        }  # fmt: skip
        if (template.recommendations or template.offer) and self.api is None:
            raise ApiError("this worker has no API to ask for blocks (--api-url)", retry=False)
        if template.recommendations is not None and self.api is not None:
            block = template.recommendations
            found["recommendations"] = self.api.rendered(snapshot.id, block.placement, block.n,
                                                         block.layout)  # fmt: skip
        if template.offer is not None and self.api is not None:
            found["offer"] = self.api.decide(template.offer, ids_of(snapshot))
        return found
