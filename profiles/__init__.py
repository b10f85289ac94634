"""Profiles: live Redis profiles, identity resolution, computed traits, segments, privacy."""

from profiles.computed import Update, compute, event_name
from profiles.resolve import Plan, Resolver
from profiles.scoring import LeadScoring, ScoreRule, decayed
from profiles.store import ProfileStore, Snapshot, identity_key, profile_keys
from profiles.updater import ProfileUpdater

__all__ = [
    "LeadScoring",
    "Plan",
    "ProfileStore",
    "ProfileUpdater",
    "Resolver",
    "ScoreRule",
    "Snapshot",
    "Update",
    "compute",
    "decayed",
    "event_name",
    "identity_key",
    "profile_keys",
]
