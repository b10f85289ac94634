"""The dashboard's messaging pages against a real engine: the templates page lists templates and
previews one for a real person (in a sandboxed frame, its pixels and links inert), the
broadcasts page shows a broadcast's progress and, once it has been sent through a real SMTP
server, its numbers and its lift; both behind sign-in, and both fit a laptop and a phone (real
Chromium)."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from journeys.broadcasts import held_out
from tests.browser import shot, watched
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import bearer, eventually, members, page_text, signed_in
from tests.journeys.conftest import Inbox, MailWorker
from tests.journeys.conftest import inbox as inbox  # noqa: F401 - the fixtures, used here
from tests.journeys.conftest import mail_worker as mail_worker  # noqa: F401

pytestmark = pytest.mark.clickhouse_http  # the broadcasts page reads ClickHouse

NEWS = {
    "name": "Spring news",
    "subject": "Spring news for {{ traits.first_name or 'you' }}",
    "preheader": "{{ cart | length }} things saved",
    "html": '<p class="lead">Tom &amp; "Jerry" say hi, {{ traits.first_name }}.</p>'
    '<p><a href="https://shop.example/spring">Shop</a></p><script>alert(1)</script>',
    "text": "Hi {{ traits.first_name }}, spring is here: https://shop.example/spring",
}


def call(engine: Engine, method: str, path: str, body: Any = None) -> httpx.Response:
    return engine.client.request(method, f"{engine.url}{path}", json=body, headers=bearer())


def _person(engine: Engine) -> str:
    """Ada, a real profile (through /v1/identify); her profile id."""
    traits = {"first_name": "Ada", "email": "ada@example.org"}
    assert engine.post("/v1/identify", {"userId": "ada", "traits": traits}).status_code == 200
    found = eventually(lambda: (answer := call(engine, "GET", "/v1/profiles/user_id:ada"))
                       .status_code == 200 and answer.json())  # fmt: skip
    return str(found["id"])


def _put_template(engine: Engine, key: str, body: dict[str, Any]) -> None:
    answer = call(engine, "PUT", f"/v1/templates/{key}", body)
    assert answer.status_code in (200, 201), answer.text


def _srcdoc(page: str) -> str:
    found = re.search(r'<iframe class="message"([^>]*)srcdoc="([^"]*)"', page)
    assert found is not None, page
    assert ' sandbox="" ' in found.group(1) and "allow-" not in found.group(1)  # no scripts
    return html.unescape(found.group(2))


def test_the_pages_want_a_session(engine: Engine) -> None:
    for path in ("/dashboard/templates?key=news&person=user_id:ada", "/dashboard/broadcasts"):
        answer = engine.client.get(engine.url + path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    with signed_in(engine) as client:  # and with one, they are in the nav
        page = client.get("/dashboard").text
    assert 'href="/dashboard/templates"' in page and 'href="/dashboard/broadcasts"' in page


def test_the_templates_page_lists_and_previews_for_a_person(engine: Engine) -> None:
    pid = _person(engine)
    _put_template(engine, "news", NEWS)
    _put_template(engine, "recs", {"subject": "For you", "html": "{{ recommendations.html }}",
                                   "recommendations": {"placement": "nope"}})  # fmt: skip
    _put_template(engine, "broken", {"subject": "Hi", "html": "{{ traits.first_name / 0 }}"})
    with signed_in(engine) as client:
        listing = client.get("/dashboard/templates")
        assert listing.status_code == 200
        rows = re.findall(r'<tr><td data-label="template"><a href="/dashboard/templates\?key='
                          r'(\w+)"', listing.text)  # fmt: skip
        assert rows == ["broken", "news", "recs"]
        shown = page_text(listing.text)
        assert "Spring news Spring news for {{ traits.first_name or 'you' }}" in shown
        assert "recommendations from nope" in shown
        for who in ("user_id:ada", pid):
            page = client.get("/dashboard/templates", params={"key": "news", "person": who})
            assert page.status_code == 200
            shown = page_text(page.text)
            assert "Spring news for Ada 0 things saved" in shown
            assert "Hi Ada, spring is here: https://shop.example/spring" in shown  # the text part
            assert re.search(r'<pre class="text">Hi Ada, spring is here', page.text)
            message = _srcdoc(page.text)
            assert '<p class="lead">Tom &amp; "Jerry" say hi, Ada.</p>' in message
            assert message.startswith('<base target="_blank">')  # links open nothing
            assert f"{engine.url}/v1/m/c/" in message  # the link, tracked as it is sent
            assert "/v1/m/o/" not in message  # looking at it is not an open
            assert "<script>" not in page.text.split("<main>")[1]  # only escaped, in srcdoc
        problems = {
            ("news", "user_id:nobody"): "no profile for user_id:nobody.",
            ("news", "bogus:x"): "'bogus:x' is not a profile id nor an identity",
            ("recs", "user_id:ada"): "The template's blocks are unavailable:",
            ("broken", "user_id:ada"): "The template does not render for this person: ",
            ("gone", ""): "No template 'gone'.",
        }
        for (key, who), said in problems.items():
            page = client.get("/dashboard/templates", params={"key": key, "person": who})
            assert page.status_code == (404 if key == "gone" else 200)
            alert = re.search(r'<p class="bad" role="alert">(.*?)</p>', page.text, re.S)
            assert alert is not None and said in html.unescape(alert.group(1)), page.text
            assert "<iframe" not in page.text


def _readers(engine: Engine, count: int) -> set[str]:
    segment = {"name": "Readers", "rule": {"field": "traits.newsletter", "op": "eq",
                                           "value": True}}  # fmt: skip
    assert call(engine, "PUT", "/v1/segments/readers", segment).status_code == 201
    # r0 has no address: its message is skipped
    batch = [{"type": "identify", "anonymousId": f"r{i}",
              "traits": {"newsletter": True, "first_name": f"R{i}",
                         **({"email": f"r{i}@example.org"} if i else {})}}
             for i in range(count)]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
    return set(eventually(lambda: (found := members(engine, "readers")) and len(found) == count
                          and found))  # fmt: skip


def _results(engine: Engine) -> dict[str, Any]:
    return dict(call(engine, "GET", "/v1/broadcasts/spring/results").json())


def status(engine: Engine) -> dict[str, Any]:
    return dict(call(engine, "GET", "/v1/broadcasts/spring").json()["progress"])


def _draft(engine: Engine) -> set[str]:
    """The spring broadcast to 12 readers (r0 without an address), a quarter held out, as a
    draft. The held-out readers' profile ids.

    Profile ids come from spool positions (times), so a quarter holds out none of the 12 in
    about 3% of runs: the share is then widened until the holdout has someone and not everyone."""
    people = _readers(engine, 12)
    share, kept = next((share, kept) for share in (0.25, 0.5, 0.75)
                       if 0 < len(kept := {p for p in people if held_out("spring", p, share)})
                       < 12)  # fmt: skip
    _put_template(engine, "news", NEWS)
    body = {"name": "Spring sale", "segment": "readers", "template": "news", "throttle": 1000,
            "holdout": share, "goal": "Order Completed"}  # fmt: skip
    assert call(engine, "PUT", "/v1/broadcasts/spring", body).status_code == 201
    return kept


def _send(engine: Engine, mail_worker: MailWorker, kept: set[str]) -> None:
    """Send the draft; then every treated reader with an address orders."""
    mail_worker()
    assert call(engine, "POST", "/v1/broadcasts/spring/start").status_code == 200
    eventually(lambda: call(engine, "GET", "/v1/broadcasts/spring").json()["progress"]["status"]
               == "completed")  # fmt: skip
    eventually(lambda: sum(g["targeted"] for g in _results(engine)["groups"].values()) == 12
               and _results(engine)["groups"]["treated"]["sent"] > 0)  # fmt: skip
    buyers = [f"r{i}" for i in range(1, 12)
              if call(engine, "GET", f"/v1/profiles/anonymous_id:r{i}").json()["id"]
              not in kept]  # fmt: skip
    batch = [{"type": "track", "anonymousId": who, "event": "Order Completed",
              "properties": {"revenue": 40}} for who in buyers]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
    eventually(lambda: _results(engine)["lift"][0]["converted"] == len(buyers))


def _cells(page: str, group: str) -> dict[str, str]:
    """The outcomes table's row of ``group``: label -> what it says."""
    table = page.split('<table class="stack results outcomes">', 1)[1].split("</table>", 1)[0]
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = dict(re.findall(r'data-label="([^"]+)">(.*?)</td>', row, re.S))
        if cells.get("group") == group:
            return {k: page_text(v) for k, v in cells.items()}
    raise AssertionError(f"no row {group!r} in {table}")


