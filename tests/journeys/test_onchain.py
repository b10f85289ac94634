"""On-chain events: intake (secret key or signed webhook), dedup by log, storage, and the
NFT-mint onboarding journey they start."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from collector.identifiers import checksum_address
from journeys.templates import nft_onboarding
from tests.conftest import Engine
from tests.helpers import bearer, eventually
from tests.journeys.conftest import Clock, Receiver, put_journey

CONTRACT = "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359"
OTHER = "0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb"
WALLET = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
CHECKED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def mint(log_index: int = 3, contract: str = CONTRACT, kind: str = "mint") -> dict[str, Any]:
    return {"chainId": 1, "txHash": "0x" + "ab" * 32, "logIndex": log_index,
            "blockTime": "2026-11-26T10:00:00Z", "kind": kind, "wallet": WALLET,
            "contract": contract, "tokenId": "42", "amount": "1"}  # fmt: skip


def deliver(engine: Engine, *events: dict[str, Any], **headers: str) -> Any:
    body = json.dumps({"events": list(events)}).encode()
    given = headers or bearer()
    return engine.client.post(f"{engine.url}/v1/onchain", content=body, headers=given)


def signed(engine: Engine, body: bytes, secret: str, at: int | None = None) -> Any:
    stamp = str(at or int(time.time()))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"X-Kairos-Signature": f"t={stamp},v1={digest}"}
    return engine.client.post(f"{engine.url}/v1/onchain", content=body, headers=headers)


def test_intake_stores_each_log_once(engine: Engine) -> None:
    assert deliver(engine, mint(), **{"X-Nothing": "1"}).status_code == 401
    first = deliver(engine, mint(), mint(4, kind="stake"), mint(4, kind="stake"))
    assert first.status_code == 200 and first.json() == {"accepted": 2, "duplicates": 1}
    again = deliver(engine, mint())
    assert again.json() == {"accepted": 0, "duplicates": 1}
    rows = eventually(lambda: engine.sql(
        "SELECT event, anonymous_id, JSONExtractString(properties, 'contract'), "
        "JSONExtractString(properties, 'token_id') FROM events WHERE event LIKE 'Onchain %' "
        "ORDER BY event") if len(engine.sql("SELECT 1 FROM events WHERE event LIKE 'Onchain %'")) == 2
        else None)  # fmt: skip
    assert rows == [["Onchain Mint", f"wallet:{CHECKED}", checksum_address(CONTRACT), "42"],
                    ["Onchain Stake", f"wallet:{CHECKED}", checksum_address(CONTRACT), "42"]]  # fmt: skip
    # The wallet is a profile of its own, whose events segments can count.
    profile = engine.client.get(f"{engine.url}/v1/profiles/anonymous_id:wallet:{CHECKED}",
                                headers=bearer()).json()  # fmt: skip
    assert profile["computed"]["event_counts"] == {"Onchain Mint": 1, "Onchain Stake": 1}


def test_a_signed_webhook_from_an_indexer(engine: Engine) -> None:
    secret = engine.client.get(f"{engine.url}/v1/onchain", headers=bearer()).json()["secret"]
    body = json.dumps({"events": [mint()]}).encode()
    assert signed(engine, body, secret).json() == {"accepted": 1, "duplicates": 0}
    assert signed(engine, body, "wrong").status_code == 401
    assert signed(engine, body, secret, at=int(time.time()) - 3600).status_code == 401  # replayed


def test_bad_events_name_the_field(engine: Engine) -> None:
    bad = deliver(engine, mint(), {**mint(5), "txHash": "0x12"})
    assert bad.status_code == 400 and "$.events[1].txHash" in bad.json()["message"]
    wrong = deliver(engine, {**mint(), "wallet": "0x5AAEB6053f3e94c9b9a09f33669435e7ef1beaed"})
    assert wrong.status_code == 400 and "checksum" in wrong.json()["message"]


def test_a_mint_starts_onboarding_and_a_duplicate_does_not(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    put_journey(engine, "nft", nft_onboarding(f"{receiver.url}/holders", CONTRACT))
    assert deliver(engine, mint(7, contract=OTHER)).json()["accepted"] == 1  # another collection
    assert deliver(engine, mint()).json()["accepted"] == 1
    eventually(lambda: receiver.received)
    assert deliver(engine, mint()).json() == {"accepted": 0, "duplicates": 1}  # redelivered
    time.sleep(1.5)
    assert len(receiver.received) == 1
    welcome = receiver.received[0]["json"]
    assert welcome["kind"] == "holder_welcome" and welcome["journey"] == "nft"
    assert welcome["person"]["identities"]["anonymous_id"] == [f"wallet:{CHECKED}"]
    # Three days on, it has not staked: the nudge.
    clock.forward(3 * 24 * 60 + 1)
    eventually(lambda: len(receiver.received) == 2)
    assert receiver.received[1]["json"]["kind"] == "stake_nudge"


def siwe(address: str, nonce: str) -> str:
    return (f"shop.example wants you to sign in with your Ethereum account:\n{address}\n\n"
            f"Link this wallet to your account.\n\nURI: https://shop.example\nVersion: 1\n"
            f"Chain ID: 1\nNonce: {nonce}\nIssued At: 2026-11-26T10:00:00Z")  # fmt: skip


def test_a_proven_wallet_joins_its_user_and_a_bad_signature_is_refused(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    owner, stranger = Account.from_key("0x" + "11" * 32), Account.from_key("0x" + "22" * 32)

    def attempt(signer: Any, nonce: str, user: str = "ada") -> Any:
        message = siwe(owner.address, nonce)
        signature = signer.sign_message(encode_defunct(text=message)).signature.hex()
        body = {"userId": user, "message": message,
                "signature": signature if signature.startswith("0x") else "0x" + signature}  # fmt: skip
        return engine.post("/v1/wallets/link", body)

    def issued() -> str:
        return str(engine.post("/v1/wallets/nonce", {}).json()["nonce"])

    assert engine.post("/v1/track", {"userId": "ada", "event": "Signed Up"}).status_code == 200
    refused = attempt(stranger, issued())
    assert refused.status_code == 401 and "$.signature" in refused.json()["message"]
    assert attempt(owner, "never-issued").status_code == 400
    nonce = issued()
    linked = attempt(owner, nonce)
    assert linked.status_code == 200 and linked.json() == {"linked": owner.address, "userId": "ada"}
    assert attempt(owner, nonce).status_code == 400  # a nonce proves once
    # An anonymous caller cannot claim the wallet's identity by naming it.
    claim = engine.post(
        "/v1/identify", {"userId": "mallory", "anonymousId": f"wallet:{owner.address}"}
    )
    assert claim.status_code == 400 and "wallet:" in claim.json()["message"]
    # The linked wallet's mint starts onboarding for Ada.
    put_journey(engine, "nft", nft_onboarding(f"{receiver.url}/holders", CONTRACT))
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/wallet:{owner.address}",
                                         headers=bearer()).status_code == 200)  # fmt: skip
    linked_mint = {**mint(), "wallet": owner.address.lower()}
    assert deliver(engine, linked_mint).json()["accepted"] == 1
    eventually(lambda: receiver.received)
    assert deliver(engine, linked_mint).json() == {"accepted": 0, "duplicates": 1}
    time.sleep(1.5)
    assert len(receiver.received) == 1  # the redelivered log started nothing
    person = receiver.received[0]["json"]["person"]
    assert person["identities"]["user_id"] == ["ada"]
    assert f"wallet:{owner.address}" in person["identities"]["anonymous_id"]
    assert person["traits"]["wallet"] == owner.address


def test_segments_on_holdings_and_staking(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    for key, rule in {
        "holders": {
            "field": f"computed.holdings.{checksum_address(CONTRACT)}",
            "op": "gt",
            "value": 0,
        },
        "stakers": {"event": "Onchain Stake", "min": 1, "days": 30},
    }.items():
        answer = engine.client.put(f"{engine.url}/v1/segments/{key}", json={"rule": rule},
                                   headers=bearer())  # fmt: skip
        assert answer.status_code in (200, 201), answer.text
    recent = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    assert deliver(engine, {**mint(1), "blockTime": recent},
                   {**mint(2, kind="stake"), "blockTime": recent}).status_code == 200  # fmt: skip

    def segments() -> list[str]:
        found = engine.client.get(f"{engine.url}/v1/profiles/wallet:{WALLET}", headers=bearer())
        return sorted(found.json().get("segments", [])) if found.status_code == 200 else []

    assert eventually(lambda: segments() == ["holders", "stakers"])
    sold = {**mint(3, kind="transfer"), "blockTime": recent, "direction": "out"}
    assert deliver(engine, sold).status_code == 200
    assert eventually(lambda: segments() == ["stakers"])  # no longer holds one
