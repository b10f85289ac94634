"""Key checks: who a request acts for (``edge.access.scopes.Principal``) and whether it may.

A key travels as HTTP Basic username (what the Segment and Rudder SDKs send) or as a Bearer
token; the write key (or a browser key) may also travel as ``writeKey`` in the body. The
bootstrap keys (``KAIROS_WRITE_KEY``: track and decide; ``KAIROS_SECRET_KEY``: admin) and the
named keys (``edge.access.keys``) are checked alike. A missing, wrong, revoked or expired key
is a 401 that does not say which; a key without the operation's scope, or used from an origin
or address it is not allowed from, is a 403 that says what it lacks.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from collector.errors import Unauthorized
from edge.access.scopes import BOOTSTRAP_SECRET, BOOTSTRAP_WRITE, Principal
from edge.api.responses import Problem, error

__all__ = ["holds", "identify", "key_from_header", "needs", "permit", "principal", "require"]

PRINCIPAL = "kairos.principal"  # where a checked request keeps who it acts for (its scope)


def key_from_header(authorization: str | None) -> str | None:
    """The key in an ``Authorization`` header (Basic username or Bearer token), if any."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the Authorization header is not valid HTTP Basic") from None
        return decoded.partition(":")[0] or None
    raise Unauthorized(f"unsupported Authorization scheme {scheme!r}: use Basic or Bearer")


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def identify(given: str | None, state: Any) -> Principal:
    """Who the key ``given`` belongs to; Unauthorized if it is missing or is no key (wrong,
    revoked and expired keys get the same answer). ``state``: the app's (settings, keyring)."""
    if given is None:
        raise Unauthorized("missing key: send it as HTTP Basic username or Bearer token")
    settings = state["settings"] if isinstance(state, dict) else state.settings
    if _same(given, settings.secret_key):
        return BOOTSTRAP_SECRET
    if _same(given, settings.write_key):
        return BOOTSTRAP_WRITE
    keyring = state["keyring"] if isinstance(state, dict) else state.keyring
    found: Principal | None = keyring.find(given)
    if found is None:
        raise Unauthorized("wrong key: no key of this engine (or one revoked or expired)")
    return found


def _address(scope: dict[str, Any], headers: dict[bytes, bytes], state: Any) -> str | None:
    limits = state["limits"] if isinstance(state, dict) else state.limits
    forwarded = [v for n, v in scope["headers"] if n == b"x-forwarded-for"]
    found = limits.client_ip(scope, forwarded) if b"x-forwarded-for" in headers else None
    client = scope.get("client")
    return found or (client[0] if client else None)


def permit(who: Principal, scope: str, request: dict[str, Any], headers: dict[bytes, bytes],
           state: Any) -> None:  # fmt: skip
    """``Problem`` 403 unless ``who`` holds ``scope`` and may call from where ``request`` (an
    ASGI scope) comes from."""
    if not who.allows(scope):
        held = ", ".join(sorted(who.scopes))
        public = " (it is public: browsers, SDKs)" if who is BOOTSTRAP_WRITE else ""
        raise Problem(403, "forbidden",
                      f"this endpoint needs the {scope!r} scope: the {who.name}{public} has "
                      f"{held}")  # fmt: skip
    if who.origins:
        origin = headers.get(b"origin", b"").decode("latin-1") or "(none)"
        if origin not in who.origins:
            raise Problem(403, "forbidden", f"the key {who.name!r} is not allowed from origin "
                          f"{origin!r}: allowed are {', '.join(who.origins)}")  # fmt: skip
    if who.networks:
        address = _address(request, headers, state)
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            ip = None
        if ip is None or not any(ip in ipaddress.ip_network(n, strict=False) for n in who.networks):
            raise Problem(403, "forbidden", f"the key {who.name!r} is not allowed from address "
                          f"{address!r}: allowed are {', '.join(who.networks)}")  # fmt: skip


def require(request: Request, scope: str, given: str | None = None) -> Principal:
    """The request's principal if its key (the header's, else ``given``) holds ``scope``:
    Unauthorized (401) or ``Problem`` (403) otherwise. Kept for ``principal``."""
    key = key_from_header(request.headers.get("authorization")) or given
    who = identify(key, request.state)
    permit(who, scope, request.scope, dict(request.scope["headers"]), request.state)
    request.scope[PRINCIPAL] = who
    return who


def principal(request: Request) -> Principal | None:
    """Who a checked request acts for (None before ``require``)."""
    return request.scope.get(PRINCIPAL)


def holds(request: Request, scope: str) -> bool:
    """Whether the checked request's principal holds ``scope``."""
    who = principal(request)
    return who is not None and who.allows(scope)


def needs(
    scope: str,
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Guard a Starlette endpoint with ``scope``; ``Problem`` raised inside becomes its answer.
    The scope is the endpoint's ``needs`` attribute too (tests compare it with the OpenAPI
    document's)."""

    def guard(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            try:
                require(request, scope)
                return await endpoint(request)
            except Unauthorized as exc:
                return error(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
            except Problem as exc:
                return exc.response()

        guarded.needs = scope  # type: ignore[attr-defined]
        return guarded

    return guard
