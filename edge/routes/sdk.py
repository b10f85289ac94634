"""The browser SDK, served by the engine: ``/sdk/kairos.js`` (latest), ``/sdk/v1/kairos.js``
(the major version the snippet loads) and ``/sdk/<version>/kairos.js`` (that exact build).

The file is ``edge/routes/static/kairos.min.js``, built from ``sdk-js/src/kairos.js`` by
``npm run build`` in ``sdk-js/`` (a test checks the two agree). Answers carry an ETag (a
revalidation is a 304), gzip when the browser takes it, and caching by how stable the path is:
an exact version never changes (a year, immutable), the major version and latest an hour and
five minutes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["SDK_FILE", "VERSION", "routes", "snippet"]

SDK_FILE = Path(__file__).parent / "static" / "kairos.min.js"
SNIPPET_FILE = Path(__file__).parent / "static" / "snippet.html"  # copied from sdk-js/
_VERSION = re.compile(rb"Kairos browser SDK (\d+\.\d+\.\d+)")  # its first line


@lru_cache(maxsize=1)
def _build() -> tuple[bytes, bytes, str, str]:
    """(the script, gzipped, its ETag, its version)."""
    body = SDK_FILE.read_bytes()
    found = _VERSION.search(body)
    version = found.group(1).decode() if found else "0.0.0"
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return body, gzip.compress(body, 9, mtime=0), etag, version


VERSION = _build()[3] if SDK_FILE.exists() else "0.0.0"


def snippet(host: str, write_key: str, options: dict[str, Any] | None = None) -> str:
    """The loader snippet (``sdk-js/snippet.html``) for an engine at ``host``."""

    def js(value: Any) -> str:
        return json.dumps(value).replace("</", "<\\/")

    text = SNIPPET_FILE.read_text()
    text = text.replace('"https://kairos.example.com"', js(host))
    text = text.replace('"YOUR_WRITE_KEY"', js(write_key))
    return text.replace(",{});", f",{js(options or {})});")


_MAX_AGE = {"latest": 300, "major": 3600, "exact": 31_536_000}


async def script(request: Request) -> Response:
    body, zipped, etag, version = _build()
    wanted = request.path_params.get("version")
    if wanted is None:
        kind = "latest"
    elif wanted == "v" + version.split(".")[0]:
        kind = "major"
    elif wanted == version:
        kind = "exact"
    else:
        return Response(f"// no Kairos SDK {wanted}; this engine serves {version}\n", 404,
                        media_type="application/javascript")  # fmt: skip
    cache = f"public, max-age={_MAX_AGE[kind]}" + (", immutable" if kind == "exact" else "")
    headers = {"ETag": etag, "Cache-Control": cache, "Vary": "Accept-Encoding",
               "Access-Control-Allow-Origin": "*", "X-Kairos-SDK": version}  # fmt: skip
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = zipped
    return Response(body, headers=headers, media_type="application/javascript")


routes = [
    Route("/sdk/kairos.js", script, methods=["GET", "HEAD"]),
    Route("/sdk/{version}/kairos.js", script, methods=["GET", "HEAD"]),
]
