"""Subscriptions end to end on real Redis (single and cluster) and embedded ClickHouse: groups,
each person's state (API, events, preference page, one-click unsubscribe, double opt-in with a
real aiosmtpd server on loopback), merges and erasure, the suppression list and its feedback
webhook, and the send-time check."""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import re
import time
from email import policy
from typing import Any

import httpx
import redis

from journeys import subscriptions as subs
from journeys import suppression
from journeys.actions import sign
from journeys.links import link_secret
from journeys.smtp import EmailSettings, Sender, compose, deliver
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import bearer, eventually
from tests.journeys.conftest import Clock, Inbox, MailWorker

NEWS = {"name": "Weekly news", "channel": "email", "default": "opt_out"}
OFFERS = {"name": "Offers", "channel": "email", "default": "opt_in",
          "description": "Discounts, now and then"}  # fmt: skip
LETTER = {"name": "The letter", "channel": "email", "default": "opt_in", "double_opt_in": True}
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


# -- helpers --


def _put_group(engine: Engine, key: str, body: dict[str, Any]) -> httpx.Response:
    return engine.client.put(f"{engine.url}/v1/subscriptions/{key}", json=body, headers=bearer())


def _groups(engine: Engine, **wanted: dict[str, Any]) -> None:
    for key, body in wanted.items():
        assert _put_group(engine, key, body).status_code in (200, 201)


def _person(engine: Engine, user: str, address: str | None = "Ada@Example.org",
            anonymous: str | None = None) -> str:  # fmt: skip
    """A person known by ``user`` (with an email trait): their profile id once it exists."""
    traits = {"email": address} if address else {"plan": "free"}
    body: dict[str, Any] = {"userId": user, "traits": traits}
    if anonymous:
        body["anonymousId"] = anonymous
    assert engine.post("/v1/identify", body).status_code == 200

    def found() -> str | None:
        answer = engine.client.get(f"{engine.url}/v1/profiles/user_id:{user}", headers=bearer())
        if answer.status_code != 200:
            return None
        profile = answer.json()
        return str(profile["id"]) if not address or profile["traits"].get("email") else None

    return str(eventually(found))


def _states(engine: Engine, who: str) -> dict[str, Any]:
    answer = engine.client.get(f"{engine.url}/v1/profiles/{who}/subscriptions", headers=bearer())
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["subscriptions"])


def _set(engine: Engine, who: str, body: Any) -> httpx.Response:
    return engine.client.put(f"{engine.url}/v1/profiles/{who}/subscriptions", json=body,
                             headers=bearer())  # fmt: skip


def _client(engine: Engine) -> redis.Redis:
    from edge.runtime.stores import redis_client

    return redis_client(engine.settings.redis_url)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# -- groups --


def test_groups_are_created_read_listed_and_deleted_and_bad_ones_refused(engine: Engine) -> None:
    created = _put_group(engine, "news", NEWS)
    assert created.status_code == 201 and created.json() == {"key": "news", "created": True,
                                                             "changed": True}  # fmt: skip
    again = _put_group(engine, "news", NEWS)
    assert again.status_code == 200 and again.json()["changed"] is False
    shown = engine.client.get(f"{engine.url}/v1/subscriptions/news", headers=bearer()).json()
    assert shown == {"key": "news", "name": "Weekly news", "channel": "email",
                     "default": "opt_out", "double_opt_in": False, "description": ""}  # fmt: skip
    listed = engine.client.get(f"{engine.url}/v1/subscriptions", headers=bearer()).json()
    assert [g["key"] for g in listed["groups"]] == ["news"] and listed["suppressed"] == 0
    assert listed["feedback_secret"].startswith("fbsec_")
    bad = {
        "Nope": (NEWS, "$.key: lower-case letters, digits, _ and -, up to 64; got 'Nope'"),
        "a": ({**NEWS, "channel": "sms"},
              "$.channel: Invalid enum value 'sms' — expected one of discord, email, telegram, "
              "webhook"),
        "b": ({**NEWS, "double_opt_in": True, "channel": "discord"},
              "$.double_opt_in: only for email groups (the confirmation is an email)"),
        "c": ({"channel": "email"}, "$.name: required field is missing"),
        "d": ({**NEWS, "colour": "red"}, "$: Object contains unknown field `colour`"),
    }  # fmt: skip
    for key, (body, message) in bad.items():
        answer = _put_group(engine, key, body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"] == message, answer.text
    gone = engine.client.delete(f"{engine.url}/v1/subscriptions/news", headers=bearer())
    assert gone.json() == {"key": "news", "deleted": True}
    missing = engine.client.get(f"{engine.url}/v1/subscriptions/news", headers=bearer())
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "no subscription group 'news'"}
    again = engine.client.delete(f"{engine.url}/v1/subscriptions/news", headers=bearer())
    assert again.status_code == 404


