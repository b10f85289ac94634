"""Rate and size limits on every request: per client IP, per key, and a cap on bodies.

An ASGI middleware in front of the whole app, the decide path included, so it is kept cheap:
in-process token buckets on the monotonic clock, one pass over the headers, no I/O. Limits are
per API process: with N API processes on one port a client may get up to N times the rate.

Who counts against what:

- a request with the secret key, or a named server key (one with neither ``track`` nor
  ``decide``), counts against its key's bucket only (servers: an email system pulling
  recommendations from one address is not a flood);
- a request with the write key or another named key counts against its client IP's bucket and
  its key's;
- any other request (no key, a wrong key, the dashboard) against its client IP's bucket.

A named key made with a ``rate`` of its own has a bucket of that rate; every other key's holds
``per_key`` requests a second.

The client IP is the connecting peer's, or — when the peer is one of ``trusted_proxies`` — the
last address in ``X-Forwarded-For`` that is not a trusted proxy. A trusted proxy's own requests
(no ``X-Forwarded-For``) have no per-IP limit: they are the machine's own tools and workers, or
a proxy speaking for many clients.

Over a limit: 429 with ``Retry-After`` and ``{"code": "rate_limited", "message": …}`` naming
the limit. A body over ``max_body_kb`` (by ``Content-Length``, or counted while a chunked body
streams in): 413 ``request_too_large``. Endpoints keep their own lower limits (decide 64 KB, a
tracking batch 500 KB).

Examples:
    >>> buckets = Buckets(rate=2.0, burst=1.0)
    >>> [buckets.take("1.2.3.4", now=0.0), buckets.take("1.2.3.4", now=0.0)]
    [0.0, 0.0]
    >>> buckets.take("1.2.3.4", now=0.0)  # empty: a token comes back in half a second
    0.5
    >>> buckets.take("1.2.3.4", now=0.5)
    0.0
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import math
from time import monotonic
from typing import Annotated

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.errors import Unauthorized
from edge.access.keys import Keyring
from edge.api.auth import key_from_header

__all__ = ["Buckets", "Limits", "RequestLimits", "answer"]


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``[limits]`` table of the config file."""

    per_ip: Annotated[float, msgspec.Meta(ge=0.0)] = 200.0  # requests/s per client IP; 0: none
    per_key: Annotated[float, msgspec.Meta(ge=0.0)] = 5000.0  # requests/s per key; 0: none
    burst: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 2.0  # seconds of the rate at once
    max_body_kb: Annotated[int, msgspec.Meta(ge=0)] = 2048  # 0: no cap
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")  # addresses or networks (CIDR)

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"`trusted_proxies` must list IP addresses or networks, got {proxy!r}"
                ) from None


class Buckets:
    """Token buckets by name: ``rate`` tokens a second, holding up to ``rate * burst``.

    A bucket that has filled up again is the same as a new one, so idle buckets are dropped
    when there are ``max_size`` of them; if most are busy (a flood from many addresses), the
    least recently used half goes too (those clients start again from a full bucket).
    """

    def __init__(self, rate: float, burst: float, max_size: int = 65_536):
        self.rate = rate
        self.capacity = max(1.0, rate * burst)
        self.max_size = max_size
        self.buckets: dict[str, list[float]] = {}  # name -> [tokens, when]

    def take(self, name: str, now: float) -> float:
        """0.0 if a request may go now (and it took its token), else seconds to wait."""
        bucket = self.buckets.get(name)
        if bucket is None:
            if len(self.buckets) >= self.max_size:
                self._evict(now)
            self.buckets[name] = [self.capacity - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return (1.0 - tokens) / self.rate
        bucket[0] = tokens - 1.0
        return 0.0

    def _evict(self, now: float) -> None:
        rate, capacity = self.rate, self.capacity
        busy = {k: b for k, b in self.buckets.items() if b[0] + (now - b[1]) * rate < capacity}
        if len(busy) > self.max_size // 2:
            recent = sorted(busy.items(), key=lambda item: item[1][1])[-(self.max_size // 2) :]
            busy = dict(recent)
        self.buckets = busy


def _error(status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]) -> Message:
    body = msgspec.json.encode({"code": code, "message": message})
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *headers,
        ],
        "body": body,
    }


