"""Broadcasts end to end: a segment, a template (or variants by a placement), a holdout and a
throttle, sent by the journeys worker to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from journeys.broadcasts import BROADCAST, held_out, send_time
from tests.conftest import Engine
from tests.helpers import bearer, eventually, members, put_placement
from tests.journeys.conftest import Inbox, MailWorker, events

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

NEWS = {
    "subject": "Spring news for {{ traits.first_name or 'you' }}",
    "html": '<p>Spring is here.</p><p><a href="https://shop.example/spring">Shop</a></p>',
}


def call(engine: Engine, method: str, path: str, body: Any = None) -> httpx.Response:
    return engine.client.request(method, f"{engine.url}{path}", json=body, headers=bearer())


def readers(engine: Engine, count: int, without_email: int = 0) -> set[str]:
    """``count`` newsletter readers (the last ``without_email`` of them with no address) and
    two people outside the segment; the segment's members once the profiles are in."""
    segment = {"name": "Readers", "rule": {"field": "traits.newsletter", "op": "eq",
                                           "value": True}}  # fmt: skip
    assert call(engine, "PUT", "/v1/segments/readers", segment).status_code == 201
    batch = [{"type": "identify", "anonymousId": f"r{i}",
              "traits": {"newsletter": True, "first_name": f"R{i}",
                         **({"email": f"r{i}@example.org"} if i < count - without_email else {})}}
             for i in range(count)]  # fmt: skip
    batch += [{"type": "identify", "anonymousId": f"x{i}", "traits": {"email": f"x{i}@ex.org"}}
              for i in range(2)]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
    return set(eventually(lambda: (found := members(engine, "readers")) and len(found) == count
                          and found))  # fmt: skip


def setup(engine: Engine, **broadcast: Any) -> set[str]:
    found = readers(engine, 30, without_email=1)
    assert call(engine, "PUT", "/v1/templates/news", NEWS).status_code == 201
    body = {"segment": "readers", "template": "news", "throttle": 1000, **broadcast}
    answer = call(engine, "PUT", "/v1/broadcasts/spring", body)
    assert answer.status_code == 201, answer.text
    return found


def status(engine: Engine, key: str = "spring") -> dict[str, Any]:
    return dict(call(engine, "GET", f"/v1/broadcasts/{key}").json()["progress"])


