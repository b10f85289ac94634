"""Journeys that work out of the box: call one with your endpoints, ``PUT`` what it returns
(``GET /v1/journeys/templates`` shows each with example URLs).

- ``abandoned_cart``: Product Added and no order within 1 h → a reminder email with the cart
  (in the person document) and recommendations; 24 h later an offer chosen by a bandit
  (a decisions placement); an order ends it at any point.
- ``welcome_series``: Signed Up → a welcome email now, tips the next morning at 10:00 in the
  person's timezone unless they have ordered by then.
- ``churn_winback``: the churn score reaches a threshold → a win-back email with
  recommendations; no order within 7 days → a last-chance email.
- ``lead_routing``: a form is submitted → lead score at or above the threshold: the profile goes
  to the CRM; below it: a nurture email, and a week later the CRM if the score has risen.
- ``post_purchase``: an order → three days later a cross-sell email (bought together).
- ``nft_onboarding``: a wallet mints a token of the contract → a welcome webhook; three days
  later, unless it has staked, a nudge to stake.

Examples:
    >>> sorted(TEMPLATES)[:2]
    ['abandoned_cart', 'churn_winback']
    >>> JOURNEY.decode(msgspec.json.encode(abandoned_cart("https://mail.example/send"))).start
    'wait'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from journeys.spec import JOURNEY

__all__ = ["TEMPLATES", "abandoned_cart", "churn_winback", "lead_routing", "nft_onboarding",
           "post_purchase", "welcome_series"]  # fmt: skip

Definition = dict[str, Any]


def abandoned_cart(
    email_url: str, recommendations: str = "cart_recs", offer: str = "cart_offer"
) -> Definition:
    return {
        "name": "Abandoned cart",
        "trigger": {"kind": "event", "event": "Product Added"},
        "entry": {"reentry": "days", "reentry_days": 1},
        "exit": [{"event": "Order Completed"}],
        "goal": "Order Completed",
        "start": "wait",
        "steps": {
            "wait": {"type": "wait", "duration": "1h", "next": "reminder"},
            "reminder": {"type": "email", "url": email_url, "subject": "Still thinking it over?",
                         "placement": recommendations, "body": {"kind": "cart_reminder"},
                         "next": "wait_offer"},
            "wait_offer": {"type": "wait", "duration": "24h", "next": "offer"},
            "offer": {"type": "email", "url": email_url, "subject": "Something to help you decide",
                      "decide": offer, "body": {"kind": "cart_offer"}, "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def welcome_series(email_url: str) -> Definition:
    return {
        "name": "Welcome series",
        "trigger": {"kind": "event", "event": "Signed Up"},
        "goal": "Order Completed",
        "start": "welcome",
        "steps": {
            "welcome": {"type": "email", "url": email_url, "subject": "Welcome!",
                        "body": {"kind": "welcome"}, "next": "morning"},
            "morning": {"type": "wait", "until_time": "10:00", "next": "ordered"},
            "ordered": {"type": "branch", "cases": [{"event_since_entry": "Order Completed",
                                                     "next": "end"}], "otherwise": "tips"},
            "tips": {"type": "email", "url": email_url, "subject": "Getting the most out of us",
                     "body": {"kind": "tips"}, "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def churn_winback(
    email_url: str, threshold: float = 0.7, recommendations: str = "email_weekly"
) -> Definition:
    return {
        "name": "Churn win-back",
        "trigger": {"kind": "score", "score": "churn", "above": threshold},
        "entry": {"reentry": "days", "reentry_days": 30},
        "goal": "Order Completed",
        "start": "winback",
        "steps": {
            "winback": {"type": "email", "url": email_url, "subject": "We miss you",
                        "placement": recommendations, "body": {"kind": "winback"},
                        "next": "wait"},
            "wait": {"type": "wait", "until_event": "Order Completed", "timeout": "7d",
                     "timeout_next": "last_chance", "next": "end"},
            "last_chance": {"type": "email", "url": email_url, "subject": "One last thing",
                            "body": {"kind": "last_chance"}, "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def lead_routing(
    crm_url: str, email_url: str, threshold: float = 50, event: str = "Form Submitted"
) -> Definition:
    hot = {"field": "computed.lead_score", "op": "gte", "value": threshold}
    return {
        "name": "Lead routing",
        "trigger": {"kind": "event", "event": event},
        "entry": {"reentry": "days", "reentry_days": 14},
        "start": "route",
        "steps": {
            "route": {"type": "branch", "cases": [{"rule": hot, "next": "crm"}],
                      "otherwise": "nurture"},
            "crm": {"type": "webhook", "url": crm_url, "body": {"kind": "qualified_lead"},
                    "next": "end"},
            "nurture": {"type": "email", "url": email_url, "subject": "A guide for you",
                        "body": {"kind": "nurture"}, "next": "week"},
            "week": {"type": "wait", "duration": "7d", "next": "again"},
            "again": {"type": "branch", "cases": [{"rule": hot, "next": "crm"}],
                      "otherwise": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def post_purchase(email_url: str, recommendations: str = "email_cross_sell") -> Definition:
    return {
        "name": "Post-purchase cross-sell",
        "trigger": {"kind": "event", "event": "Order Completed"},
        "entry": {"reentry": "always"},
        "goal": "Order Completed",
        "start": "wait",
        "steps": {
            "wait": {"type": "wait", "duration": "3d", "next": "cross_sell"},
            "cross_sell": {"type": "email", "url": email_url, "next": "end",
                           "subject": "Goes well with your order",
                           "placement": recommendations, "body": {"kind": "cross_sell"}},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def nft_onboarding(webhook_url: str, contract: str) -> Definition:
    return {
        "name": "NFT-mint onboarding",
        "trigger": {"kind": "onchain", "event": "mint", "contract": contract},
        "entry": {"reentry": "once"},
        "goal": "Onchain Stake",
        "start": "welcome",
        "steps": {
            "welcome": {"type": "webhook", "url": webhook_url, "body": {"kind": "holder_welcome"},
                        "next": "wait"},
            "wait": {"type": "wait", "duration": "3d", "next": "staked"},
            "staked": {"type": "branch", "cases": [{"event_since_entry": "Onchain Stake",
                                                    "next": "end"}], "otherwise": "nudge"},
            "nudge": {"type": "webhook", "url": webhook_url, "body": {"kind": "stake_nudge"},
                      "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


TEMPLATES: dict[str, Callable[..., Definition]] = {
    "abandoned_cart": abandoned_cart,
    "welcome_series": welcome_series,
    "churn_winback": churn_winback,
    "lead_routing": lead_routing,
    "post_purchase": post_purchase,
    "nft_onboarding": nft_onboarding,
}


def examples() -> dict[str, Definition]:
    """Each template with example URLs (what ``GET /v1/journeys/templates`` shows)."""
    urls = {"email_url": "https://mail.example/send", "crm_url": "https://crm.example/leads",
            "webhook_url": "https://hooks.example/holders",
            "contract": "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359"}  # fmt: skip
    found = {}
    for name, make in TEMPLATES.items():
        wanted = make.__code__.co_varnames[: make.__code__.co_argcount]
        found[name] = make(**{k: v for k, v in urls.items() if k in wanted})
        JOURNEY.decode(msgspec.json.encode(found[name]))  # each is valid
    return found
