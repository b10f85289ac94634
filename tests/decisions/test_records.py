"""Decision ids: what a signed one carries, that it sorts by time, that no change to it goes
unnoticed, and how its placement and arm are found again after an edit."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from decisions.records import (
    DecisionIds,
    Resolver,
    claim_of,
    new_decision_id,
    plain_shape,
    signed_shape,
)

IDS = DecisionIds.of_secret("sk_records_test")


def test_a_signed_id_carries_placement_arm_propensity_and_time() -> None:
    decision_id = IDS.new("home_hero", 3, "bold", 0.125, 1_764_633_600_123)
    assert re.fullmatch(r"d_[-0-9A-Za-z_]{36}", decision_id) and signed_shape(decision_id)
    claim = IDS.verify(decision_id)
    assert claim is not None and claim == claim_of(decision_id)
    assert (claim.at, claim.arm, claim.propensity) == (1_764_633_600_123, 3, 0.125)
    arms = ["a", "b", "c", "bold"]
    assert Resolver({"other": ["x"], "home_hero": arms}).resolve(claim) == ("home_hero", 3)


@pytest.mark.parametrize("propensity", [1.0, 0.5, 1 / 3, 0.01, 0.001, 1e-4])
def test_the_propensity_keeps_the_relative_precision_inverse_weights_need(
    propensity: float,
) -> None:
    claim = IDS.verify(IDS.new("p", 0, "a", propensity, 0))
    assert claim is not None and claim.propensity == pytest.approx(propensity, rel=5e-4)


def test_signed_ids_are_unique_and_sort_by_time() -> None:
    rng = np.random.default_rng(3)
    times = sorted(int(t) for t in rng.integers(0, 2**47, size=2_000))
    ids = [IDS.new(f"p{i % 7}", i % 3, "abc"[i % 3], 0.5, t) for i, t in enumerate(times)]
    assert len(set(ids)) == len(ids)
    assert len({IDS.new("p", 0, "a", 1.0, 5) for _ in range(5_000)}) == 5_000  # the same ms
    by_time = [i for _, i in sorted(zip(times, ids))]
    assert sorted(ids) == by_time
    # The order is the alphabet's doing: base64url's own (A-Z a-z 0-9 - _) would not sort.
    urlsafe = base64.urlsafe_b64encode
    assert sorted(urlsafe(t.to_bytes(6, "big")) for t in times) != [
        urlsafe(t.to_bytes(6, "big")) for t in times
    ]


def test_any_change_to_a_signed_id_fails_it() -> None:
    decision_id = IDS.new("home_hero", 1, "bold", 0.5, 1_764_633_600_000)
    for i in range(2, len(decision_id)):
        for other in "-0Aa_z":
            changed = decision_id[:i] + other + decision_id[i + 1 :]
            if changed != decision_id:
                assert IDS.verify(changed) is None, changed
    assert IDS.verify(decision_id[:-1]) is None and IDS.verify(decision_id + "A") is None
    assert DecisionIds.of_secret("sk_other").verify(decision_id) is None
    assert IDS.verify(new_decision_id()) is None and IDS.verify("") is None


def test_plain_ids_are_told_from_signed_ones() -> None:
    plain = new_decision_id()
    assert plain_shape(plain) and not signed_shape(plain) and claim_of(plain) is None
    signed = IDS.new("p", 0, "a", 1.0, 0)
    assert signed_shape(signed) and not plain_shape(signed)


def test_the_key_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="decision ids need the engine's secret key"):
        DecisionIds.of_secret("")


def test_the_resolver_follows_a_variant_an_edit_moved_and_refuses_what_is_gone() -> None:
    claim = IDS.verify(IDS.new("hero", 1, "b", 0.5, 0))
    assert claim is not None
    assert Resolver({"hero": ["a", "b"]}).resolve(claim) == ("hero", 1)
    assert Resolver({"hero": ["b", "c", "a"]}).resolve(claim) == ("hero", 0)  # moved
    assert Resolver({"hero": ["a", "c"]}).resolve(claim) is None  # deleted
    assert Resolver({"other": ["a", "b"]}).resolve(claim) is None  # another placement
    assert Resolver({}).resolve(claim) is None
