"""What an action step sends, and how.

- ``webhook``: a POST of JSON ``{journey, step, idempotencyKey, person, run, …body}`` with
  ``Idempotency-Key`` (the action key: a receiver that sees it twice can tell) and
  ``X-Kairos-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the
  webhook secret (``webhook_secret``: made once, kept in Redis, shown to admins by the journeys
  API). A 2xx delivers it; anything else, or no answer in 10 s, is retried with backoff
  (``backoff``: 2 s doubling to 5 minutes, for a day), a 4xx other than 408/429 is not.
- ``email``: a webhook to the provider carrying ``to`` (the person's email trait), ``subject``
  and the recommendations API's rendered block for the person (``html``, ``text``, the items
  and their decisionId), fetched from the engine's own API (``Api``: its URL and keys);
  ``decide`` on a webhook or email adds that placement's decision for the person (from
  ``/v1/decide``, so it is logged and learns like any other).
- ``traits``, ``score``, ``emit``: a message into the spool (identify; "Lead Score Adjusted";
  the event), whose messageId is the action key, so the spool's dedup keeps it once.

Examples:
    >>> sign(b"secret", b'{"a":1}', 1800000000)
    't=1800000000,v1=440dfbb83aabca24d9e5027629cfd81cb45254690f8d410bb28f1cc17c990dbc'
    >>> [backoff(n) for n in (0, 1, 5, 20)]
    [2000, 4000, 64000, 300000]
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import redis

from collector import wire
from journeys.spec import Email, Emit, Score, Traits, Webhook
from profiles.computed import LEAD_SCORE_ADJUSTED

__all__ = ["SECRET", "Api", "ApiError", "Delivery", "backoff", "message_for", "sign",
           "webhook_secret"]  # fmt: skip

SECRET = "{jrn}:webhook_secret"
GIVE_UP_MS = 86_400_000  # an action not delivered within a day is dropped (and logged)


class Delivery(msgspec.Struct):
    ok: bool
    retry: bool
    detail: str


class ApiError(Exception):
    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class Api:
    """The engine's own HTTP API, for what journeys take from it (decisions, recommendations)."""

    def __init__(self, url: str, write_key: str, secret_key: str, http: httpx.Client):
        self.url = url.rstrip("/")
        self.write_key = write_key
        self.secret_key = secret_key
        self.http = http

    def _call(self, method: str, path: str, key: str, **kwargs: Any) -> dict[str, Any]:
        try:
            headers = {"Authorization": f"Bearer {key}"}
            answer = self.http.request(method, self.url + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"the engine's API at {self.url}: {exc}", retry=True) from None
        if not answer.is_success:
            status = answer.status_code
            retry = status >= 500 or status == 429
            raise ApiError(f"{path}: HTTP {status}: {answer.text[:200]}", retry=retry)
        found: dict[str, Any] = answer.json()
        return found

    def decide(self, placement: str, ids: dict[str, str]) -> dict[str, Any]:
        body = {"placements": [placement], "userId": ids.get("user_id"),
                "anonymousId": ids.get("anonymous_id")}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        # The secret key: a server deciding for the person it holds (the write key's userId
        # would need the person's userHash: decisions.identity).
        decided = self._call("POST", "/v1/decide", self.secret_key, json=body)["decisions"]
        return dict(decided[placement])

    def rendered(self, pid: str, placement: str, n: int, template: str) -> dict[str, Any]:
        params = {"placement": placement, "n": n, "template": template}
        return self._call("GET", f"/v1/recommendations/{pid}/render", self.secret_key,
                          params=params)  # fmt: skip


def webhook_secret(client: redis.Redis) -> bytes:
    """The secret webhooks are signed with (made on first use)."""
    client.set(SECRET, "whsec_" + secrets.token_urlsafe(24), nx=True)
    return bytes(client.get(SECRET) or b"")


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempts: int) -> int:
    """Milliseconds before the next try, after ``attempts`` failed ones."""
    return int(min(2_000 * 2**attempts, 300_000))


def post(
    http: httpx.Client, step: Webhook | Email, key: str, payload: dict[str, Any], secret: bytes
) -> Delivery:
    body = msgspec.json.encode({**payload, **step.body})
    headers = {"Content-Type": "application/json", "Idempotency-Key": key,
               "X-Kairos-Signature": sign(secret, body, int(datetime.now(UTC).timestamp())),
               "User-Agent": "kairos-journeys"}  # fmt: skip
    try:
        assert step.url is not None  # an email step without one goes out over SMTP
        answer = http.post(step.url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        return Delivery(False, True, f"{type(exc).__name__}: {exc}")
    if answer.is_success:
        return Delivery(True, False, str(answer.status_code))
    retry = answer.status_code >= 500 or answer.status_code in (408, 429)
    return Delivery(False, retry, f"HTTP {answer.status_code}: {answer.text[:200]}")


def message_for(
    step: Traits | Score | Emit, key: str, ids: dict[str, str], properties: dict[str, Any]
) -> wire.Message:
    """The spool message of a traits, score or emit step for the person known by ``ids``
    (``user_id`` and/or ``anonymous_id``)."""
    now = datetime.now(UTC)
    common: dict[str, Any] = {
        "user_id": ids.get("user_id"), "anonymous_id": ids.get("anonymous_id"),
        "message_id": f"journey-{key}", "timestamp": now, "received_at": now,
        "context": msgspec.Raw(b'{"library":{"name":"kairos-journeys"}}'),
    }  # fmt: skip
    if isinstance(step, Traits):
        return wire.Identify(traits=msgspec.Raw(msgspec.json.encode(step.set)), **common)
    if isinstance(step, Score):
        event, props = LEAD_SCORE_ADJUSTED, {**properties, "points": step.points}
    else:
        event, props = step.event, {**properties, **step.properties}
    return wire.Track(event=event, properties=msgspec.Raw(msgspec.json.encode(props)), **common)
