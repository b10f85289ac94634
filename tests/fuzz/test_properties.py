"""Hypothesis property tests: the wire decoders never fail in an unplanned way, and the bandits'
learned state merges like sufficient statistics should.

Decoders (``collector.intake.read_request`` behind the tracking API, ``decisions.choice.read_ask``
behind ``/v1/decide``): any bytes and any JSON either decode or raise the collector's
``InvalidInput`` whose message leads with the path at fault; valid messages round-trip.

Merges (``bandits.stats`` and every policy's ``merge``): associative, commutative, the empty
state is the identity, and merging what two halves of the data taught equals what the whole
taught. Derandomized with bounded examples, so CI sees the same cases every run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandits.abtest import ABTest
from bandits.linear import LinearThompson, LinUCB
from bandits.mab import UCB1, BetaThompson, EpsilonGreedy, GaussianThompson
from bandits.policy import Policy
from bandits.stats import Paired, Sample
from collector import wire
from collector.errors import InvalidInput
from collector.intake import read_request
from decisions.choice import read_ask
from edge.routes.tracking import KINDS

BOUNDED = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)

# -- the wire decoders --

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = ["type", "userId", "anonymousId", "event", "name", "messageId", "timestamp", "sentAt",
           "previousId", "groupId", "properties", "traits", "context", "writeKey", "batch",
           "placements", "channel"]  # fmt: skip
# Objects with the fields the decoders look for, holding anything: what reaches past the parser.
near_messages = st.dictionaries(st.sampled_from(_FIELDS), json_values, max_size=6)
near_batches = st.fixed_dictionaries({"batch": st.lists(near_messages, max_size=3)})
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_messages.map(lambda v: json.dumps(v).encode())
    | near_batches.map(lambda v: json.dumps(v).encode())
)


def _intake(body: bytes, kind: str) -> Any:
    return read_request(body, kind=kind, content_type="application/json", content_encoding=None,
                        received_at=NOW, ip="203.0.113.7")  # fmt: skip


def _names_the_path(exc: InvalidInput) -> bool:
    if exc.code.endswith("_too_large"):
        return True
    return exc.message.startswith("$") and all(e["path"].startswith("$") for e in exc.errors)


@BOUNDED
@given(body=bodies, kind=st.sampled_from(KINDS))
def test_tracking_decoder_refuses_anything_it_cannot_take_by_path(body: bytes, kind: str) -> None:
    try:
        intake = _intake(body, kind)
    except InvalidInput as exc:
        assert _names_the_path(exc), exc.message
        return
    assert intake.messages and all(type(m).__struct_config__.tag for m in intake.messages)


_ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=3, max_size=40)
_ids = _ids.filter(lambda s: s.strip().lower() not in wire.BLOCKED and not s.startswith("wallet:"))
_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1),
                      timezones=st.just(UTC))  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["track", "page", "screen", "identify", "group", "alias"]))
    found: dict[str, Any] = {"type": kind, "userId": draw(_ids)}
    if draw(st.booleans()):
        found["anonymousId"] = draw(_ids)
    if draw(st.booleans()):
        found["timestamp"] = draw(_times).isoformat()
    found["messageId"] = draw(_ids)
    if kind == "track":
        found["event"] = draw(st.text(min_size=1, max_size=50))
    if kind in ("track", "page", "screen"):
        found["properties"] = draw(_objects)
    if kind in ("identify", "group"):
        found["traits"] = draw(_objects.filter(lambda o: "email" not in o and "phone" not in o))
    if kind == "group":
        found["groupId"] = draw(_ids)
    if kind == "alias":
        found["previousId"] = draw(_ids)
    return found


@BOUNDED
@given(batch=st.lists(messages(), min_size=1, max_size=4, unique_by=lambda m: m["messageId"]))
def test_valid_messages_round_trip(batch: list[dict[str, Any]]) -> None:
    intake = _intake(json.dumps({"batch": batch}).encode(), "batch")
    assert len(intake.messages) == len(batch)
    for sent, kept in zip(batch, intake.messages):
        assert type(kept).__struct_config__.tag == sent["type"]
        assert kept.user_id == sent["userId"] and kept.message_id == sent["messageId"]
        for field in ("properties", "traits"):
            if field in sent:
                assert wire.as_dict(getattr(kept, field)) == sent[field]
        if "timestamp" in sent:
            assert kept.timestamp == datetime.fromisoformat(sent["timestamp"])
    # through the spool and back (its line format), nothing changes
    assert wire.from_lines(wire.to_lines(intake.messages)) == intake.messages
    single = _intake(json.dumps(batch[0]).encode(), batch[0]["type"])
    assert msgspec.json.encode(single.messages[0]) == msgspec.json.encode(intake.messages[0])


near_asks = st.dictionaries(
    st.sampled_from(["placements", "anonymousId", "userId", "context", "writeKey", "extra"]),
    json_values | st.lists(st.sampled_from(["home", "Home", "", "a" * 70, "cart_offer"])),
    max_size=5,
)
ask_bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_asks.map(lambda v: json.dumps(v).encode())
)


@BOUNDED
@given(body=ask_bodies)
def test_decide_decoder_refuses_anything_it_cannot_take_by_path(body: bytes) -> None:
    try:
        ask = read_ask(body)
    except InvalidInput as exc:
        assert exc.message.startswith("$"), exc.message
        return
    try:
        identities = ask.identities()
    except ValueError as exc:  # the endpoint answers 400 with this message
        assert "`userId`" in str(exc) or "`anonymousId`" in str(exc)
        return
    assert identities and all(kind in ("user_id", "anonymous_id") for kind, _ in identities)


@BOUNDED
@given(placements=st.lists(st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,20}", fullmatch=True),
                           min_size=1, max_size=20),
       user=_ids, context=_objects)  # fmt: skip
def test_valid_decide_requests_round_trip(placements: list[str], user: str, context: Any) -> None:
    ask = read_ask(
        json.dumps({"placements": placements, "userId": user, "context": context}).encode()
    )
    assert ask.placements == placements and ask.identities() == [("user_id", user)]
    assert msgspec.json.decode(ask.context) == context


# -- sufficient statistics --

_reals = st.floats(-1e3, 1e3, allow_nan=False)
samples = st.builds(Sample, st.integers(0, 1000), _reals, st.floats(0, 1e6))
paired = st.builds(Paired, samples, samples, _reals)


def _close(a: Any, b: Any) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                            rtol=1e-9, atol=1e-6))  # fmt: skip


def _fields(s: Sample | Paired) -> list[float]:
    if isinstance(s, Sample):
        return [s.n, s.total, s.squares]
    return [*_fields(s.post), *_fields(s.pre), s.cross]


@BOUNDED
@given(st.data(), st.sampled_from([samples, paired]))
def test_statistics_merge_like_sums(data: st.DataObject, kind: Any) -> None:
    a, b, c = data.draw(kind), data.draw(kind), data.draw(kind)
    empty = (
        Sample(0, 0.0, 0.0)
        if isinstance(a, Sample)
        else Paired(Sample(0, 0.0, 0.0), Sample(0, 0.0, 0.0), 0.0)
    )
    assert _close(_fields((a + b) + c), _fields(a + (b + c)))
    assert _close(_fields(a + b), _fields(b + a))
    assert _fields(a + empty) == _fields(a) == _fields(empty + a)


@BOUNDED
@given(values=st.lists(st.tuples(_reals, _reals), max_size=40), cut=st.integers(0, 40))
def test_statistics_of_two_halves_are_those_of_the_whole(values: list[tuple[float, float]],
                                                         cut: int) -> None:  # fmt: skip
    def of(rows: list[tuple[float, float]]) -> Paired:
        post = Sample(len(rows), sum(y for y, _ in rows), sum(y * y for y, _ in rows))
        pre = Sample(len(rows), sum(x for _, x in rows), sum(x * x for _, x in rows))
        return Paired(post, pre, sum(x * y for y, x in rows))

    whole, halves = of(values), of(values[:cut]) + of(values[cut:])
    assert _close(_fields(halves), _fields(whole))
    assert _close(
        [halves.post.variance, halves.covariance], [whole.post.variance, whole.covariance]
    )


# -- policy state --

ARMS, DIMENSIONS = 3, 2
POLICIES = {
    "epsilon_greedy": lambda: EpsilonGreedy(ARMS, seed=1),
    "ucb1": lambda: UCB1(ARMS, seed=1),
    "thompson": lambda: BetaThompson(ARMS, seed=1),
    "gaussian_thompson": lambda: GaussianThompson(ARMS, seed=1),
    "ab": lambda: ABTest([1.0] * ARMS, salt="s", seed=1),
    "linucb": lambda: LinUCB(ARMS, DIMENSIONS, seed=1),
    "linear_thompson": lambda: LinearThompson(ARMS, DIMENSIONS, seed=1),
}
_rewards = st.sampled_from([0.0, 1.0]) | st.floats(0, 100, allow_nan=False)
_contexts = st.lists(st.floats(-3, 3, allow_nan=False), min_size=DIMENSIONS, max_size=DIMENSIONS)
logs = st.lists(st.tuples(st.integers(0, ARMS - 1), _rewards, _contexts), max_size=30)


def _taught(kind: str, log: list[tuple[int, float, list[float]]]) -> Policy:
    policy = POLICIES[kind]()
    for arm, reward, context in log:
        policy.update(arm, reward, np.asarray(context) if policy.contextual else None)
    return policy


def _merged(*policies: Policy) -> Policy:
    first, *rest = policies
    for other in rest:
        first.merge(other)
    return first


def _same_state(a: Policy, b: Policy) -> bool:
    one, two = a.state(), b.state()
    assert one.keys() == two.keys()
    return all(one[k] == two[k] if isinstance(one[k], str) else _close(one[k], two[k])
               for k in one)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(POLICIES))
@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(a=logs, b=logs, c=logs)
def test_policy_merge_is_associative_commutative_with_identity(
    kind: str, a: list[Any], b: list[Any], c: list[Any]
) -> None:
    def t(log: list[Any]) -> Policy:
        return _taught(kind, log)

    assert _same_state(_merged(_merged(t(a), t(b)), t(c)), _merged(t(a), _merged(t(b), t(c))))
    assert _same_state(_merged(t(a), t(b)), _merged(t(b), t(a)))
    assert _same_state(_merged(t(a), POLICIES[kind]()), t(a))
    assert _same_state(_merged(POLICIES[kind](), t(a)), t(a))


@pytest.mark.parametrize("kind", sorted(POLICIES))
@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(log=logs, cut=st.integers(0, 30))
def test_policy_merge_of_two_halves_is_the_whole(kind: str, log: list[Any], cut: int) -> None:
    assert _same_state(_merged(_taught(kind, log[:cut]), _taught(kind, log[cut:])),
                       _taught(kind, log))  # fmt: skip


@pytest.mark.parametrize("kind", sorted(POLICIES))
@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(log=logs)
def test_a_grouped_log_teaches_what_the_updates_one_by_one_teach(kind: str, log: list[Any]) -> None:
    """``absorb`` (off-policy evaluation fits candidates with it) agrees with ``update``."""
    grouped = POLICIES[kind]()
    arms = np.array([arm for arm, _, _ in log], dtype=np.int64)
    rewards = np.array([reward for _, reward, _ in log], dtype=float)
    contexts = np.array([context for _, _, context in log], dtype=float).reshape(-1, DIMENSIONS)
    grouped.absorb(arms, rewards, np.ones(len(log)), contexts if grouped.contextual else None)
    assert _same_state(grouped, _taught(kind, log))
