"""Identity verification on /v1/decide: the write key is in every page, so a browser's userId
counts only with its userHash. A victim identified server-side, an attacker holding only the
write key; real Redis and embedded ClickHouse."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from decisions.identity import Verifier, is_contact, user_hash, without_contact
from edge.api.app import create_app
from edge.runtime.config import ConfigError, load_config
from edge.runtime.settings import Settings
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import bearer, eventually, put_placement, signed, wait_catalog

EMAIL = "victim-7f3a@example.com"
VICTIM = {"userId": "victoria", "anonymousId": "victoria-laptop"}
ITEMS = [{"id": i, "name": f"Item {i}", "url": f"https://shop.example/{i}", "price": 10}
         for i in ("hat1", "hat2", "shoe3", "bag4")]  # fmt: skip
PLACEMENTS = {
    "greeting": {"variants": [{"key": "hi", "template": "Hi {{ first_name }} {{ email }}"}]},
    # Whatever a hostile template tries, contact traits are not among what it is given.
    "hostile": {
        "variants": [
            {
                "key": "all",
                "template": "{{ traits.email }}|{{ traits['phone'] }}|{{ traits.billing }}|"
                "{% for k, v in traits|dictsort %}{{ k }}={{ v }};{% endfor %}",
            }
        ]
    },  # fmt: skip
    "viewed": {"recommend": {"n": 4, "backfill": False}, "variants": [{"key": "recently_viewed"}]},
    "cart": {"recommend": {"n": 4, "backfill": False}, "variants": [{"key": "abandoned_cart"}]},
}


def _victim(engine: Engine) -> None:
    """Victoria, identified by the shop's server: name, contact traits, views and a cart."""
    answer = engine.post("/v1/catalog/items", {"items": ITEMS}, key=None, headers=bearer())
    assert answer.status_code == 200, answer.text
    traits = {"first_name": "Victoria", "email": EMAIL, "phone": "+44 20 7946 0000",
              "plan": "pro", "billing": {"street": "1 Victim Road", "country": "UK"}}  # fmt: skip
    batch = [
        {"type": "identify", **VICTIM, "traits": traits},
        {"type": "track", "event": "Product Viewed", **VICTIM, "properties": {"product_id": "hat1"}},
        {"type": "track", "event": "Product Viewed", **VICTIM, "properties": {"product_id": "hat2"}},
        {"type": "track", "event": "Product Added", **VICTIM, "properties": {"product_id": "shoe3"}},
    ]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/user_id:victoria",
                                         headers=bearer()).json().get("computed", {}).get("cart"))  # fmt: skip
    for key, body in PLACEMENTS.items():
        put_placement(engine, key, body)
    for key in PLACEMENTS:
        wait_catalog(engine, key)


def ask(engine: Engine, key: str | None = None, **body: Any) -> dict[str, Any]:
    """The whole answer of /v1/decide for every test placement (write key unless ``key``)."""
    answer = engine.post("/v1/decide", {"placements": list(PLACEMENTS), **body},
                         **({"key": key} if key else {}))  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _items(answer: dict[str, Any], key: str) -> list[str]:
    return [i["id"] for i in answer["decisions"][key].get("items", [])]


def _logged(engine: Engine, answer: dict[str, Any]) -> list[Any]:
    decision = answer["decisions"]["greeting"]["decisionId"]
    return list(eventually(lambda: engine.sql(
        "SELECT userId, anonymousId, profileId FROM decisions "
        f"WHERE decisionId = '{decision}'")))  # fmt: skip


def _victims_profile(engine: Engine) -> str:
    found = engine.client.get(f"{engine.url}/v1/profiles/user_id:victoria", headers=bearer())
    return str(found.json()["id"])


@pytest.fixture
def shop(engine: Engine) -> Engine:
    _victim(engine)
    return engine