# -- each person's state --


def test_opt_out_reaches_everyone_until_they_unsubscribe_opt_in_only_subscribers(
    engine: Engine,
) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    pid = _person(engine, "ada")
    r = _client(engine)
    address = "ada@example.org"
    assert subs.check(r, pid, "news", "email", address) is None
    assert subs.check(r, pid, "offers", "email", address) == "not_subscribed"
    answer = _set(engine, "user_id:ada", {"offers": "subscribed", "news": "unsubscribed"})
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()["changed"]) == ["news", "offers"]
    assert subs.check(r, pid, "offers", "email", address) is None
    assert subs.check(r, pid, "news", "email", address) == "unsubscribed"
    shown = _states(engine, "user_id:ada")
    assert shown["news"]["state"] == "unsubscribed" and shown["news"]["receives"] is False
    assert shown["offers"]["source"] == "api" and shown["offers"]["receives"] is True
    # The address is kept off news whichever profile it turns up on.
    listed = engine.client.get(f"{engine.url}/v1/suppressions/ADA@example.org", headers=bearer())
    assert listed.status_code == 200
    assert listed.json()["suppressed"] is False and list(listed.json()["groups"]) == ["news"]
    assert subs.check(r, "p_someone_else", "news", "email", address) == "unsubscribed"
    # Subscribing again lets it through again.
    assert _set(engine, "user_id:ada", {"news": "subscribed"}).json()["changed"] == ["news"]
    assert subs.check(r, pid, "news", "email", address) is None
    # ClickHouse has the history.
    rows = eventually(lambda: found if len(found := engine.sql(
        "SELECT JSONExtractString(properties, 'group'), JSONExtractString(properties, 'state'), "
        "JSONExtractString(properties, 'source') FROM events "
        "WHERE event = 'Subscription Changed' ORDER BY timestamp, 1")) == 3 else None)  # fmt: skip
    assert sorted(rows[:2]) == [["news", "unsubscribed", "api"], ["offers", "subscribed", "api"]]
    assert rows[2] == ["news", "subscribed", "api"]
    r.close()


def test_setting_states_refuses_what_it_cannot_do(engine: Engine) -> None:
    _groups(engine, news=NEWS)
    _person(engine, "ada")
    cases = [
        ({"nope": "subscribed"}, "$.nope: no subscription group 'nope' (groups: news)"),
        ({"news": "maybe"}, "$.news: must be subscribed or unsubscribed, not 'maybe'"),
        ({}, '$: name at least one group, e.g. {"news": "subscribed"}'),
        (["news"], '$: an object of group key -> "subscribed" or "unsubscribed"'),
    ]
    for body, message in cases:
        answer = _set(engine, "user_id:ada", body)
        assert answer.status_code == 400 and answer.json()["message"] == message, answer.text
    answer = _set(engine, "user_id:nobody", {"news": "subscribed"})
    assert answer.status_code == 404
    assert answer.json()["message"] == "no profile for user_id:nobody"
    answer = engine.client.get(f"{engine.url}/v1/profiles/nope:x/subscriptions", headers=bearer())
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.id: 'nope:x'")


