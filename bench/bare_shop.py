"""The load test's baseline: a bare Starlette app answering every scenario endpoint at once.

Same paths and answer shapes as the engine (so the Locust users walk the same steps), but each
answer is a constant of realistic size: no key check, no store, no choice, no logging. Served on
one uvicorn worker like the engine's API, it shows what this machine and this load generator
can do with HTTP alone, so the engine's figures read as ratios to it.

    python -m uvicorn bench.bare_shop:app --port 8001
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from profiles.shoppers import CATALOG

_BASE = "http://127.0.0.1"
_ITEMS = [{"id": p.id, "name": p.name, "url": f"{_BASE}/demo/products/{p.id}",
           "image": f"{_BASE}/demo/img/{p.id}.svg", "price": p.price, "currency": "USD",
           "category": p.category} for p in CATALOG[:4]]  # fmt: skip
_CARDS = "".join(f'<a class="card" href="{i["url"]}" data-kairos-item="{i["id"]}"><img src="'
                 f'{i["image"]}"><span>{i["name"]}</span><b>${i["price"]}</b></a>'
                 for i in _ITEMS)  # fmt: skip


def _decision(variant: str, content: str | None, items: bool = False) -> dict[str, object]:
    found: dict[str, object] = {"decisionId": "d_000000000000000000000000", "variant": variant,
                                "content": content, "propensity": 0.5}  # fmt: skip
    if items:
        found |= {"strategy": variant, "items": _ITEMS}
    return found


_DECIDE = json.dumps({"decisions": {
    "home_hero": _decision("sale", '<a class="hero sale" href="/demo/c/jackets"><h1>20% off '
                                   "jackets</h1><p>This week only.</p></a>"),
    "pdp_recs": _decision("viewed_together", f'<div class="recs">{_CARDS}</div>', items=True),
    "cart_recs": _decision("bought_together", f'<div class="recs">{_CARDS}</div>', items=True),
    "cart_offer": _decision("free_shipping", '<p class="offer">Free shipping.</p>'),
}}).encode()  # fmt: skip
_REC = {"decisionId": "d_000000000000000000000000", "placement": "cart_recs",
        "strategy": "popular", "variant": "popular", "propensity": 0.5, "fallback": None,
        "items": [{**i, "url": f"{_BASE}/v1/r/d_000000000000000000000000/{i['id']}"}
                  for i in _ITEMS]}  # fmt: skip
_ONE = json.dumps(_REC).encode()
_HTML = "<table>" + "".join(f"<tr><td>{i['name']}</td></tr>" for i in _ITEMS) * 8 + "</table>"
_RENDERED = json.dumps({**_REC, "html": _HTML, "text": "Recommended for you\n" * 8}).encode()
_PIXEL = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
_SDK = Path(__file__).resolve().parent.parent / "edge" / "static" / "kairos.min.js"
_SCRIPT = _SDK.read_bytes() if _SDK.exists() else b"/* sdk */" * 1000
_JSON = "application/json"


async def batch(request: Request) -> Response:
    await request.body()
    return Response(b'{"success":true}', media_type=_JSON)


async def decide(request: Request) -> Response:
    await request.body()
    return Response(_DECIDE, media_type=_JSON)


async def sdk(request: Request) -> Response:
    return Response(_SCRIPT, media_type="text/javascript")


async def recommendations(request: Request) -> Response:
    return Response(_ONE, media_type=_JSON)


async def render(request: Request) -> Response:
    return Response(_RENDERED, media_type=_JSON)


async def send(request: Request) -> Response:
    recipients = json.loads(await request.body()).get("recipients", [])
    results = [{"recipient": r, **_REC} for r in recipients]
    return Response(json.dumps({"results": results}).encode(), media_type=_JSON)


async def pixel(request: Request) -> Response:
    return Response(_PIXEL, media_type="image/gif")


async def click(request: Request) -> Response:
    return RedirectResponse(f"{_BASE}/demo", 302)


app = Starlette(
    routes=[
        Route("/v1/batch", batch, methods=["POST"]),
        Route("/v1/decide", decide, methods=["POST"]),
        Route("/sdk/v1/kairos.js", sdk),
        Route("/v1/recommendations/batch", send, methods=["POST"]),
        Route("/v1/recommendations/{id:path}/render", render),
        Route("/v1/recommendations/{id:path}", recommendations),
        Route("/v1/o/{decision}.gif", pixel),
        Route("/v1/r/{decision}/{item:path}", click),
    ]
)
