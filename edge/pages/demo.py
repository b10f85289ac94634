"""The demo shop under ``/demo``: pages with personalized slots, served by the engine itself.

Home (a hero banner, ``home_hero``), category listings, product pages (``pdp_recs``), a cart
(``cart_offer`` and ``cart_recs``) and a checkout that sends "Order Completed". The pages load
the SDK from ``/sdk/v1/kairos.js`` through the snippet, so what they do is what a real shop
would do. The cart lives in the browser (localStorage), as the demo has no backend of its own.

``kairos up --demo`` calls ``install`` (the catalog: the shopper simulator's products, and the
four placements unless they exist) and then ``seed`` in the background: simulated shoppers'
last two weeks as events (so popular and co-occurrence lists have something in them at once),
then a few hundred of their sessions live, whose pages ask ``/v1/decide`` and whose shoppers
click and order by what they were shown (``profiles.live``), so results, charts and off-policy
evaluation have decisions to show within a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from collector.spool import STREAM
from decisions.placements import DEFS, PLACEMENT, put_placement
from edge.routes.sdk import VERSION, snippet
from profiles.live import LiveShop, slots_from_api
from profiles.products import ITEM, ITEMS, Item, put_items
from profiles.shoppers import CATALOG, ShopperStream, send
from profiles.strategies import RECS, request_refresh

__all__ = ["LIVE_SESSIONS", "PLACEMENTS", "install", "routes", "seed"]

log = logging.getLogger("kairos.demo")

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "demo"),
    autoescape=select_autoescape(default=True),
)
_CARD = (
    '<div class="recs">{% for i in items %}<a class="card" href="{{ i.url }}" '
    'data-kairos-item="{{ i.id }}"><img src="{{ i.image }}" alt="" width="160" height="120">'
    '<span>{{ i.name }}</span><b>${{ "%.2f"|format(i.price or 0) }}</b></a>{% endfor %}</div>'
)
_HERO = (
    '<a class="hero {cls}" href="/demo/c/{category}"><h1>{headline}</h1><p>'
    "{{% if first_name %}}Hi {{{{ first_name }}}}: {{% endif %}}{text}</p>"
    '<span class="cta">{cta}</span></a>'
)
PLACEMENTS: dict[str, dict[str, Any]] = {
    "home_hero": {
        "name": "Home hero",
        "default": "classic",
        "policy": {"kind": "thompson"},
        "variants": [
            {
                "key": "classic",
                "template": _HERO.format(
                    cls="classic",
                    category="shoes",
                    headline="New season shoes",
                    text="Step into autumn with our new collection.",
                    cta="Shop shoes",
                ),
            },
            {
                "key": "sale",
                "template": _HERO.format(
                    cls="sale",
                    category="jackets",
                    headline="20% off jackets",
                    text="This week only: every jacket, a fifth off.",
                    cta="Shop the sale",
                ),
            },
            {
                "key": "bags",
                "template": _HERO.format(
                    cls="bags",
                    category="bags",
                    headline="Carry it all",
                    text="Bags for every day and every trip.",
                    cta="Shop bags",
                ),
            },
        ],
    },  # fmt: skip
    "pdp_recs": {
        "name": "Product page: you may also like",
        "recommend": {"n": 4},
        "reward": {"kind": "items", "window_hours": 72},
        "variants": [
            {"key": k, "template": _CARD}
            for k in ("viewed_together", "bought_together", "favourite_category", "popular")
        ],
    },  # fmt: skip
    "cart_recs": {
        "name": "Cart: complete your order",
        "recommend": {"n": 4},
        "reward": {"kind": "items", "window_hours": 72},
        "variants": [
            {"key": k, "template": _CARD} for k in ("bought_together", "viewed_together", "popular")
        ],
    },  # fmt: skip
    "cart_offer": {
        "name": "Cart offer",
        "default": "none",
        "policy": {"kind": "thompson"},
        "reward": {"kind": "conversion", "event": "Order Completed", "window_hours": 24},
        "variants": [
            {"key": "none", "content": None},
            {
                "key": "free_shipping",
                "template": '<p class="offer">Free shipping on this order — no code needed.</p>',
            },
            {
                "key": "ten_off",
                "template": '<p class="offer">10% off at checkout with code <b>TEN</b>.</p>',
            },
        ],
    },  # fmt: skip
}
CATEGORIES = sorted({p.category for p in CATALOG})
LIVE_SESSIONS = 150  # about 400 decisions: seconds of work, enough for every variant to show


def _items(base: str) -> list[Item]:
    return [Item(id=p.id, name=p.name, url=f"{base}/demo/products/{p.id}", category=p.category,
                 price=p.price, image=f"{base}/demo/img/{p.id}.svg", currency="USD")
            for p in CATALOG]  # fmt: skip


def install(client: redis.Redis, base: str) -> list[str]:
    """The demo catalog (its URLs under ``base``), and the placements that do not exist yet;
    returns the placements created."""
    put_items(client, _items(base))
    created = []
    for key, body in PLACEMENTS.items():
        if not client.hexists(DEFS, key):
            put_placement(client, key, PLACEMENT.decode(msgspec.json.encode(body)))
            created.append(key)
    return created


def seed(
    url: str,
    write_key: str,
    secret_key: str,
    client: redis.Redis,
    shoppers: int = 600,
    sessions: int = LIVE_SESSIONS,
) -> threading.Thread:
    """In the background, into the running engine at ``url``: once the profile updater reads the
    spool, simulated shoppers' last 14 days as events; once the recommendation lists are
    recomputed from them, ``sessions`` of those shoppers' sessions live, deciding every
    placement the engine has on the pages that show it."""

    def run() -> None:
        _wait_for_reader(client, "profiles")
        start = datetime.now(UTC) - timedelta(days=14)
        stream = ShopperStream(shoppers=shoppers, days=13.9, seed=2026, start=start)
        try:
            sent = send(stream.messages(), url, write_key)
            request_refresh(client)
            _wait_for(lambda: client.hexists(RECS, "popular"), 60.0)
            slots = slots_from_api(url, secret_key)
            live = LiveShop(stream.shoppers, slots, seed=2026).run(url, write_key, sessions)
        except Exception as exc:  # the demo must not take the engine down
            log.warning("demo history not sent", extra={"error": str(exc)})
            return
        log.info("demo history sent", extra={
            "events": sent + live.events, "live_sessions": live.sessions,
            "decisions": live.decisions, "clicks": live.clicks, "orders": live.orders})  # fmt: skip

    thread = threading.Thread(target=run, name="demo-seed", daemon=True)
    thread.start()
    return thread


def _wait_for_reader(client: redis.Redis, group: str, timeout: float = 120.0) -> None:
    """Until a consumer of ``group`` has read the spool (if that group exists: a profile updater
    runs on this spool). The sink stamps events with the profile ids the updater resolves and
    waits for an updater that is reading; history sent while the updater process is still
    starting would otherwise be stored without profile ids, all of it at once."""

    def reading() -> bool:
        try:
            groups = {_text(g["name"]) for g in client.xinfo_groups(STREAM)}
            return group not in groups or bool(client.xinfo_consumers(STREAM, group))
        except redis.ResponseError:  # no spool: no worker group was made, so no updater here
            return True

    if not _wait_for(reading, timeout):
        log.warning("the profile updater is not reading the spool; sending the demo anyway")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _page(request: Request, name: str, status: int = 200, **values: Any) -> Response:
    settings = request.state.settings
    host = str(request.base_url).rstrip("/")
    html = _TEMPLATES.get_template(name).render(
        snippet=Markup(snippet(host, settings.write_key, {"slotTimeout": 800})),
        categories=CATEGORIES, sdk_version=VERSION, **values,
    )  # fmt: skip
    return HTMLResponse(html, status)


async def _products(request: Request, ids: list[str]) -> list[Item]:
    """The catalog's items ``ids`` (those it has)."""
    found = await request.state.redis.hmget(ITEMS, ids)
    return [msgspec.structs.replace(ITEM.decode(raw), id=i) for i, raw in zip(ids, found) if raw]