async def answer(send: Send, start: Message) -> None:
    """Send a refusal made by ``RequestLimits.admit``."""
    body = start.pop("body")
    await send(start)
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class RequestLimits:
    """The middleware; ``write_key`` and ``secret_key`` name the two per-key buckets."""

    def __init__(self, app: ASGIApp, limits: Limits, write_key: str, secret_key: str):
        self.app = app
        self.limits = limits
        self.per_ip = Buckets(limits.per_ip, limits.burst) if limits.per_ip else None
        self.per_key = Buckets(limits.per_key, limits.burst) if limits.per_key else None
        self.max_body = limits.max_body_kb * 1024
        self.write_key = write_key.encode()
        self.secret_key = secret_key.encode()
        # header -> (bucket, per-IP too, the key's own rate or 0)
        self._keys: dict[bytes, tuple[str, bool, float] | None] = {}
        self._rated: dict[float, Buckets] = {}  # a rate of its own -> the keys' buckets
        self.keyring: Keyring | None = None  # the named keys (the app sets it at startup)
        networks = [ipaddress.ip_network(p, strict=False) for p in limits.trusted_proxies]

        @functools.lru_cache(maxsize=4096)
        def trusted(host: str) -> bool:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in network for network in networks)

        self.trusted = trusted
        self.off = self.per_ip is None and self.per_key is None and not self.max_body

    def _key(self, authorization: bytes) -> tuple[str, bool, float] | None:
        """The bucket of the key an ``Authorization`` header carries (``secret``, ``write``,
        ``'<name>'``), whether its client IP's bucket counts too, and the key's own rate (0:
        ``per_key``); None for no key."""
        try:
            return self._keys[authorization]
        except KeyError:
            pass
        try:
            given = (key_from_header(authorization.decode("latin-1")) or "").encode()
        except Unauthorized:
            given = b""
        found: tuple[str, bool, float] | None = None
        if hmac.compare_digest(given, self.secret_key):
            found = ("secret", False, 0.0)
        elif hmac.compare_digest(given, self.write_key):
            found = ("write", True, 0.0)
        elif given and self.keyring is not None:
            who = self.keyring.find(given.decode("latin-1"))
            if who is not None:
                found = (f"{who.name!r}", bool(who.scopes & {"track", "decide"}), who.rate)
        if len(self._keys) >= 1024:  # a flood of made-up keys must not grow this
            self._keys.clear()
        self._keys[authorization] = found
        return found

    def client_ip(self, scope: Scope, forwarded: list[bytes]) -> str | None:
        """The address the per-IP limit counts; None when the request has no per-IP limit."""
        client = scope.get("client")
        host = client[0] if client else None
        if host is None:  # a Unix socket: this machine
            return None
        if not self.trusted(host):
            return str(host)
        if not forwarded:  # a trusted proxy's own request (the usual one on the decide path)
            return None
        for value in reversed(b",".join(forwarded).split(b",")):
            address = value.strip().decode("latin-1")[:64]
            if address and not self.trusted(address):
                return address
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.off:
            await self.app(scope, receive, send)
            return
        # A dict built in C rather than a loop in Python over every header: the same last
        # value of each (``admit`` reads every X-Forwarded-For value when there is one).
        headers = dict(scope["headers"])
        refused = self.admit(scope, headers)
        if refused is not None:
            await answer(send, refused)
        elif self.max_body and b"content-length" not in headers:
            await self._streamed(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def admit(self, scope: Scope, headers: dict[bytes, bytes]) -> Message | None:
        """Take this request's tokens; the 429 or 413 answer (``answer`` sends it) if it is
        refused, else None. ``headers``: ``dict(scope["headers"])``. A body without
        ``Content-Length`` is left to ``_streamed``."""
        authorization = headers.get(b"authorization")
        forwarded: list[bytes] = []
        if b"x-forwarded-for" in headers:  # it may repeat: every value counts
            forwarded = [v for n, v in scope["headers"] if n == b"x-forwarded-for"]
        key = self._key(authorization) if authorization is not None else None
        now = monotonic()
        if (key is None or key[1]) and self.per_ip is not None:
            ip = self.client_ip(scope, forwarded)
            if ip is not None:
                wait = self.per_ip.take(ip, now)
                if wait:
                    limit = f"the per-IP limit of {self.limits.per_ip:g} requests/s for {ip}"
                    return self._too_many(limit, wait)
        buckets = self._own(key[2]) if key is not None and key[2] else self.per_key
        if key is not None and buckets is not None:
            wait = buckets.take(key[0], now)
            if wait:
                limit = f"the {key[0]} key's limit of {buckets.rate:g} requests/s"
                return self._too_many(limit, wait)
        length = headers.get(b"content-length")
        if self.max_body and length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                return self._too_large()
        return None

    def _own(self, rate: float) -> Buckets:
        """The buckets of the keys made with ``rate`` requests/s of their own."""
        found = self._rated.get(rate)
        if found is None:
            found = self._rated[rate] = Buckets(rate, self.limits.burst)
        return found

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body without ``Content-Length`` (chunked): counted as it arrives; once over the cap
        the app's reading fails and its answer, whatever it is, becomes the 413."""
        size = 0
        over = started = False

        async def counted() -> Message:
            nonlocal size, over
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.max_body:
                over = True
                raise _TooLarge
            return message

        async def send_unless_over(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_unless_over)
        except Exception:
            if not over:
                raise
        if over and not started:
            await answer(send, self._too_large())

    def _too_many(self, limit: str, wait: float) -> Message:
        seconds = max(1, math.ceil(wait))
        return _error(429, "rate_limited", f"over {limit} (limits.burst {self.limits.burst:g} s); "
                      f"retry after {seconds} s", [(b"retry-after", b"%d" % seconds)])  # fmt: skip

    def _too_large(self) -> Message:
        return _error(413, "request_too_large", f"the request body is over "
                      f"{self.limits.max_body_kb} KB (limits.max_body_kb)", [])  # fmt: skip