def test_the_broadcasts_page_shows_progress_then_numbers_and_lift(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker, ch: Any
) -> None:
    kept = _draft(engine)
    with signed_in(engine) as client:
        draft = page_text(client.get("/dashboard/broadcasts").text)
        assert "Spring sale draft readers news" in draft
        assert "0 read of 12 members: 0 fed, 0 held out, 0 queued" in draft
        missing = client.get("/dashboard/broadcasts", params={"key": "nope"})
        assert missing.status_code == 404 and "No broadcast 'nope'." in page_text(missing.text)
    _send(engine, mail_worker, kept)
    treated = _results(engine)["groups"]["treated"]
    r0 = call(engine, "GET", "/v1/profiles/anonymous_id:r0").json()["id"]  # no address
    with signed_in(engine) as client:
        page = client.get("/dashboard/broadcasts", params={"key": "spring"})
        assert page.status_code == 200
        shown = page_text(page.text)
        assert (f"Spring sale completed readers news 12 read of 12 members: {12 - len(kept)} "
                f"fed, {len(kept)} held out, 0 queued") in shown  # fmt: skip
        sent = treated["sent"]
        assert sent == 12 - len(kept) - (r0 not in kept)
        assert _cells(page.text, "treated") == {
            "group": "treated", "targeted": str(12 - len(kept)),
            "sent": f"{sent} ({100 * sent / (12 - len(kept)):.1f}%)",
            "skipped": "0" if r0 in kept else "1: no_address 1", "bounced": "0",
            "opened": "0 (0.0%)", "clicked": "0 (0.0%)"}  # fmt: skip
        assert _cells(page.text, "holdout") == {
            "group": "holdout", "targeted": str(len(kept)), "sent": "0 (0.0%)", "skipped": "0",
            "bounced": "0", "opened": "0", "clicked": "0"}  # fmt: skip
        # The lift, as the journeys page shows it: the sentence, the chart, the table.
        assert re.search(r'<p class="verdict">Treated people converted \d+\.\d points more often',
                         page.text)  # fmt: skip
        assert "conversion lift against the holdout" in page.text and "<svg" in page.text
        lift = page.text.split("What it earns", 1)[1]
        assert 'data-label="conversion lift">+' in lift
        # ClickHouse away: the page still shows the progress, and says why there are no numbers.
        ch.command("DETACH TABLE events")
        try:
            away = client.get("/dashboard/broadcasts", params={"key": "spring"})
        finally:
            ch.command("ATTACH TABLE events")
        assert away.status_code == 200
        said = page_text(away.text)
        assert "The results are unavailable: the event store does not answer" in said
        assert "12 read of 12 members" in said


