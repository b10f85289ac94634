"""Locust scenarios: shoppers on the demo shop, and an email system pulling recommendations.

Two kinds of users, as the engine meets them in production:

- ``Shopper`` (the browser SDK's traffic, write key): a session lands on the home page (the SDK
  script on a first visit, ``/v1/decide`` for the hero, the page view), browses products (each a
  ``/v1/decide`` of the product page's recommendations with the product in view, "Product
  Viewed", "Decision Viewed"; now and then a click on a recommended item, which is the next
  product), adds some to the cart ("Product Added", flushed at once as the SDK does), looks at
  the cart (``cart_offer`` and ``cart_recs``) and sometimes orders, logging in (``identify``
  with a user id and email) on a first order. Events go to ``/v1/batch`` in the SDK's form
  (``text/plain``, the write key in the body, one batch per page). Some visitors come back
  with the same anonymousId (and user id, once logged in) in a later session.
- ``EmailSystem`` (a server, secret key): recommendations for a recipient as JSON
  (``GET /v1/recommendations/{id}``) or as a rendered block (``…/render``), and sends of 50
  recipients at once (``POST /v1/recommendations/batch``); readers then open some emails (the
  pixel) and click some items (the tracked redirect). Recipients are the demo history's
  shoppers, this run's shoppers, and people the engine does not know yet.

Requests are named by endpoint ("POST /v1/decide", "GET /v1/recommendations/[id]") so stats
group per endpoint. Placements and catalog are the demo shop's (``kairos up --demo``). Options
(or environment): ``--write-key`` (KAIROS_WRITE_KEY), ``--secret-key`` (KAIROS_SECRET_KEY),
``--identity-secret`` (KAIROS_IDENTITY_SECRET: logged-in shoppers' decides carry their
``userHash``, as a shop that signs its pages sends it; without it they are decided for the device),
``--think`` seconds between a user's steps (mean; default 1), ``--rate`` requests/s for all
users together (paced on one shared schedule; 0: think time only), ``--seed``, ``--counters``
(a JSON file for decision outcomes: how many had content, which fell back to defaults and why, and
``to_log``: how many decisions 200 answers carried that the engine must have logged).

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import locust.stats
from locust import FastHttpUser, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decisions.identity import user_hash  # noqa: E402
from profiles.shoppers import CATALOG, DEVICES, Product  # noqa: E402

SDK_VERSION = "1.0.0"
EMAIL_PLACEMENT = "cart_recs"
SEEDED = 600  # the demo's simulated shoppers (edge.pages.demo.seed): sim-0 … sim-599
_CATEGORIES = sorted({p.category for p in CATALOG})
_BY_ID = {p.id: p for p in CATALOG}
_users = itertools.count()
_returning: list[tuple[str, str | None]] = []  # (anonymousId, userId) of visitors who may return
_live: list[str] = []  # identities of this run's shoppers, as email recipients
COUNTS: Counter[str] = Counter()  # decision outcomes, written to --counters at the end
# Answered without a decision of the policy's, and so not logged (decisions.choice).
_UNLOGGED = ("suppressed", "redis_unavailable", "timeout", "catalog_unavailable")
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 2  # the runner's progress line reads the history


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--write-key", env_var="KAIROS_WRITE_KEY", default="", help="write key")
    parser.add_argument("--secret-key", env_var="KAIROS_SECRET_KEY", default="", help="secret key")
    parser.add_argument("--identity-secret", env_var="KAIROS_IDENTITY_SECRET", default="",
                        help="signs logged-in shoppers' userHash")  # fmt: skip
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between steps")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s of all users, paced")
    parser.add_argument("--seed", type=int, default=7, help="seed of the users' choices")
    parser.add_argument("--counters", default="", help="write decision outcomes here (JSON)")


@events.quitting.add_listener
def _write_counters(environment: Any, **_: Any) -> None:
    path = environment.parsed_options.counters if environment.parsed_options else ""
    if path:
        Path(path).write_text(json.dumps(dict(COUNTS), sort_keys=True))


class _Pacer:
    """One schedule for all users: request k may start at k / rate seconds, never earlier
    (a stall is not caught up by a burst)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)  # gevent's, once locust has patched the standard library