def test_a_tracked_event_subscribes_and_unsubscribes(engine: Engine, clock: Clock) -> None:
    _groups(engine, offers=OFFERS, letter=LETTER)
    pid = _person(engine, "ada")

    def track(event: str, group: str) -> None:
        body = {"userId": "ada", "event": event, "properties": {"group": group}}
        assert engine.post("/v1/track", body).status_code == 200

    track("Subscribed", "offers")
    eventually(lambda: _states(engine, pid)["offers"]["state"] == "subscribed")
    assert _states(engine, pid)["offers"]["source"] == "event"
    track("Subscribed", "letter")  # double opt-in: waits for the confirmation
    eventually(lambda: _states(engine, pid)["letter"]["state"] == "pending")
    track("Unsubscribed", "offers")
    eventually(lambda: _states(engine, pid)["offers"]["state"] == "unsubscribed")
    track("Subscribed", "no_such_group")  # ignored
    r = _client(engine)
    assert subs.check(r, pid, "offers", "email", "ada@example.org") == "unsubscribed"
    assert subs.check(r, pid, "letter", "email", "ada@example.org") == "pending_confirmation"
    r.close()


def test_a_merge_keeps_the_newest_change_of_each_group(engine: Engine) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    known = _person(engine, "ada", anonymous="laptop")
    assert engine.post("/v1/track", {"anonymousId": "phone", "event": "Viewed"}).status_code == 200
    r = _client(engine)
    phone = eventually(lambda: r.get("{id:anonymous_id:phone}"))
    phone = phone.decode()
    subs.set_state(r, known, "news", "subscribed", "api", at=1_000)
    subs.set_state(r, phone, "news", "unsubscribed", "api", at=2_000)  # newer: wins
    subs.set_state(r, known, "offers", "subscribed", "api", at=3_000)  # newer: wins
    subs.set_state(r, phone, "offers", "unsubscribed", "api", at=500)
    subs.set_state(r, phone, "letter", "pending", "api", at=700)  # only on the phone's
    # ada signs in on the phone: its anonymous profile merges into hers.
    assert engine.post("/v1/identify", {"userId": "ada", "anonymousId": "phone"}).status_code == 200
    eventually(lambda: r.hget("{p:" + phone + "}", "merged_into") is not None
               and not r.exists("{p:" + phone + "}:subs"))  # fmt: skip
    held = subs.states(r, known)
    assert (held["news"].state, held["news"].at) == ("unsubscribed", 2_000)
    assert (held["offers"].state, held["offers"].at) == ("subscribed", 3_000)
    assert held["letter"].state == "pending"
    # A check for the merged-away profile reads where it went.
    assert subs.check(r, phone, "offers", "email", "ada@example.org") is None
    # An older change than the one held changes nothing.
    assert subs.set_state(r, known, "news", "subscribed", "event", at=1_500).changed is False
    assert subs.states(r, known)["news"].state == "unsubscribed"
    r.close()


def test_erasure_deletes_the_states(engine: Engine) -> None:
    _groups(engine, news=NEWS)
    pid = _person(engine, "ada")
    assert _set(engine, pid, {"news": "unsubscribed"}).status_code == 200
    r = _client(engine)
    assert r.exists("{p:" + pid + "}:subs")
    erased = engine.client.delete(f"{engine.url}/v1/profiles/{pid}", headers=bearer())
    assert erased.status_code == 202
    assert not r.exists("{p:" + pid + "}:subs")
    r.close()


# -- links: one-click unsubscribe, preferences --