def test_the_broadcast_page_starts_pauses_resumes_and_cancels_with_its_buttons(
    engine: Engine,
) -> None:
    _draft(engine)

    def buttons(client: httpx.Client) -> dict[str, str]:
        shown = client.get("/dashboard/broadcasts", params={"key": "spring"}).text
        forms = re.findall(r'action="/dashboard/broadcasts/spring/(\w+)">\s*<input type="hidden" '
                           r'name="csrf" value="([^"]+)"', shown)  # fmt: skip
        return dict(forms)

    with signed_in(engine) as client:
        draft = buttons(client)
        assert sorted(draft) == ["cancel", "start"]
        stale = client.post("/dashboard/broadcasts/spring/start", data={"csrf": "x"})
        assert stale.status_code == 400 and "The form expired" in page_text(stale.text)
        other = client.post("/dashboard/broadcasts/spring/start", data={"csrf": draft["cancel"]})
        assert other.status_code == 400  # a token is bound to its action
        assert status(engine)["status"] == "draft"
        started = client.post("/dashboard/broadcasts/spring/start", data={"csrf": draft["start"]})
        assert started.status_code == 303
        assert started.headers["location"] == "/dashboard/broadcasts?key=spring"
        assert status(engine)["status"] in ("scanning", "sending")  # no worker runs it here
        running = buttons(client)
        assert sorted(running) == ["cancel", "pause"]
        client.post("/dashboard/broadcasts/spring/pause", data={"csrf": running["pause"]})
        assert status(engine)["status"] == "paused"
        wrong = client.post("/dashboard/broadcasts/spring/pause", data={"csrf": running["pause"]})
        assert wrong.status_code == 409
        assert ("pause: the broadcast is paused; pause is for a broadcast that is scanning or "
                "sending") in page_text(wrong.text)  # fmt: skip
        paused = buttons(client)
        assert sorted(paused) == ["cancel", "resume"]
        client.post("/dashboard/broadcasts/spring/resume", data={"csrf": paused["resume"]})
        client.post("/dashboard/broadcasts/spring/cancel", data={"csrf": paused["cancel"]})
        assert status(engine)["status"] == "cancelled" and buttons(client) == {}