_pacer: _Pacer | None = None


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    global _pacer
    rate = environment.parsed_options.rate if environment.parsed_options else 0.0
    _pacer = _Pacer(rate) if rate > 0 else None


class _Client(FastHttpUser):
    """Pacing, think time and checked JSON answers, shared by both kinds of users."""

    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        self.rng = random.Random(f"{options.seed if options else 7}-{next(_users)}")

    def wait_time(self) -> float:
        think = self.options.think if self.options else 1.0
        return self.rng.uniform(0.5, 1.5) * think

    def call(
        self, method: str, path: str, name: str, expect: int = 200, **kwargs: Any
    ) -> Any | None:
        """Send one request; the answer's JSON (None when it failed or is not JSON). A status
        other than ``expect`` is a failure, with the answer's text."""
        if _pacer is not None:
            _pacer.wait()
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as r:
            if r.status_code != expect:
                r.failure(f"{r.status_code}: {(r.text or '')[:200]}")
                return None
            if "json" not in (r.headers.get("content-type") or ""):
                return {}
            try:
                return r.json()
            except ValueError:
                r.failure("not JSON")
                return None

    def follow(self, url: str, name: str) -> None:
        """A link in an email: only the engine's part of it (the redirect, not the shop)."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        expect = 302 if "/v1/r/" in path else 200
        self.call("GET", path, name, expect=expect, allow_redirects=False)


class Shopper(_Client):
    """A visitor of the demo shop, as the browser SDK reports them."""

    weight = 9

    def on_start(self) -> None:
        super().on_start()
        self.device = self.rng.choice(list(DEVICES))

    @task
    def session(self) -> None:
        self.visit()
        self.landing()
        cart: list[Product] = []
        product: Product | None = None
        favourite = self.rng.choice(_CATEGORIES)
        for _ in range(1 + min(int(self.rng.expovariate(1 / 3)), 12)):
            self.wait()
            product = product or self.pick(favourite)
            product = self.product_page(product, cart)
        if cart:
            self.wait()
            if self.cart_page() and self.rng.random() < 0.6:
                self.wait()
                self.order(cart)
        if self.rng.random() < 0.4 and len(_returning) < 5_000:
            _returning.append((self.anonymous_id, self.user_id))

    # -- steps --

    def visit(self) -> None:
        """Who this session is: a returning visitor now and then, else a new one."""
        if _returning and self.rng.random() < 0.3:
            self.anonymous_id, self.user_id = _returning.pop(self.rng.randrange(len(_returning)))
            self.first_visit = False
        else:
            self.anonymous_id, self.user_id = str(uuid.uuid4()), None
            self.first_visit = True
            _live.append(f"anonymous_id:{self.anonymous_id}")
            del _live[:-5_000]
        self.session_id = int(time.time() * 1000)
        self.queue: list[dict[str, Any]] = []

    def landing(self) -> None:
        if self.first_visit:  # browsers cache the SDK for an hour
            self.call("GET", "/sdk/v1/kairos.js", "GET /sdk/v1/kairos.js")
        decided = self.decide(["home_hero"], "/demo")
        self.page("Home", "/demo")
        self.viewed(decided)
        self.flush()
        hero = decided.get("home_hero")
        if hero and not hero.get("fallback") and self.rng.random() < 0.2:
            self.clicked(hero, None)

    def product_page(self, product: Product, cart: list[Product]) -> Product | None:
        """The product's page; returns the next product if a recommended one was clicked."""
        path = f"/demo/products/{product.id}"
        decided = self.decide(["pdp_recs"], path, item=product.id)
        self.page("Product", path)
        self.track("Product Viewed", self.properties(product))
        self.viewed(decided)
        self.flush()
        if self.rng.random() < 0.25:
            cart.append(product)
            self.track("Product Added", {**self.properties(product), "quantity": 1})
            self.flush()
        recs = decided.get("pdp_recs") or {}
        items = [i for i in recs.get("items") or [] if i.get("id") in _BY_ID]
        if items and not recs.get("fallback") and self.rng.random() < 0.15:
            item = self.rng.choice(items)
            self.clicked(recs, item["id"])
            return _BY_ID[item["id"]]
        return None

    def cart_page(self) -> bool:
        decided = self.decide(["cart_offer", "cart_recs"], "/demo/cart")
        self.page("Cart", "/demo/cart")
        self.viewed(decided)
        self.flush()
        return bool(decided)

    def order(self, cart: list[Product]) -> None:
        self.page("Checkout", "/demo/checkout")
        if self.user_id is None and self.rng.random() < 0.5:  # logs in at a first order
            self.user_id = f"load-{uuid.uuid4().hex[:12]}"
            self.queue.append(
                self.message("identify", traits={"email": f"{self.user_id}@example.com"})
            )
            _live.append(f"user_id:{self.user_id}")
        self.track("Order Completed", {
            "order_id": f"o-{uuid.uuid4().hex[:12]}",
            "revenue": round(sum(p.price for p in cart), 2), "currency": "USD",
            "products": [{**self.properties(p), "quantity": 1} for p in cart],
        })  # fmt: skip
        self.flush()
        cart.clear()

    # -- what the SDK sends --

    def decide(self, placements: list[str], path: str, item: str | None = None) -> dict[str, Any]:
        context = self.page_context(path)
        if item is not None:
            context["item"] = item
        ask: dict[str, Any] = {"placements": placements, "anonymousId": self.anonymous_id,
                               "context": context, "writeKey": self.options.write_key}  # fmt: skip
        if self.user_id:
            ask["userId"] = self.user_id
            secret = getattr(self.options, "identity_secret", "")
            if secret:  # what the shop's server renders into the page
                ask["userHash"] = user_hash(secret, self.user_id)
        answer = self.call("POST", "/v1/decide", "POST /v1/decide", data=json.dumps(ask),
                           headers={"Content-Type": "text/plain"})  # fmt: skip
        if answer is None:
            return {}
        decisions = answer.get("decisions") or {}
        for key in placements:
            decision = decisions.get(key)
            if decision is None:
                COUNTS["missing"] += 1
                continue
            COUNTS["decisions"] += 1
            COUNTS["to_log"] += decision.get("fallback") not in _UNLOGGED
            if decision.get("fallback"):
                COUNTS[f"fallback:{decision['fallback']}"] += 1
            elif decision.get("content") or decision.get("items"):
                COUNTS["with_content"] += 1
        return decisions

    def properties(self, product: Product) -> dict[str, Any]:
        return {"product_id": product.id, "name": product.name, "category": product.category,
                "price": product.price, "url": f"{self.host}/demo/products/{product.id}",
                "image_url": f"{self.host}/demo/img/{product.id}.svg"}  # fmt: skip

    def pick(self, favourite: str) -> Product:
        liked = [p for p in CATALOG if p.category == favourite]
        return self.rng.choice(liked if self.rng.random() < 0.7 else CATALOG)

    def page_context(self, path: str) -> dict[str, Any]:
        return {
            "library": {"name": "kairos.js", "version": SDK_VERSION},
            "page": {"path": path, "url": self.host + path, "referrer": "", "title": "Demo shop"},
            "userAgent": DEVICES[self.device], "locale": "en-US",
            "screen": {"width": 390, "height": 844}, "sessionId": self.session_id,
        }  # fmt: skip

    def message(self, kind: str, **fields: Any) -> dict[str, Any]:
        path = fields.pop("path", "/demo")
        message = {"type": kind, "messageId": str(uuid.uuid4()),
                   "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                   "anonymousId": self.anonymous_id, "context": self.page_context(path),
                   **fields}  # fmt: skip
        if self.user_id:
            message["userId"] = self.user_id
        return message

    def page(self, name: str, path: str) -> None:
        url = self.host + path
        self.queue.append(self.message("page", name=name, path=path,
                                       properties={"path": path, "url": url}))  # fmt: skip

    def track(self, event: str, properties: dict[str, Any]) -> None:
        self.queue.append(self.message("track", event=event, properties=properties))

    def viewed(self, decided: dict[str, Any]) -> None:
        for key, decision in decided.items():
            if not decision.get("fallback"):
                properties = {"decisionId": decision["decisionId"], "placement": key,
                              "variant": decision["variant"]}  # fmt: skip
                self.track("Decision Viewed", properties)

    def clicked(self, decision: dict[str, Any], item_id: str | None) -> None:
        properties = {"decisionId": decision["decisionId"], "variant": decision["variant"]}
        if item_id is not None:
            properties["itemId"] = item_id
        self.track("Decision Clicked", properties)
        self.flush()  # the SDK beacons on a click: the page may be left

    def flush(self) -> None:
        if not self.queue:
            return
        body = {"batch": self.queue, "writeKey": self.options.write_key,
                "sentAt": datetime.now(UTC).isoformat(timespec="milliseconds")}  # fmt: skip
        self.queue = []
        self.call("POST", "/v1/batch", "POST /v1/batch", data=json.dumps(body),
                  headers={"Content-Type": "text/plain"})  # fmt: skip


