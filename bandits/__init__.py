"""Decision science, pure: policies, sticky bucketing, off-policy evaluation. No I/O."""

from bandits.abtest import ABTest
from bandits.hashing import bucket, fnv1a32, pick
from bandits.linear import LinearThompson, LinUCB
from bandits.mab import UCB1, BetaThompson, EpsilonGreedy, GaussianThompson
from bandits.ope import Estimate, doubly_robust, ips, reward_model, snips
from bandits.policy import Choice, Features, Policy

__all__ = [
    "UCB1",
    "ABTest",
    "BetaThompson",
    "Choice",
    "EpsilonGreedy",
    "Estimate",
    "Features",
    "GaussianThompson",
    "LinUCB",
    "LinearThompson",
    "Policy",
    "bucket",
    "doubly_robust",
    "fnv1a32",
    "ips",
    "pick",
    "reward_model",
    "snips",
]