def test_a_userid_without_its_hash_shows_nothing_of_that_person(shop: Engine) -> None:
    wrong = user_hash("not the identity secret", "victoria")
    for body in (
        {"userId": "victoria"},  # no anonymous id: an unknown visitor
        {"userId": "victoria", "anonymousId": "attacker-1"},
        {"userId": "victoria", "anonymousId": "attacker-1", "userHash": wrong},
        {"userId": "victoria", "anonymousId": "attacker-1", "userHash": "ZZ not hex ü" * 5},
        {"userId": "victoria", "userHash": user_hash(shop.settings.identity_secret, "victor")},
    ):
        answer = ask(shop, **body)
        assert answer["identity"] == "unverified", body
        assert answer["decisions"]["greeting"]["content"] == "Hi  ", body
        assert _items(answer, "viewed") == [] and _items(answer, "cart") == [], body
        hostile = answer["decisions"]["hostile"]["content"]
        assert "Victoria" not in hostile and "victim" not in hostile.lower(), hostile
        assert "44 20" not in hostile, hostile
    # The decisions are the device's (or no one's), not Victoria's.
    assert _logged(shop, ask(shop, userId="victoria")) == [["", "", ""]]
    assert _logged(shop, ask(shop, userId="victoria", anonymousId="attacker-1", userHash=wrong)
                   ) == [["", "attacker-1", ""]]  # fmt: skip


def test_the_right_hash_shows_the_person_and_logs_under_them(shop: Engine) -> None:
    answer = ask(shop, anonymousId="victoria-laptop", **signed(shop, "victoria"))
    assert answer["identity"] == "verified"
    assert answer["decisions"]["greeting"]["content"] == f"Hi Victoria {EMAIL}"
    assert _items(answer, "viewed") == ["hat2", "hat1"] and _items(answer, "cart") == ["shoe3"]
    hostile = answer["decisions"]["hostile"]["content"]
    assert hostile.startswith(f"{EMAIL}|+44 20 7946 0000|") and "1 Victim Road" in hostile
    assert _logged(shop, answer) == [["victoria", "victoria-laptop", _victims_profile(shop)]]
    # Any case of the hex digits, as other languages print them.
    upper = ask(shop, userId="victoria", userHash=signed(shop, "victoria")["userHash"].upper())
    assert upper["identity"] == "verified"


def test_a_device_linked_to_the_victim_by_the_write_key_is_not_the_victim(shop: Engine) -> None:
    """The write key may send an identify for anyone, which links the sender's device to that
    person's profile: without the person's userHash, that profile is not shown."""
    linked = {"userId": "victoria", "anonymousId": "attacker-2"}
    assert shop.post("/v1/identify", {**linked, "traits": {}}).status_code == 200
    eventually(lambda: shop.client.get(f"{shop.url}/v1/profiles/anonymous_id:attacker-2",
                                       headers=bearer()).json().get("id")
               == _victims_profile(shop))  # fmt: skip
    for body in ({"anonymousId": "attacker-2"}, {**linked}):
        answer = ask(shop, **body)
        assert answer["decisions"]["greeting"]["content"] == "Hi  ", body
        assert _items(answer, "viewed") == [] and _items(answer, "cart") == [], body
        assert _logged(shop, answer) == [["", "attacker-2", ""]], body
    assert "identity" not in ask(shop, anonymousId="attacker-2")  # it named no userId


def test_contact_traits_never_reach_an_unverified_browser(shop: Engine) -> None:
    """Even the visitor's own anonymous profile: an email typed at checkout is not shown back
    to whoever holds that browser's anonymous id; the first name is."""
    own = {"anonymousId": "sam-phone", "traits": {"first_name": "Sam", "email": "sam@example.com",
                                                  "zip": "N1 9GU", "plan": "basic"}}  # fmt: skip
    assert shop.post("/v1/identify", own).status_code == 200
    answer = eventually(lambda: (found := ask(shop, anonymousId="sam-phone"))["decisions"][
        "greeting"]["content"].startswith("Hi Sam") and found)  # fmt: skip
    assert answer["decisions"]["greeting"]["content"] == "Hi Sam "
    assert answer["decisions"]["hostile"]["content"] == "|||first_name=Sam;plan=basic;"
    assert "identity" not in answer