def test_one_click_unsubscribe_as_rfc_8058_sends_it(engine: Engine) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    pid = _person(engine, "ada")
    r = _client(engine)
    secret = link_secret(r)
    url = subs.unsubscribe_url(engine.url, secret, pid, "news")
    with httpx.Client() as scanner:  # a mail scanner prefetches the link: nothing changes
        page = scanner.get(url)
    assert page.status_code == 200 and "Unsubscribe?" in page.text and "Weekly news" in page.text
    assert subs.check(r, pid, "news", "email", "ada@example.org") is None
    # The mail client's request, exactly: a POST, the one field, no cookie, no key.
    with httpx.Client() as mailbox:
        answer = mailbox.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    assert _states(engine, pid)["news"]["source"] == "one_click"
    assert subs.check(r, pid, "news", "email", "ada@example.org") == "unsubscribed"
    assert suppression.entry(r, "email", "ada@example.org").groups.keys() == {"news"}
    # multipart/form-data, as some providers send it.
    offers = subs.unsubscribe_url(engine.url, secret, pid, "offers")
    subs.set_state(r, pid, "offers", "subscribed", "api")
    with httpx.Client() as mailbox:
        answer = mailbox.post(offers, files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert subs.check(r, pid, "offers", "email", "ada@example.org") == "unsubscribed"
    # Without the RFC 8058 body nothing changes.
    subs.set_state(r, pid, "offers", "subscribed", "api")
    refused = httpx.post(offers, content=b"", headers=ONE_CLICK)
    assert refused.status_code == 400 and "List-Unsubscribe=One-Click" in refused.text
    assert subs.check(r, pid, "offers", "email", "ada@example.org") is None
    # A message without a group: its link unsubscribes from all email.
    every = subs.unsubscribe_url(engine.url, secret, pid, None)
    assert httpx.post(every, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK).is_success
    assert subs.check(r, pid, "offers", "email", "ada@example.org") == "unsubscribed"
    assert suppression.entry(r, "email", "ada@example.org").groups.keys() == {"news", "*"}
    r.close()


def test_a_forged_or_mangled_token_is_a_404_that_says_nothing(engine: Engine) -> None:
    _groups(engine, news=NEWS)
    pid = _person(engine, "ada")
    r = _client(engine)
    real = subs.unsubscribe_url(engine.url, link_secret(r), pid, "news")
    forged = subs.unsubscribe_url(engine.url, b"not the secret", pid, "news")
    mangled = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")
    other_kind = subs.preferences_url(engine.url, link_secret(r), pid).replace(
        "/v1/preferences/", "/v1/unsubscribe/"
    )
    for url in (forged, mangled, other_kind, engine.url + "/v1/unsubscribe/x"):
        for method in ("GET", "POST"):
            answer = httpx.request(method, url, content=b"List-Unsubscribe=One-Click",
                                   headers=ONE_CLICK)  # fmt: skip
            assert answer.status_code == 404, (url, method)
            assert "This link is not valid" in answer.text and pid not in answer.text
    bad = engine.url + "/v1/preferences/" + forged.rsplit("/", 1)[1]
    assert httpx.get(bad).status_code == 404
    assert subs.check(r, pid, "news", "email", "ada@example.org") is None
    r.close()


def test_the_preference_page_shows_every_group_and_saves_the_toggles(engine: Engine) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    pid = _person(engine, "ada")
    r = _client(engine)
    url = subs.preferences_url(engine.url, link_secret(r), pid)
    page = httpx.get(url)
    assert page.status_code == 200 and 'name="viewport"' in page.text
    assert re.search(r'value="news" checked', page.text)  # opt-out: receives
    assert re.search(r'value="offers">', page.text)  # opt-in: does not yet
    assert "Discounts, now and then" in page.text
    saved = httpx.post(url, content=b"g=offers&save=1",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert saved.status_code == 200 and "Your choices are saved." in saved.text
    held = subs.states(r, pid)
    assert held["offers"].state == "subscribed" and held["news"].state == "unsubscribed"
    assert {held["offers"].source, held["news"].source} == {"preferences"}
    # Unsubscribe from all email.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    done = httpx.post(url, content=b"g=offers&all=email", headers=form)
    assert "You are unsubscribed from all email." in done.text
    assert subs.check(r, pid, "offers", "email", "ada@example.org") == "unsubscribed"
    # A group made later is kept from the address too ("*"), until they choose it.
    _groups(engine, tips={"name": "Tips", "channel": "email", "default": "opt_out"})
    assert subs.check(r, pid, "tips", "email", "ada@example.org") == "unsubscribed"
    assert _set(engine, pid, {"tips": "subscribed"}).status_code == 200
    assert subs.check(r, pid, "tips", "email", "ada@example.org") is None
    assert subs.check(r, pid, "news", "email", "ada@example.org") == "unsubscribed"
    assert subs.check(r, pid, "offers", "email", "ada@example.org") == "unsubscribed"
    r.close()


# -- double opt-in --


def test_double_opt_in_sends_a_confirmation_whose_link_subscribes(
    engine_factory: Any, settings: Any, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    mail = EmailSettings(url=f"smtp://127.0.0.1:{port}", from_address="shop@example.com",
                         public_url="https://kairos.example")  # fmt: skip
    engine = engine_factory(settings, email=mail)
    _groups(engine, letter=LETTER)
    pid = _person(engine, "ada")
    answer = _set(engine, "user_id:ada", {"letter": "subscribed"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["subscriptions"]["letter"]["state"] == "pending"
    assert answer.json()["confirmations"] == {"letter": {"sent": True, "message": (
        "letter is pending until the person follows the link in the confirmation email")}}  # fmt: skip
    r = _client(engine)
    assert subs.check(r, pid, "letter", "email", "ada@example.org") == "pending_confirmation"
    [raw] = handler.messages
    got = email.message_from_bytes(raw, policy=policy.default)
    assert got["To"] == "Ada@Example.org" and got["Subject"] == "Please confirm: The letter"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = got.get_body(("plain",)).get_content()
    link = re.search(r"https://kairos\.example(/v1/subscriptions/confirm/\S+)", text)
    assert link is not None, text
    confirm = engine.url + link.group(1)
    page = httpx.get(confirm)  # a scanner's prefetch confirms nothing
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert subs.check(r, pid, "letter", "email", "ada@example.org") == "pending_confirmation"
    done = httpx.post(confirm, data={"confirm": "1"})
    assert done.status_code == 200 and "you are subscribed to The letter" in done.text
    assert subs.check(r, pid, "letter", "email", "ada@example.org") is None
    assert _states(engine, pid)["letter"]["source"] == "confirm"
    # Subscribed already: asking again sends nothing more.
    assert "confirmations" not in _set(engine, pid, {"letter": "subscribed"}).json()
    assert len(handler.messages) == 1
    r.close()


def test_double_opt_in_without_an_smtp_server_says_so_and_stays_pending(engine: Engine) -> None:
    _groups(engine, letter=LETTER)
    pid = _person(engine, "ada")
    answer = _set(engine, pid, {"letter": "subscribed"}).json()
    assert answer["confirmations"]["letter"] == {"sent": False, "message": (
        "letter stays pending: no SMTP server is configured (KAIROS_SMTP_URL or [email] url), "
        "so no confirmation email was sent")}  # fmt: skip
    assert answer["subscriptions"]["letter"]["state"] == "pending"
    nobody = _person(engine, "bob", address=None)
    answer = _set(engine, nobody, {"letter": "subscribed"}).json()
    assert answer["confirmations"]["letter"]["message"] == (
        "letter stays pending: the person has no email address (an email trait or an email: "
        "identity) to confirm with"
    )


# -- the suppression list and the feedback webhook --


def _feedback(engine: Engine, body: bytes, secret: bytes | None, at: int | None = None,
              **headers: str) -> httpx.Response:  # fmt: skip
    if secret is not None:
        headers["X-Kairos-Signature"] = sign(secret, body, at or int(time.time()))
    headers["Content-Type"] = "application/json"
    return engine.client.post(f"{engine.url}/v1/messaging/feedback", content=body,
                              headers=headers)  # fmt: skip


def test_the_feedback_webhook_suppresses_on_hard_bounces_and_complaints(engine: Engine) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    listed = engine.client.get(f"{engine.url}/v1/subscriptions", headers=bearer()).json()
    secret = listed["feedback_secret"].encode()
    r = _client(engine)
    hard = b'{"type": "bounce", "email": "Gone@Example.org", "bounce_type": "hard"}'
    answer = _feedback(engine, hard, secret)
    assert answer.status_code == 200
    assert answer.json() == {"email": "gone@example.org", "result": "suppressed"}
    assert subs.check(r, "p_x", None, "email", "gone@example.org") == "suppressed"
    assert subs.check(r, "p_x", "news", "email", "gone@example.org") == "suppressed"
    soft = b'{"type": "bounce", "email": "full@example.org", "bounce_type": "soft"}'
    assert _feedback(engine, soft, secret).json()["result"] == "recorded"
    assert subs.check(r, "p_x", "news", "email", "full@example.org") is None
    # A complaint suppresses the address and unsubscribes its person from every email group.
    pid = _person(engine, "ada")
    _set(engine, pid, {"offers": "subscribed"})
    complaint = b'{"type": "complaint", "email": "ada@example.org"}'
    assert _feedback(engine, complaint, secret).json()["result"] == "suppressed"
    held = _states(engine, pid)
    assert {held[g]["state"] for g in held} == {"unsubscribed"}
    assert {held[g]["source"] for g in held} == {"complaint"}
    # The secret key may call it too (an admin replaying a provider's report).
    assert _feedback(engine, soft, None, Authorization=f"Bearer {SECRET_KEY}").status_code == 200
    refused = {
        "X-Kairos-Signature: does not match the body under the feedback secret":
            _feedback(engine, hard, b"wrong secret"),
        "X-Kairos-Signature: t is more than 300 seconds from now":
            _feedback(engine, hard, secret, at=int(time.time()) - 3600),
        "X-Kairos-Signature: expected t=<unix seconds>,v1=<hex HMAC-SHA256>":
            _feedback(engine, hard, None, **{"X-Kairos-Signature": "v1=abc"}),
        "missing key: send it as HTTP Basic username or Bearer token":
            _feedback(engine, hard, None),
    }  # fmt: skip
    for message, answer in refused.items():
        assert answer.status_code == 401 and answer.json()["message"] == message, answer.text
    tampered = _feedback(engine, hard, secret)
    assert tampered.status_code == 200  # (the same body again is fine)
    stamp = int(time.time())
    mac = hmac.new(secret, b"%d." % stamp + hard, hashlib.sha256).hexdigest()
    other = hard.replace(b"Gone", b"Else")
    answer = _feedback(engine, other, None, **{"X-Kairos-Signature": f"t={stamp},v1={mac}"})
    assert answer.status_code == 401
    invalid = _feedback(engine, b'{"type": "bounced", "email": "a@b.c"}', secret)
    assert invalid.status_code == 400 and invalid.json()["message"] == (
        "$.type: Invalid enum value 'bounced' — expected one of bounce, complaint"
    )
    r.close()


def test_admins_read_and_lift_suppressions(engine: Engine) -> None:
    r = _client(engine)
    suppression.block(r, "email", "gone@example.org", "manual", "asked by phone")
    shown = engine.client.get(f"{engine.url}/v1/suppressions/GONE@example.org", headers=bearer())
    assert shown.status_code == 200
    body = shown.json()
    assert (body["email"], body["suppressed"], body["reason"], body["detail"]) == (
        "gone@example.org", True, "manual", "asked by phone")  # fmt: skip
    assert suppression.size(r) == 1
    lifted = engine.client.delete(f"{engine.url}/v1/suppressions/gone@example.org",
                                  headers=bearer())  # fmt: skip
    assert lifted.json() == {"email": "gone@example.org", "deleted": True}
    assert suppression.size(r) == 0
    for method in ("GET", "DELETE"):
        answer = engine.client.request(method, f"{engine.url}/v1/suppressions/gone@example.org",
                                       headers=bearer())  # fmt: skip
        assert answer.status_code == 404
        assert answer.json()["message"] == "gone@example.org is not on the suppression list"
    bad = engine.client.get(f"{engine.url}/v1/suppressions/not-an-address", headers=bearer())
    assert bad.status_code == 400 and bad.json()["message"] == (
        "$.email: an email address, e.g. ada@example.com; got 'not-an-address'"
    )
    r.close()


def test_a_5xx_from_the_smtp_server_suppresses_the_address(
    r: redis.Redis, inbox: tuple[Inbox, int]
) -> None:
    _, port = inbox
    sender = Sender.of(f"smtp://127.0.0.1:{port}", "shop@example.com")
    to = "bounce@example.org"
    message = compose(sender, to, "Hi", "<p>Hi</p>", "Hi", key="k", unsubscribe_url="https://u")
    outcome = asyncio.run(deliver(sender, to, message))
    assert outcome.status == "bounced"
    suppression.record_bounce(r, to, f"{outcome.code} {outcome.detail}")
    assert subs.check(r, "p_1", None, "email", "Bounce@example.org") == "suppressed"
    found = suppression.entry(r, "email", to)
    assert found.reason == "bounce" and found.detail.startswith("550")


# -- the send-time check --


def test_check_answers_each_reason(r: redis.Redis) -> None:
    subs.put_group(r, "news", subs.Group(name="News", channel="email", default="opt_out"))
    subs.put_group(r, "offers", subs.Group(name="Offers", channel="email"))
    subs.put_group(r, "chat", subs.Group(name="Chat", channel="discord", default="opt_out"))
    at = "ada@example.org"
    assert subs.check(r, "p_1", "news", "email", at) is None
    assert subs.check(r, "p_1", None, "email", at) is None  # transactional
    assert subs.check(r, "p_1", "nope", "email", at) == "unknown_group"
    assert subs.check(r, "p_1", "chat", "email", at) == "channel_mismatch"
    assert subs.check(r, "p_1", "news", "email", None) == "no_address"
    assert subs.check(r, "p_1", None, "email", None) == "no_address"
    assert subs.check(r, "p_1", "offers", "email", at) == "not_subscribed"
    subs.set_state(r, "p_1", "offers", "pending", "api", spool=False)
    assert subs.check(r, "p_1", "offers", "email", at) == "pending_confirmation"
    subs.set_state(r, "p_1", "offers", "subscribed", "confirm", spool=False)
    assert subs.check(r, "p_1", "offers", "email", at) is None
    subs.set_state(r, "p_1", "news", "unsubscribed", "api", spool=False)
    assert subs.check(r, "p_1", "news", "email", at) == "unsubscribed"
    assert subs.check(r, "p_2", "news", "email", at) is None  # no address given to suppress
    suppression.unsubscribe_groups(r, "email", at, ["offers"])
    assert subs.check(r, "p_2", "offers", "email", at) == "unsubscribed"
    suppression.block(r, "email", at, "complaint")
    assert subs.check(r, "p_1", None, "email", at) == "suppressed"
    assert subs.check(r, "p_1", "offers", "email", at) == "suppressed"
    # A new definition reaches the cached copy (its version moved).
    subs.put_group(r, "offers", subs.Group(name="Offers", channel="discord"))
    assert subs.check(r, "p_1", "offers", "email", at) == "channel_mismatch"
    assert set(subs.REASONS) == {"unknown_group", "channel_mismatch", "no_address", "suppressed",
                                 "unsubscribed", "pending_confirmation", "not_subscribed"}  # fmt: skip


# -- the dashboard --


def test_the_dashboard_shows_people_per_group_and_the_latest_unsubscribes(engine: Engine) -> None:
    _groups(engine, news=NEWS, offers=OFFERS)
    pid = _person(engine, "ada")
    _set(engine, pid, {"news": "unsubscribed", "offers": "subscribed"})
    eventually(lambda: engine.sql(
        "SELECT count() FROM events WHERE event = 'Subscription Changed'")[0][0] == 2)  # fmt: skip
    with httpx.Client(base_url=engine.url) as browser:
        form = browser.get("/dashboard/login").text
        token = form.split('name="csrf" value="')[1].split('"')[0]
        browser.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": token})
        page = browser.get("/dashboard/subscriptions")
        home = browser.get("/dashboard")
    assert page.status_code == 200, page.text
    assert 'href="/dashboard/subscriptions"' in home.text
    assert "Weekly news" in page.text and "Offers" in page.text
    assert 'data-label="unsubscribed">1</td>' in page.text
    assert 'data-label="subscribed">1</td>' in page.text
    assert "1 address suppressed" in page.text
    assert f"/dashboard/profiles?id={pid}" in page.text  # among the latest unsubscribes


def test_a_tracked_subscribe_to_a_double_opt_in_group_sends_its_confirmation(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    _groups(engine, letter=LETTER)
    pid = _person(engine, "ada")
    mail_worker()
    body = {"userId": "ada", "event": "Subscribed", "properties": {"group": "letter"}}
    assert engine.post("/v1/track", body).status_code == 200
    eventually(lambda: handler.messages)
    got = email.message_from_bytes(handler.messages[0], policy=policy.default)
    assert got["To"] == "Ada@Example.org" and got["Subject"] == "Please confirm: The letter"
    link = re.search(r"(/v1/subscriptions/confirm/\S+)", got.get_body(("plain",)).get_content())
    assert link is not None
    assert _states(engine, pid)["letter"]["state"] == "pending"
    done = httpx.post(engine.url + link.group(1), data={"confirm": "1"})
    assert done.status_code == 200 and _states(engine, pid)["letter"]["state"] == "subscribed"
    time.sleep(0.5)
    assert len(handler.messages) == 1  # once: a replayed batch changes no state, sends nothing
