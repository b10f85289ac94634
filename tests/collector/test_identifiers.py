from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collector import InvalidInput, read_request
from collector.identifiers import checksum_address, identities
from collector.wire import as_dict

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def read(*messages: dict[str, object]):
    body = json.dumps({"batch": list(messages)}).encode()
    return read_request(body, kind="batch", content_type="application/json",
                        content_encoding=None, received_at=NOW, ip=None)  # fmt: skip


@pytest.mark.parametrize(
    "address",
    [  # the test vectors of EIP-55
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ],
)
def test_checksum_address_matches_eip55(address: str) -> None:
    assert checksum_address(address) == address
    assert checksum_address(address.lower()) == address
    assert checksum_address("0x" + address[2:].upper()) == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        pytest.param(
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "fails its EIP-55 checksum",
            id="bad-checksum",
        ),
        pytest.param(
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea", "40 hexadecimal digits", id="short"
        ),
        pytest.param("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x followed by", id="no-prefix"),
        pytest.param("0xZZaeb6053f3e94c9b9a09f33669435e7ef1beaed", "hexadecimal", id="not-hex"),
    ],
)
def test_invalid_addresses_are_refused(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checksum_address(address)


def test_an_invalid_wallet_trait_is_a_400_naming_the_field() -> None:
    bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
    with pytest.raises(
        InvalidInput,
        match=r"^\$\.batch\[1\]\.traits\.wallet: must be a valid Ethereum address: fails its EIP-55 checksum",
    ):
        read({"type": "identify", "userId": "u1"},
             {"type": "identify", "userId": "u2", "traits": {"wallet": bad}})  # fmt: skip


def test_wallets_are_stored_checksummed() -> None:
    intake = read(
        {
            "type": "identify",
            "userId": "u",
            "traits": {"wallet": "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "plan": "pro"},
        }
    )
    (msg,) = intake.messages
    assert as_dict(msg.traits) == {
        "wallet": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "plan": "pro",
    }
    assert not [i for i in identities(msg) if i[0] == "wallet"]  # a trait, not a proof


@pytest.mark.parametrize(
    "value", ["anonymous", "null", "undefined", "0", "-1", "[object Object]", "NULL", " "]
)
@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_placeholder_ids_are_refused(field: str, value: str) -> None:
    other = {"anonymousId": "a1"} if field == "userId" else {"userId": "u1"}
    with pytest.raises(InvalidInput, match=rf"^\$\.batch\[0\]\.{field}: must be a real identifier"):
        read({"type": "track", "event": "E", field: value, **other})


def test_placeholder_previous_id_and_external_ids_are_refused() -> None:
    with pytest.raises(
        InvalidInput, match=r"^\$\.batch\[0\]\.previousId: must be a real identifier"
    ):
        read({"type": "alias", "userId": "u1", "previousId": "undefined"})
    with pytest.raises(
        InvalidInput, match=r"^\$\.batch\[0\]\.context\.externalIds: must hold real ids"
    ):
        read({"type": "track", "event": "E", "userId": "u",
              "context": {"externalIds": [{"id": "null", "type": "crm"}]}})  # fmt: skip


def test_bad_email_trait_is_refused() -> None:
    with pytest.raises(
        InvalidInput, match=r"^\$\.batch\[0\]\.traits\.email: must be an email address"
    ):
        read({"type": "identify", "userId": "u", "traits": {"email": "not an email"}})


def test_identities_of_a_message() -> None:
    (msg,) = read({"type": "identify", "userId": "u1", "anonymousId": "a1",
                   "traits": {"email": " Ada@Example.COM "},
                   "context": {"externalIds": [{"id": "42", "type": "crm_id", "collection": "users"}],
                               "traits": {"wallet": "0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb"}}}).messages  # fmt: skip
    assert identities(msg) == [  # the wallet trait is no identity until it is proven
        ("user_id", "u1"), ("anonymous_id", "a1"), ("email", "ada@example.com"),
        ("external", "crm_id:42"),
    ]  # fmt: skip


def test_the_wallet_identity_is_the_engines_own() -> None:
    with pytest.raises(
        InvalidInput, match=r"^\$\.batch\[0\]\.anonymousId: must not start with wallet:"
    ):
        read(
            {
                "type": "track",
                "event": "X",
                "anonymousId": "wallet:0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb",
            }
        )
    with pytest.raises(InvalidInput, match=r"previousId"):
        read({"type": "alias", "userId": "u", "previousId": "wallet:0x1"})
