"""Decisions: placements, the choice of a variant per visitor, the decision log, the reward
worker that teaches each placement's policy, experiment results and off-policy evaluation.

Pure decision science (policies, statistics) lives in ``bandits``; this package is what runs it
against the stores. It never imports starlette or edge.
"""

from decisions.catalog import Catalog, Slot
from decisions.choice import Ask, Decider, Decision, UnknownPlacement, read_ask
from decisions.placements import Placement, delete_placement, placements, put_placement
from decisions.rewards import PolicyTrainer, RewardWorker

__all__ = [
    "Ask",
    "Catalog",
    "Decider",
    "Decision",
    "Placement",
    "PolicyTrainer",
    "RewardWorker",
    "Slot",
    "UnknownPlacement",
    "delete_placement",
    "placements",
    "put_placement",
    "read_ask",
]
