"""On-chain events, normalised by an indexer, as the engine takes them (``POST /v1/onchain``).

Each event becomes a track event in the spool like any other — "Onchain Mint", "Onchain
Transfer", "Onchain Stake", … with the chain, transaction, contract, token and amount in its
properties — of the anonymous identity ``wallet:<checksummed address>``: every wallet is a
profile of its own until its owner proves it (a signed message), so nobody can claim a wallet
by naming it. Its messageId is made of (chain, transaction hash, log index), and that triple is
remembered for a year, so an indexer that delivers the same log twice stores it once.

Examples:
    >>> event = ONCHAIN.decode(b'{"events": [{"chainId": 1, "txHash": "0x' + b"ab" * 32 +
    ...     b'", "logIndex": 3, "blockTime": "2026-11-26T10:00:00Z", "kind": "mint", "wallet": '
    ...     b'"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "contract": '
    ...     b'"0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "tokenId": "42"}]}').events[0]
    >>> message = to_message(event, received_at=event.block_time)
    >>> message.event, message.anonymous_id, message.message_id[:20]
    ('Onchain Mint', 'wallet:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed', 'onchain-1-0xabababab')
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from collector import wire
from collector.identifiers import checksum_address

__all__ = ["KINDS", "ONCHAIN", "OnchainBatch", "OnchainEvent", "event_name", "seen_key",
           "to_message"]  # fmt: skip

KINDS = ("mint", "transfer", "stake", "unstake", "vote", "burn", "swap", "other")
MAX_EVENTS = 1_000
SEEN_TTL = 400 * 86_400  # seconds a delivered log is remembered
Address = Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{40}$")]


class OnchainEvent(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    chain_id: Annotated[int, msgspec.Meta(ge=1)]
    tx_hash: Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{64}$")]
    log_index: Annotated[int, msgspec.Meta(ge=0)]
    block_time: datetime
    kind: Literal["mint", "transfer", "stake", "unstake", "vote", "burn", "swap", "other"]
    wallet: Address  # whose event it is (a transfer's sender and receiver each get one)
    contract: Address
    token_id: Annotated[str, msgspec.Meta(max_length=80)] | None = None
    amount: Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]+(\.[0-9]+)?$")] | None = None
    direction: Literal["in", "out"] | None = None  # of a transfer, for ``wallet``

    def __post_init__(self) -> None:
        if self.block_time.tzinfo is None:
            raise ValueError("`blockTime` needs a time zone (e.g. Z)")
        self.wallet = checksum_address(self.wallet)
        self.contract = checksum_address(self.contract)
        self.tx_hash = self.tx_hash.lower()


class OnchainBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[OnchainEvent], msgspec.Meta(min_length=1, max_length=MAX_EVENTS)]


ONCHAIN = msgspec.json.Decoder(OnchainBatch)


def event_name(kind: str) -> str:
    return f"Onchain {kind.title()}"


def seen_key(event: OnchainEvent) -> str:
    return f"{{oc}}:{event.chain_id}:{event.tx_hash}:{event.log_index}"


def to_message(event: OnchainEvent, received_at: datetime) -> wire.Track:
    properties = {
        "chain_id": event.chain_id, "tx_hash": event.tx_hash, "log_index": event.log_index,
        "kind": event.kind, "wallet": event.wallet, "contract": event.contract,
        "token_id": event.token_id, "amount": event.amount, "direction": event.direction,
    }  # fmt: skip
    return wire.Track(
        event=event_name(event.kind),
        anonymous_id=f"wallet:{event.wallet}",
        message_id=f"onchain-{event.chain_id}-{event.tx_hash}-{event.log_index}",
        timestamp=event.block_time,
        received_at=received_at,
        properties=msgspec.Raw(
            msgspec.json.encode({k: v for k, v in properties.items() if v is not None})
        ),
        context=msgspec.Raw(b'{"library":{"name":"kairos-onchain"}}'),
    )
