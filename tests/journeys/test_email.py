"""Email that Kairos sends itself: templates through the API, the journey email step over SMTP to
a real SMTP server (aiosmtpd) on loopback, tracked links and opens, and the send-time rules
(bounces suppress, temporary failures retry, quiet hours wait, the frequency cap skips)."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from typing import Any

import httpx
import pytest

from tests.conftest import Engine
from tests.helpers import bearer, eventually
from tests.journeys.conftest import Clock, Inbox, MailWorker, events, put_journey, run_of, track

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

CART = {
    "name": "Cart reminder",
    "subject": "{{ traits.first_name or 'Hi' }}, your cart is waiting",
    "preheader": "{{ cart | length }} item(s) saved for you",
    "html": "<p>Hello {{ traits.first_name }}</p>{% for item in cart %}<p>{{ item.product_id }}"
            "</p>{% endfor %}<p><a href=\"https://shop.example/cart?utm=mail\">Back to your "
            "cart</a></p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
}  # fmt: skip


def put_template(engine: Engine, key: str, body: dict[str, Any]) -> httpx.Response:
    return engine.client.put(f"{engine.url}/v1/templates/{key}", json=body, headers=bearer())


def cart_journey(**step: Any) -> dict[str, Any]:
    return {
        "trigger": {"kind": "event", "event": "Product Added"},
        "start": "wait",
        "steps": {
            "wait": {"type": "wait", "duration": "1h", "next": "remind"},
            "remind": {"type": "email", "template": "cart", "next": "end", **step},
            "end": {"type": "end"},
        },
    }


def shopper(engine: Engine, who: str, address: str, **traits: Any) -> None:
    answer = engine.post("/v1/identify", {"anonymousId": who,
                                          "traits": {"email": address, **traits}})  # fmt: skip
    assert answer.status_code == 200
    track(engine, who, "Product Added", product_id=f"hat-{who}")


def test_templates_are_checked_kept_and_listed(engine: Engine) -> None:
    assert put_template(engine, "cart", CART).status_code == 201
    again = put_template(engine, "cart", CART)
    assert again.status_code == 200 and again.json()["changed"] is False
    broken = put_template(engine, "broken", {**CART, "html": "<p>{% for x in cart %}</p>"})
    assert broken.status_code == 400
    assert broken.json()["message"].startswith(
        "$.html: must be a jinja2 template; line 1: Unexpected end of template"
    )
    missing = put_template(engine, "nosubject", {"html": "<p>x</p>"})
    assert missing.json()["message"] == "$.subject: required field is missing"
    listed = engine.client.get(f"{engine.url}/v1/templates", headers=bearer()).json()
    assert [t["key"] for t in listed["templates"]] == ["cart"]
    shown = engine.client.get(f"{engine.url}/v1/templates/cart", headers=bearer()).json()
    assert shown["subject"] == CART["subject"] and shown["revision"] >= 1
    gone = engine.client.delete(f"{engine.url}/v1/templates/cart", headers=bearer())
    assert gone.json() == {"key": "cart", "deleted": True}
    absent = engine.client.get(f"{engine.url}/v1/templates/cart", headers=bearer())
    assert absent.status_code == 404 and absent.json()["message"] == "no template 'cart'"
    assert engine.client.get(f"{engine.url}/v1/templates").status_code == 401


def waiting(engine: Engine, who: str, journey: str, entry: int = 1) -> None:
    """Wait until the journeys worker has entered ``who`` (before the test moves its clock)."""
    eventually(lambda: (run_of(engine, who, journey) or {}).get("entry") == entry)


def _pid(engine: Engine, who: str) -> str:
    def found() -> str | None:
        answer = engine.client.get(f"{engine.url}/v1/profiles/anonymous_id:{who}",
                                   headers=bearer())  # fmt: skip
        cart = answer.json().get("computed", {}).get("cart") if answer.status_code == 200 else None
        return answer.json()["id"] if cart else None

    return str(eventually(found))


def test_a_preview_renders_for_the_person_with_links_tracked_and_a_click_is_an_event(
    engine: Engine,
) -> None:
    put_template(engine, "cart", CART)
    shopper(engine, "ada", "ada@example.org", first_name="Ada")
    pid = _pid(engine, "ada")
    shown = engine.client.post(f"{engine.url}/v1/templates/cart/preview", json={"person": pid},
                               headers=bearer()).json()  # fmt: skip
    assert shown["subject"] == "Ada, your cart is waiting"
    assert shown["preheader"] == "1 item(s) saved for you"
    assert "<p>hat-ada</p>" in shown["html"] and "Hello Ada" in shown["text"]
    links = re.findall(r'href="([^"]+)"', shown["html"])
    assert links[0].startswith(f"{engine.url}/v1/m/c/")  # the shop link, tracked
    assert links[1] == shown["unsubscribe_url"]  # into the engine: left as it is
    assert re.search(rf'<img src="{re.escape(engine.url)}/v1/m/o/[^"]+\.gif"', shown["html"])
    followed = engine.client.get(links[0])
    assert followed.status_code == 302
    assert followed.headers["location"] == "https://shop.example/cart?utm=mail"
    forged = engine.client.get(links[0][:-3] + "AAA")
    assert forged.status_code == 404
    clicked = eventually(lambda: events(engine, "Email Clicked"))
    assert clicked[0]["url"] == "https://shop.example/cart?utm=mail"
    assert clicked[0]["profile_id"] == pid and clicked[0]["message"] == "preview"
    nobody = engine.client.post(f"{engine.url}/v1/templates/cart/preview",
                                json={"person": "p_nobody"}, headers=bearer())  # fmt: skip
    assert nobody.status_code == 404 and nobody.json()["message"].startswith("$.person:")


def test_the_email_step_sends_one_multipart_message_over_smtp(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    put_template(engine, "cart", CART)
    put_journey(engine, "cart_mail", cart_journey())
    clock = mail_worker()
    shopper(engine, "ada", "ada@example.org", first_name="Ada")
    waiting(engine, "ada", "cart_mail")
    clock.forward(61)
    eventually(lambda: handler.messages)
    clock.forward(60 * 24)
    sent = eventually(lambda: events(engine, "Email Sent"))
    assert len(handler.messages) == 1  # once, however long the worker runs on
    got = email.message_from_bytes(handler.messages[0], policy=policy.default)
    assert got["To"] == "ada@example.org" and got["Subject"] == "Ada, your cart is waiting"
    key = got["X-Kairos-Idempotency-Key"]
    assert key.startswith("cart_mail|") and got["Message-ID"] == f"<{key}@example.com>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in got.iter_parts()] == ["text/plain", "text/html"]
    assert sent[0]["message"] == key and sent[0]["journey"] == "cart_mail"
    actions = engine.sql("SELECT count() FROM events WHERE event = 'Journey Action Sent'")
    assert actions == [[1]]


def test_a_hard_bounce_suppresses_the_address_and_a_temporary_failure_is_retried(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    put_template(engine, "cart", CART)
    put_journey(engine, "cart_mail", {**cart_journey(), "entry": {"reentry": "always"}})
    clock = mail_worker()
    shopper(engine, "bea", "bounce@example.org")
    waiting(engine, "bea", "cart_mail")
    clock.forward(61)
    bounced = eventually(lambda: events(engine, "Email Bounced"))
    assert bounced[0]["code"] == 550
    shopper(engine, "bea", "bounce@example.org")  # enters again: the address is suppressed now
    waiting(engine, "bea", "cart_mail", entry=2)
    clock.forward(61)
    skipped = eventually(lambda: events(engine, "Message Skipped"))
    assert skipped[0]["reason"] == "suppressed"
    handler.busy = 1  # the next recipient gets a 451 once
    shopper(engine, "cy", "cy@example.org")
    waiting(engine, "cy", "cart_mail")
    clock.forward(61)
    eventually(lambda: handler.refused)  # the 451 was given …
    assert handler.messages == []
    clock.forward(1)  # … and after the backoff, the message goes
    eventually(lambda: handler.messages)
    assert email.message_from_bytes(handler.messages[0])["To"] == "cy@example.org"


def _at(hour: int) -> int:
    return int(datetime(2026, 6, 1, hour, tzinfo=UTC).timestamp() * 1000)


def test_quiet_hours_hold_a_message_until_they_end_in_the_persons_time_zone(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    put_template(engine, "cart", CART)
    put_journey(engine, "cart_mail", cart_journey())
    # 19:00 UTC is 21:00 in Berlin in June: the hour's wait ends inside Dee's quiet hours.
    clock = mail_worker(start_at=_at(19), quiet_hours="21:30-08:00")
    shopper(engine, "dee", "dee@example.org", timezone="Europe/Berlin")
    waiting(engine, "dee", "cart_mail")
    clock.forward(61 + 30)  # 22:31 in Berlin
    deferred = eventually(lambda: events(engine, "Message Deferred"))
    assert deferred[0]["reason"] == "quiet_hours"
    assert deferred[0]["until"] == _at(6) + 86_400_000  # 08:00 in Berlin, the next morning
    clock.forward(60 * 8)  # 04:31 UTC: still quiet in Berlin
    assert handler.messages == []
    clock.forward(90)  # 06:01 UTC: 08:01 in Berlin
    eventually(lambda: handler.messages)


def test_the_frequency_cap_skips_what_passes_it_across_journeys(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    put_template(engine, "cart", CART)
    put_journey(engine, "first", cart_journey())
    put_journey(
        engine,
        "second",
        {
            **cart_journey(),
            "steps": {
                **cart_journey()["steps"],
                "wait": {"type": "wait", "duration": "2h", "next": "remind"},
            },
        },
    )
    clock = mail_worker(frequency_cap=1, cap_days=1)
    shopper(engine, "eve", "eve@example.org")
    waiting(engine, "eve", "first")
    waiting(engine, "eve", "second")
    clock.forward(61)
    eventually(lambda: handler.messages)
    clock.forward(60)
    skipped = eventually(lambda: events(engine, "Message Skipped"))
    assert skipped[0]["reason"] == "frequency_cap" and skipped[0]["journey"] == "second"
    assert len(handler.messages) == 1


def test_without_an_smtp_server_an_email_step_says_why_nothing_went(
    engine: Engine, clock: Clock
) -> None:
    put_template(engine, "cart", CART)
    put_journey(engine, "cart_mail", cart_journey())
    shopper(engine, "fay", "fay@example.org")
    waiting(engine, "fay", "cart_mail")
    clock.forward(61)
    skipped = eventually(lambda: events(engine, "Message Skipped"))
    assert skipped[0]["reason"] == "no_smtp_server" and skipped[0]["template"] == "cart"


def test_an_email_step_needs_a_template_or_a_url(engine: Engine) -> None:
    answer = engine.client.put(f"{engine.url}/v1/journeys/x", json=cart_journey(template=None),
                               headers=bearer())  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["message"] == (
        "$.steps.remind: an email step has either `template` (sent by Kairos over SMTP) or "
        "`url` (a hand-off to your provider's webhook)"
    )