# As the browser laid it out: how far the page scrolls sideways, and per section how far it
# scrolls and which of its visible cells stick out of it or out of themselves.
_LAYOUT = """() => {
  const cut = [];
  let scrolled = 0;
  for (const section of document.querySelectorAll("main section")) {
    const box = section.getBoundingClientRect();
    scrolled = Math.max(scrolled, section.scrollWidth - section.clientWidth);
    for (const c of section.querySelectorAll("td, th, iframe, pre")) {
      const r = c.getBoundingClientRect(), head = c.closest("thead");
      if (head && head.getBoundingClientRect().width <= 1) continue;  // for screen readers
      if (getComputedStyle(c).display === "none") continue;
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || c.scrollWidth > c.clientWidth)
        cut.push(c.textContent.trim().slice(0, 60));
    }
  }
  return {page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
          sections: scrolled, cut: cut};
}"""


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_the_messaging_pages_fit_a_laptop_and_a_phone(
    browser: Browser,
    engine: Engine,
    inbox: tuple[Inbox, int],
    mail_worker: MailWorker,
    width: int,
    height: int,
) -> None:
    _send(engine, mail_worker, _draft(engine))
    _person(engine)
    page = browser.new_page(viewport={"width": width, "height": height},
                            is_mobile=width < 600)  # fmt: skip
    errors = watched(page)
    page.goto(f"{engine.url}/dashboard/templates")
    assert page.url.endswith("/dashboard/login")
    page.fill("input[name=key]", SECRET_KEY)
    page.click("button[type=submit]")
    page.click("nav >> text=Templates")
    page.click("table.templates >> text=news")
    page.fill("input[name=person]", "user_id:ada")
    page.click("button:has-text('Preview')")
    assert "Spring news for Ada" in page.inner_text("main")
    frame = page.frame_locator("iframe.message")
    assert "say hi, Ada." in frame.locator("p.lead").inner_text()
    # The template's <script> did not run: the frame's sandbox refused it (and said so).
    assert errors == ["Blocked script execution in 'about:srcdoc' because the document's frame "
                      "is sandboxed and the 'allow-scripts' permission is not set."]  # fmt: skip
    errors.clear()
    layout = page.evaluate(_LAYOUT)
    shot(page, "dashboard", f"templates-{width}")
    assert layout == {"page": 0, "sections": 0, "cut": []}, layout
    page.click("nav >> text=Broadcasts")
    page.click("table.broadcasts >> text=Spring sale")
    assert page.locator("table.outcomes tbody td:visible").count() >= 14  # two groups, 7 each
    assert page.locator("p.verdict").inner_text().startswith("Treated people converted")
    layout = page.evaluate(_LAYOUT)
    shot(page, "dashboard", f"broadcasts-{width}")
    assert layout == {"page": 0, "sections": 0, "cut": []}, layout
    page.close()
    assert errors == []
