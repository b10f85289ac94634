"""Key checks. The write key is public (browsers, SDKs); the secret key guards everything else.

Both are accepted as HTTP Basic username (what the Segment and Rudder SDKs send) or as a Bearer
token; the write key may also travel as ``writeKey`` in the body. A missing or wrong key is a
401; the write key where the secret key is needed is a 403 that says so.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from collector.errors import Unauthorized
from edge.api.responses import Problem, error

__all__ = ["key_from_header", "require_key", "require_secret", "secret"]


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


def require_key(given: str | None, expected: str, what: str) -> None:
    if given is None:
        raise Unauthorized(f"missing {what}: send it as HTTP Basic username or Bearer token")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(f"wrong {what}")


_WRITE_KEY_HERE = (
    "this endpoint needs the secret key: the write key is public (browsers, SDKs) and cannot "
    "read or change anything here"
)


def require_secret(request: Request) -> None:
    """The request must carry the secret key: Unauthorized (401) if it has none or a wrong one,
    ``Problem`` 403 if it has the write key."""
    given = key_from_header(request.headers.get("authorization"))
    settings = request.state.settings
    try:
        require_key(given, settings.secret_key, "secret key")
    except Unauthorized:
        if given is not None and hmac.compare_digest(given.encode(), settings.write_key.encode()):
            raise Problem(403, "forbidden", _WRITE_KEY_HERE) from None
        raise


def secret(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Guard a Starlette endpoint with the secret key; ``Problem`` raised inside becomes its
    answer."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            require_secret(request)
            return await endpoint(request)
        except Unauthorized as exc:
            return error(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
        except Problem as exc:
            return exc.response()

    return guarded