def test_a_broadcast_reaches_each_member_once_and_holds_out_its_share(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    people = setup(engine, holdout=0.2, goal="Order Completed")
    kept = {p for p in people if held_out("spring", p, 0.2)}
    assert 0 < len(kept) < 15  # the share is about a fifth, sticky by person
    dry = call(engine, "POST", "/v1/broadcasts/spring/dry-run").json()
    assert dry["audience"] == 30 and dry["held_out"] == len(kept)
    nameless = call(engine, "GET", "/v1/profiles/anonymous_id:r29").json()["id"]  # no address
    assert dry["skipped"] == ({} if nameless in kept else {"no_address": 1})
    assert dry["would_send"] == 30 - len(kept) - sum(dry["skipped"].values())
    assert handler.messages == []  # a dry run sends nothing
    mail_worker()
    assert call(engine, "POST", "/v1/broadcasts/spring/start").json()["status"] == "scanning"
    eventually(lambda: status(engine)["status"] == "completed")
    eventually(lambda: len(handler.messages) == dry["would_send"])
    time.sleep(1.0)  # nothing more comes
    to = sorted(email.message_from_bytes(m)["To"] for m in handler.messages)
    assert len(to) == len(set(to)) == dry["would_send"]
    assert "x0@ex.org" not in to and "x1@ex.org" not in to  # not in the segment
    progress = status(engine)
    assert progress["scanned"] >= 30 and progress["held_out"] >= len(kept)
    assert progress["pending"] == 0
    results = eventually(lambda: (found := call(engine, "GET", "/v1/broadcasts/spring/results")
                                  .json()["groups"]) and found.get("treated", {}).get("sent")
                         == dry["would_send"] and found)  # fmt: skip
    assert results["holdout"]["targeted"] == len(kept) and results["holdout"]["sent"] == 0
    assert results["treated"]["targeted"] == 30 - len(kept)
    assert results["treated"]["skipped"] == dry["skipped"]
    # Every treated reader with an address orders; no held-out one does: the lift shows it.
    buyers = [f"r{i}" for i in range(29) if call(engine, "GET", f"/v1/profiles/anonymous_id:r{i}"
                                                 ).json()["id"] not in kept]  # fmt: skip
    orders = [{"type": "track", "anonymousId": who, "event": "Order Completed",
               "properties": {"revenue": 40}} for who in buyers]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": orders}).status_code == 200
    lift = eventually(lambda: (found := call(engine, "GET", "/v1/broadcasts/spring/results")
                               .json()["lift"]) and found[0]["converted"] == len(buyers)
                      and found)  # fmt: skip
    treated, holdout = lift
    assert (treated["group"], holdout["group"]) == ("treated", "holdout")
    assert treated["people"] == 30 - len(kept) and holdout["people"] == len(kept)
    assert holdout["converted"] == 0 and treated["revenue"] == 40 * len(buyers)
    assert treated["vsHoldout"]["conversion"]["difference"] == pytest.approx(
        len(buyers) / (30 - len(kept))
    )
    again = call(engine, "POST", "/v1/broadcasts/spring/start")
    assert again.status_code == 409
    assert again.json()["message"] == ("start: the broadcast is completed; start is for a "
                                       "broadcast that is draft")  # fmt: skip
    changed = call(engine, "PUT", "/v1/broadcasts/spring", {"segment": "readers",
                                                            "template": "news"})  # fmt: skip
    assert changed.status_code == 409
    assert changed.json()["message"] == "the broadcast is completed: only a draft may be changed"


def test_pause_stops_the_feed_resume_finishes_it_and_cancel_drops_the_rest(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    setup(engine, throttle=4)
    mail_worker()
    call(engine, "POST", "/v1/broadcasts/spring/start")
    eventually(lambda: len(handler.messages) >= 2)
    assert call(engine, "POST", "/v1/broadcasts/spring/pause").json()["status"] == "paused"
    time.sleep(1.0)  # what was in flight lands
    paused_at = len(handler.messages)
    time.sleep(2.0)
    assert len(handler.messages) == paused_at < 29  # nothing while paused
    assert status(engine)["status"] == "paused"
    assert call(engine, "POST", "/v1/broadcasts/spring/resume").json()["status"] in (
        "scanning",
        "sending",
    )
    eventually(lambda: len(handler.messages) > paused_at + 2)
    assert call(engine, "POST", "/v1/broadcasts/spring/cancel").json()["status"] == "cancelled"
    time.sleep(1.5)
    cancelled_at = len(handler.messages)
    time.sleep(1.5)
    assert len(handler.messages) == cancelled_at < 29  # the rest was dropped
    assert status(engine)["pending"] == 0
    resumed = call(engine, "POST", "/v1/broadcasts/spring/resume")
    assert resumed.status_code == 409
    assert len({email.message_from_bytes(m)["To"] for m in handler.messages}) == cancelled_at


def test_variants_are_chosen_per_recipient_by_the_placement(
    engine: Engine, inbox: tuple[Inbox, int], mail_worker: MailWorker
) -> None:
    handler, _ = inbox
    readers(engine, 12)
    for name, subject in (("sub_a", "Spring is here"), ("sub_b", "20% off this spring")):
        call(engine, "PUT", f"/v1/templates/{name}", {**NEWS, "subject": subject})
    put_placement(engine, "spring_subject", {
        "variants": [{"key": "a", "content": {}}, {"key": "b", "content": {}}],
        "policy": {"kind": "ab"}, "reward": {"kind": "click"}})  # fmt: skip
    body = {"segment": "readers", "throttle": 1000,
            "variants": {"placement": "spring_subject",
                         "templates": {"a": "sub_a", "b": "sub_b"}}}  # fmt: skip
    assert call(engine, "PUT", "/v1/broadcasts/spring", body).status_code == 201
    mail_worker()
    call(engine, "POST", "/v1/broadcasts/spring/start")
    eventually(lambda: len(handler.messages) == 12)
    subjects = [email.message_from_bytes(m)["Subject"] for m in handler.messages]
    targeted = eventually(lambda: (found := events(engine, "Broadcast Targeted"))
                          and len(found) == 12 and found)  # fmt: skip
    by_group = {g: sum(t["group"] == g for t in targeted) for g in ("a", "b")}
    assert subjects.count("Spring is here") == by_group["a"] > 0
    assert subjects.count("20% off this spring") == by_group["b"] > 0


def test_a_broadcast_names_what_exists_and_keeps_its_holdout_measurable(engine: Engine) -> None:
    readers(engine, 2)
    call(engine, "PUT", "/v1/templates/news", NEWS)
    cases = [
        ({"segment": "nope", "template": "news"}, "$.segment: no segment 'nope'"),
        ({"segment": "readers", "template": "nope"}, "$.template: no template 'nope'"),
        ({"segment": "readers"}, "$: a broadcast has either `template` or `variants`"),
        ({"segment": "readers", "template": "news", "holdout": 0.1},
         "$.goal: must be set with a holdout: it is what the holdout measures"),
        ({"segment": "readers", "template": "news", "throttle": 0},
         "$.throttle: Expected `float` > 0.0"),
        ({"segment": "readers", "variants": {"placement": "nope", "templates": {
            "a": "news", "b": "news"}}}, "$.variants.placement: no placement 'nope'"),
    ]  # fmt: skip
    for body, message in cases:
        answer = call(engine, "PUT", "/v1/broadcasts/bad", body)
        assert answer.status_code == 400 and answer.json()["message"] == message, body
    assert call(engine, "POST", "/v1/broadcasts/none/start").status_code == 404
    draft = {"segment": "readers", "template": "news"}
    assert call(engine, "PUT", "/v1/broadcasts/ok", draft).status_code == 201
    paused = call(engine, "POST", "/v1/broadcasts/ok/pause")
    assert paused.status_code == 409 and paused.json()["message"] == (
        "pause: the broadcast is draft; pause is for a broadcast that is scanning or sending"
    )
    assert call(engine, "DELETE", "/v1/broadcasts/ok").json() == {"key": "ok", "deleted": True}


def test_a_local_send_time_is_that_hour_on_each_persons_clock() -> None:
    broadcast = BROADCAST.decode(b'{"segment": "s", "template": "t", "local_time": "10:00",'
                                 b' "send_at": "2026-04-02T06:00:00Z"}')  # fmt: skip
    started = 0
    berlin = send_time(broadcast, started, "Europe/Berlin")  # 10:00 CEST is 08:00 UTC
    tokyo = send_time(broadcast, started, "Asia/Tokyo")  # 15:00 there already: the next day
    assert datetime.fromtimestamp(berlin / 1000, UTC).isoformat() == "2026-04-02T08:00:00+00:00"
    assert datetime.fromtimestamp(tokyo / 1000, UTC).isoformat() == "2026-04-03T01:00:00+00:00"
    assert send_time(broadcast, started, None) == int(
        datetime(2026, 4, 2, 10, tzinfo=UTC).timestamp() * 1000
    )