def test_the_secret_key_is_trusted_as_it_is(shop: Engine) -> None:
    answer = ask(shop, key=SECRET_KEY, userId="victoria")
    assert answer["identity"] == "verified"
    assert answer["decisions"]["greeting"]["content"] == f"Hi Victoria {EMAIL}"
    assert _items(answer, "viewed") == ["hat2", "hat1"]
    # The email systems' recommendations API too: the person's own items.
    found = shop.client.get(f"{shop.url}/v1/recommendations/user_id:victoria",
                            params={"placement": "cart"}, headers=bearer()).json()  # fmt: skip
    assert [i["id"] for i in found["items"]] == ["shoe3"]
    found = shop.client.get(f"{shop.url}/v1/recommendations/user_id:victoria",
                            params={"placement": "viewed"}, headers=bearer()).json()  # fmt: skip
    assert [i["id"] for i in found["items"]] == ["hat2", "hat1"]
    wrong = shop.post("/v1/decide", {"placements": ["greeting"], "userId": "victoria"},
                      key=SECRET_KEY + "x")  # fmt: skip
    assert wrong.status_code == 401 and wrong.json()["message"] == (
        "wrong key: no key of this engine (or one revoked or expired)"
    )


def test_with_verification_off_a_userid_is_taken_as_given(
    engine_factory: Any, settings: Settings
) -> None:
    shop = engine_factory(settings, identity_verification="off")
    _victim(shop)
    answer = ask(shop, userId="victoria", anonymousId="attacker-3")
    assert answer["identity"] == "unchecked"
    assert answer["decisions"]["greeting"]["content"] == f"Hi Victoria {EMAIL}"
    assert _items(answer, "viewed") == ["hat2", "hat1"] and _items(answer, "cart") == ["shoe3"]
    assert _logged(shop, answer) == [["victoria", "attacker-3", _victims_profile(shop)]]


def test_verification_off_warns_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kairos.app"):
        create_app(settings)
        assert not [r for r in caplog.records if "verification" in r.getMessage()]
        create_app(replace(settings, identity_verification="off"))
    (warning,) = [r for r in caplog.records if "verification" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "identity verification is off" in warning.msg


def test_the_config_file_switch(tmp_path: Path) -> None:
    assert load_config(None).identity.verification == "required"  # new installs
    path = tmp_path / "kairos.toml"
    path.write_text('[identity]\nverification = "off"\n')
    assert load_config(path).identity.verification == "off"
    path.write_text('[identity]\nverification = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"`\$\.identity\.verification`"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "contact"),
    [
        pytest.param(name, True, id=name)
        for name in ("email", "Email", "work_email", "emailAddress", "e-mail", "phone",
                     "phone_number", "mobile", "address", "address_line1", "street",
                     "postal_code", "postcode", "zip", "zipCode", "last_name", "lastName",
                     "surname", "name", "full_name", "birthday", "date_of_birth", "ip_address",
                     "emails", "addresses", "contacts")
    ] + [
        pytest.param(name, False, id=name)
        for name in ("first_name", "firstName", "plan", "city", "country", "zipper_size",
                     "mailing_list", "company", "lifetime_value", "segment", "nickname")
    ],
)  # fmt: skip
def test_which_traits_are_contact_data(name: str, contact: bool) -> None:
    assert is_contact(name) is contact


def test_contact_fields_go_at_any_depth() -> None:
    traits = {"first_name": "Ada", "email": "a@example.com",
              "billing": {"city": "Paris", "street": "1 Rue", "contacts": [{"phone": "1"}]},
              "orders": [{"id": 1, "shipping_address": "x"}]}  # fmt: skip
    assert without_contact(traits) == {
        "first_name": "Ada", "billing": {"city": "Paris"}, "orders": [{"id": 1}]}  # fmt: skip
    assert traits["email"] == "a@example.com"  # the profile's own copy is left alone


def test_the_hash_is_hmac_sha256_and_needs_a_secret() -> None:
    # The Python and Node examples of the README give this for ("s3cret", "u1").
    expected = "8f0d05b747219f7d9f13a44304bbda130918600ddbbd901632ba7d35db20554d"
    assert user_hash("s3cret", "u1") == expected
    assert Verifier("s3cret").verified("u1", expected)
    for given in (None, "", expected[:-1], expected + "0", user_hash("s3cret", "u2")):
        assert not Verifier("s3cret").verified("u1", given)
    assert not Verifier("").verified("u1", user_hash("", "u1"))  # no secret: nothing verifies
