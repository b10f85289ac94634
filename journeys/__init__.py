"""Journeys: trigger-based marketing automation (see journeys.spec for definitions)."""