async def home(request: Request) -> Response:
    return _page(
        request, "home.html", products=await _products(request, [p.id for p in CATALOG[::7]])
    )


async def category(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in CATEGORIES:
        return _page(request, "missing.html", 404, what=f"category {name!r}")
    found = await _products(request, [p.id for p in CATALOG if p.category == name])
    return _page(request, "category.html", category=name, products=found)


async def product(request: Request) -> Response:
    found = await _products(request, [request.path_params["id"]])
    if not found:
        return _page(request, "missing.html", 404, what="this product")
    return _page(request, "product.html", product=found[0])


async def cart(request: Request) -> Response:
    return _page(request, "cart.html")


async def checkout(request: Request) -> Response:
    return _page(request, "checkout.html")


async def image(request: Request) -> Response:
    """A placeholder picture per product: its name on its category's colour."""
    product_id = request.path_params["id"]
    found = next((p for p in CATALOG if p.id == product_id), None)
    hue = CATEGORIES.index(found.category) * 60 if found else 0
    label = found.name if found else "?"
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">'
        f'<rect width="320" height="240" fill="hsl({hue},55%,82%)"/>'
        f'<text x="160" y="128" font-family="sans-serif" font-size="26" text-anchor="middle" '
        f'fill="hsl({hue},40%,30%)">{label}</text></svg>'
    )
    return Response(svg, media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip


routes = [
    Route("/demo", home, methods=["GET"]),
    Route("/demo/c/{name}", category, methods=["GET"]),
    Route("/demo/products/{id}", product, methods=["GET"]),
    Route("/demo/cart", cart, methods=["GET"]),
    Route("/demo/checkout", checkout, methods=["GET"]),
    Route("/demo/img/{id}.svg", image, methods=["GET"]),
]
