"""Helpers the tests share: keys in headers, waiting for the pipeline, placing and deciding,
filling the spool. Fixtures live in conftest.py; helpers that several test modules call live
here (test modules never import each other)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from collector import Spool, SpoolReader, read_request
from decisions.identity import user_hash
from edge.runtime.stores import async_redis_client
from tests.conftest import SECRET_KEY, Engine

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # when ``fill``'s messages were received


def bearer(key: str = SECRET_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def put_placement(engine: Engine, key: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = engine.client.put(f"{engine.url}/v1/placements/{key}", json=body, headers=bearer())
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def placement(engine: Engine, key: str) -> dict[str, Any]:
    answer = engine.client.get(f"{engine.url}/v1/placements/{key}", headers=bearer())
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def signed(engine: Engine, user_id: str) -> dict[str, str]:
    """``userId`` with its ``userHash``, as a site's server renders them for a signed-in user."""
    return {"userId": user_id, "userHash": user_hash(engine.settings.identity_secret, user_id)}


def decide(engine: Engine, *placements: str, **body: Any) -> dict[str, Any]:
    body.setdefault("anonymousId", "a1")
    answer = engine.post("/v1/decide", {"placements": list(placements), **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["decisions"])


def wait_catalog(engine: Engine, key: str, revision: int | None = None) -> None:
    """Wait until the API process serves ``key`` (its catalog refreshes every 0.5 s)."""

    def served() -> bool:
        answer = engine.post("/v1/decide", {"anonymousId": "probe", "placements": [key]})
        return answer.status_code == 200 and key in answer.json()["decisions"]

    eventually(served, timeout=5)


def run_experiment(engine: Engine, key: str, policy: dict[str, Any], visitors: int) -> dict:
    """Visitors browse, are shown a variant, and order (the "bold" variant converts more)."""
    put_placement(engine, key, {
        "default": "plain", "policy": policy,
        "reward": {"kind": "conversion", "event": "Order Completed", "window_hours": 24},
        "variants": [{"key": "plain", "content": {"cta": "Buy"}},
                     {"key": "bold", "content": {"cta": "Buy now!"}}],
    })  # fmt: skip
    wait_catalog(engine, key)
    rng = np.random.default_rng(11)
    shown: dict[str, list[str]] = {"plain": [], "bold": []}
    orders = 0
    for i in range(visitors):
        who = f"{key}-v{i}"
        engine.post("/v1/page", {"anonymousId": who, "name": "Home"})
        variant = decide(engine, key, anonymousId=who)[key]["variant"]
        shown[variant].append(who)
        if rng.random() < (0.35 if variant == "bold" else 0.10):
            orders += 1
            answer = engine.post("/v1/track", {"anonymousId": who, "event": "Order Completed",
                                               "properties": {"revenue": 40}})  # fmt: skip
            assert answer.status_code == 200
    # wait_catalog's probe is a visitor too (sticky: asking again shows its variant).
    shown[decide(engine, key, anonymousId="probe")[key]["variant"]].append("probe")
    eventually(lambda: engine.sql(
        f"SELECT uniqExact(anonymousId) FROM decisions WHERE placement = '{key}'")[0][0]
        == visitors + 1, timeout=60)  # fmt: skip
    eventually(lambda: engine.sql(
        f"SELECT count() FROM events WHERE event = 'Decision Rewarded' "
        f"AND JSONExtractString(properties, 'placement') = '{key}'")[0][0] == orders,
        timeout=60)  # fmt: skip
    return {"shown": shown, "orders": orders}


def members(engine: Engine, segment: str) -> set[str]:
    found: set[str] = set()
    cursor: str | None = "0"
    while cursor is not None:
        answer = engine.client.get(f"{engine.url}/v1/segments/{segment}/members",
                                   params={"cursor": cursor}, headers=bearer()).json()  # fmt: skip
        found.update(answer["profiles"])
        cursor = answer["next_cursor"]
    return found


def fill(redis_url: str, batches: int, size: int, prefix: str = "m") -> None:
    async def run() -> None:
        client = async_redis_client(redis_url)
        spool = Spool(client)
        for b in range(batches):
            body = {
                "batch": [
                    {
                        "type": "track",
                        "event": "Order Completed",
                        "userId": f"u{i % 7}",
                        "messageId": f"{prefix}{b}-{i}",
                        "properties": {"revenue": i},
                    }
                    for i in range(size)
                ]
            }
            intake = read_request(
                json.dumps(body).encode(),
                kind="batch",
                content_type="application/json",
                content_encoding=None,
                received_at=NOW,
                ip="198.51.100.7",
            )
            await spool.append(intake)
        await spool.aclose()
        await client.aclose()

    asyncio.run(run())


def die(reader: SpoolReader) -> None:
    """As if ``reader``'s process died: its renewals stop and its leases lapse (at once, rather
    than after the lease time)."""
    reader.leases.stop_renewing()
    for partition in reader.held:
        reader.client.delete(partition.lease(reader.group))


def count(ch: Any) -> int:
    return int(ch.query("SELECT count() FROM events").result_rows[0][0])


def resolve_profiles(r: Any, layout: Any) -> None:
    """The profile updater over every partition of ``layout``, until it has read everything
    (the workers after it read the profile ids it keeps)."""
    from profiles.store import ProfileStore
    from profiles.updater import ProfileUpdater

    reader = SpoolReader(r, "profiles", "updater", layout)
    reader.ensure_group()
    updater = ProfileUpdater(reader, ProfileStore(r))
    while entries := reader.read(200, 1):
        updater.process(entries)
        reader.ack(entries, {})
    reader.release()


def sign_in_form(client: httpx.Client, **fields: str) -> httpx.Response:
    """Post the dashboard's sign-in form as a browser would (its CSRF token and cookie)."""
    form = client.get("/dashboard/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None, form.text
    return client.post("/dashboard/login", data={**fields, "csrf": token.group(1)})


@contextmanager
def signed_in(engine: Engine, email: str = "", password: str = "") -> Iterator[httpx.Client]:
    """A client holding the dashboard's session cookie, signed in through the form: with the
    secret key, or as the user ``email``."""
    with httpx.Client(base_url=engine.url, follow_redirects=False, timeout=30) as client:
        fields = {"email": email, "password": password} if email else {"key": SECRET_KEY}
        answer = sign_in_form(client, **fields)
        assert answer.status_code == 303, answer.text
        yield client


def add_user(engine: Engine, email: str, role: str, password: str = "a long password 1") -> None:
    """A dashboard user, made through the API with the secret key."""
    body = {"email": email, "role": role, "password": password}
    answer = engine.client.post(f"{engine.url}/v1/users", json=body, headers=bearer())
    assert answer.status_code == 201, answer.text


def page_text(markup: str) -> str:
    """What a person reads of a page's markup (of its <main>, if it has one)."""
    main = markup.split("<main>", 1)[-1]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))).strip()


# As the browser laid them out: how far the page and the results table's section scroll
# sideways (what they clip), and the cells that stick out of the section or out of themselves
# (visible ones: on a phone the headings are hidden and empty cells folded away).
LAYOUT = """() => {
  const section = document.querySelector("table.results").parentElement;
  const box = section.getBoundingClientRect();
  const cut = [...section.querySelectorAll("td, th")].filter(c => {
    const r = c.getBoundingClientRect(), head = c.closest("thead");
    if (head && head.getBoundingClientRect().width <= 1) return false;  // for screen readers
    if (getComputedStyle(c).display === "none") return false;
    return r.left < box.left - 0.5 || r.right > box.right + 0.5 || c.scrollWidth > c.clientWidth;
  }).map(c => c.textContent.trim());
  return {page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
          table: section.scrollWidth - section.clientWidth, cut: cut};
}"""
