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

Signing in (``/demo/login``: a first name and an email, no password) does what a shop's server
does for identity verification (``decisions.identity``): it names the shopper with a new user
id, identifies them server-side (their traits, and the browsing of this device), and renders
every page after it with ``{userId, userHash}`` in the snippet's options, signed with the
engine's identity secret; so the hero greets them by their first name. The demo signs only the
ids it made itself, kept in a cookie under that signature: it is no oracle for other user ids.
(No CSRF token: at worst another site signs a browser into a new, empty demo account.)
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import redis
import redis.asyncio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from collector import wire
from collector.errors import SpoolFull
from collector.leases import members_key
from collector.partitions import layout_of
from decisions.identity import Verifier, user_hash
from decisions.placements import DEFS, PLACEMENT, put_placement
from edge.access import audit
from edge.routes.sdk import VERSION, snippet
from profiles.live import LiveShop, slots_from_api
from profiles.products import ITEM, ITEMS, Item, get_items, put_items
from profiles.shoppers import CATALOG, ShopperStream, send
from profiles.strategies import RECS, request_refresh

__all__ = ["LIVE_SESSIONS", "PLACEMENTS", "install", "installed", "routes", "seed"]

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
    returns the placements created. Each change is in the audit log, as the OS user's who ran
    ``kairos up --demo``."""
    items = _items(base)
    ids = [str(item.id) for item in items]
    was = get_items(client, ids)
    put_items(client, items)
    before, after = audit.changed_items(ids, was, get_items(client, ids))
    if after:
        audit.record_local(client, "catalog", "items", "upsert", before, after)
    created = []
    for key, body in PLACEMENTS.items():
        if not client.hexists(DEFS, key):
            put_placement(client, key, PLACEMENT.decode(msgspec.json.encode(body)))
            audit.record_local(client, "placement", key, "create", None,
                               msgspec.json.decode(client.hget(DEFS, key)))  # fmt: skip
            created.append(key)
    return created


async def installed(client: redis.asyncio.Redis) -> bool:
    """Whether ``install`` has run against this Redis (the catalog holds the demo's products);
    False when Redis does not answer within a second: the sign-in form must show regardless."""
    try:
        return bool(await asyncio.wait_for(client.hexists(ITEMS, CATALOG[0].id), 1.0))
    except (TimeoutError, redis.RedisError, OSError):
        return False


def seed(
    url: str,
    write_key: str,
    secret_key: str,
    client: redis.Redis,
    shoppers: int = 600,
    sessions: int = LIVE_SESSIONS,
    identity_secret: str = "",
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
            live = LiveShop(stream.shoppers, slots, seed=2026).run(
                url, write_key, sessions, identity_secret
            )
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
            first = layout_of(client).partition(0).log
            groups = {_text(g["name"]) for g in client.xinfo_groups(first)}
            return group not in groups or bool(client.zcard(members_key(group)))
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
    options: dict[str, Any] = {"slotTimeout": 800}
    shopper = _shopper(request)
    if shopper is not None:  # a page rendered for a signed-in shopper: signed server-side
        options.update(userId=shopper, userHash=user_hash(settings.identity_secret, shopper))
    html = _TEMPLATES.get_template(name).render(
        snippet=Markup(snippet(host, settings.write_key, options)), signed_in=shopper is not None,
        categories=CATEGORIES, sdk_version=VERSION, **values,
    )  # fmt: skip
    return HTMLResponse(html, status)


# -- signing in --

SHOPPER = "kairos_demo"  # cookie: "<user id>.<its userHash>", made by the sign-in
_SHOPPER_ID = re.compile(r"demo-[0-9a-f]{16}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")


def _shopper(request: Request) -> str | None:
    """The signed-in shopper's user id, if the cookie is one the demo made."""
    uid, _, signature = request.cookies.get(SHOPPER, "").partition(".")
    if not _SHOPPER_ID.fullmatch(uid):
        return None
    verifier = Verifier(request.state.settings.identity_secret)
    return uid if verifier.verified(uid, signature) else None


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _page(request, "login.html")
    form = await _form(request)
    first_name, email = form.get("first_name", "").strip(), form.get("email", "").strip()
    problem = None
    if not 1 <= len(first_name) <= 40:
        problem = "first_name: your first name, 1 to 40 characters"
    elif email and not _EMAIL.fullmatch(email):
        problem = "email: an address like ada@example.com, or nothing"
    if problem:
        return _page(request, "login.html", 400, error=problem, first_name=first_name[:40])
    uid = f"demo-{secrets.token_hex(8)}"
    traits = {"first_name": first_name, **({"email": email} if email else {})}
    device = request.cookies.get("kairos_aid", "")  # the SDK's anonymous id: its browsing too
    now = datetime.now(UTC)
    message = wire.Identify(
        user_id=uid, anonymous_id=device if 0 < len(device) <= 255 else None,
        message_id=f"demo-login-{uuid.uuid4()}", timestamp=now, received_at=now,
        traits=msgspec.Raw(msgspec.json.encode(traits)),
        context=msgspec.Raw(b'{"library": {"name": "kairos-demo"}}'),
    )  # fmt: skip
    try:
        await request.state.spool.append_messages([message])
    except (SpoolFull, redis.RedisError) as exc:
        log.warning("demo sign-in not recorded", extra={"error": str(exc)})
        return _page(request, "login.html", 503, error="The shop is busy: try again shortly.")
    response = RedirectResponse("/demo", 303)
    signature = user_hash(request.state.settings.identity_secret, uid)
    response.set_cookie(
        SHOPPER, f"{uid}.{signature}", max_age=30 * 86400, httponly=True, samesite="lax",
        secure=request.url.scheme == "https", path="/demo",
    )  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    """Forget the shopper; the next page tells the SDK to (``kairos.reset()``)."""
    response = RedirectResponse("/demo?signed_out=1", 303)
    response.delete_cookie(SHOPPER, path="/demo")
    return response


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    return {} if len(body) > 4096 else dict(parse_qsl(body.decode("utf-8", "replace")))


async def _products(request: Request, ids: list[str]) -> list[Item]:
    """The catalog's items ``ids`` (those it has)."""
    found = await request.state.redis.hmget(ITEMS, ids)
    return [msgspec.structs.replace(ITEM.decode(raw), id=i) for i, raw in zip(ids, found) if raw]


async def home(request: Request) -> Response:
    found = await _products(request, [p.id for p in CATALOG[::7]])
    signed_out = "signed_out" in request.query_params and _shopper(request) is None
    return _page(request, "home.html", products=found, signed_out=signed_out)


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
    Route("/demo/login", login, methods=["GET", "POST"]),
    Route("/demo/logout", logout, methods=["POST"]),
    Route("/demo/c/{name}", category, methods=["GET"]),
    Route("/demo/products/{id}", product, methods=["GET"]),
    Route("/demo/cart", cart, methods=["GET"]),
    Route("/demo/checkout", checkout, methods=["GET"]),
    Route("/demo/img/{id}.svg", image, methods=["GET"]),
]