class EmailSystem(_Client):
    """A mailing system's server pulling recommendations with the secret key."""

    weight = 1

    def on_start(self) -> None:
        """One call of each kind first, readers opening and clicking until one has clicked: so
        even a short run covers every endpoint."""
        super().on_start()
        self.auth = (self.options.secret_key, "")
        self.eager = True
        self.one()
        self.rendered()
        self.send()

    def recipient(self) -> str:
        draw = self.rng.random()
        if draw < 0.3 and _live:
            return self.rng.choice(_live)
        n = self.rng.randrange(SEEDED)
        if draw < 0.6:
            return f"anonymous_id:sim-{n}"
        if draw < 0.8:
            return f"email:shopper{n}@example.com"
        if draw < 0.9:
            return f"user_id:user-2026-{n}"
        return f"email:new-{self.rng.randrange(10**9)}@example.com"  # unknown: shop-wide picks

    @task(3)
    def one(self) -> None:
        answer = self.call(
            "GET", f"/v1/recommendations/{self.recipient()}?placement={EMAIL_PLACEMENT}&n=4",
            "GET /v1/recommendations/[id]", auth=self.auth,
        )  # fmt: skip
        if answer is not None and "items" not in answer:
            COUNTS["missing"] += 1
        COUNTS["to_log"] += bool(answer and answer.get("decisionId"))
        self.read(answer)

    @task(1)
    def rendered(self) -> None:
        template = self.rng.choice(["grid", "list"])
        answer = self.call(
            "GET",
            f"/v1/recommendations/{self.recipient()}/render?placement={EMAIL_PLACEMENT}&n=4"
            f"&template={template}",
            "GET /v1/recommendations/[id]/render", auth=self.auth,
        )  # fmt: skip
        if answer is not None and not answer.get("html"):
            COUNTS["missing"] += 1
        COUNTS["to_log"] += bool(answer and answer.get("decisionId"))
        self.read(answer)

    @task(1)
    def send(self) -> None:
        recipients = list({self.recipient() for _ in range(50)})
        answer = self.call(
            "POST", "/v1/recommendations/batch", "POST /v1/recommendations/batch",
            json={"placement": EMAIL_PLACEMENT, "recipients": recipients, "n": 4},
            auth=self.auth,
        )  # fmt: skip
        results = (answer or {}).get("results") or []
        if answer is not None and len(results) != len(recipients):
            COUNTS["missing"] += 1
        COUNTS["to_log"] += sum(bool(r.get("decisionId")) for r in results)
        for result in self.rng.sample(results, min(3, len(results))):
            self.read(result)

    def read(self, answer: dict[str, Any] | None) -> None:
        """A reader: opens the email now and then, clicks an item more rarely."""
        if not answer or not answer.get("decisionId"):
            return
        COUNTS["emails"] += 1
        if answer.get("items"):
            COUNTS["emails_with_items"] += 1
        if self.eager or self.rng.random() < 0.3:
            self.call("GET", f"/v1/o/{answer['decisionId']}.gif", "GET /v1/o/[decision].gif")
            if answer.get("items") and (self.eager or self.rng.random() < 0.2):
                self.eager = False
                self.follow(self.rng.choice(answer["items"])["url"], "GET /v1/r/[decision]/[item]")
