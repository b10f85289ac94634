"""What a message's context says about the visit: the device, and where the visit came from.

Examples:
    >>> device({"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"})
    'mobile'
    >>> [source({"page": {"referrer": url}}) for url in ("https://www.google.com/", "https://t.co/x",
    ...                                                  "https://www.reddit.com/r/shoes")]
    ['search', 'social', 'referral']
    >>> source({"campaign": {"medium": "cpc"}})
    'paid'

"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEVICES", "SOURCES", "device", "source"]

DEVICES = ("mobile", "tablet", "desktop")
SOURCES = ("direct", "search", "social", "email", "paid", "referral")
_TABLET = re.compile(r"iPad|Tablet", re.I)
_MOBILE = re.compile(r"Mobi|Android|iPhone", re.I)
_SEARCH = ("google.", "bing.", "duckduckgo.", "yahoo.", "baidu.", "yandex.")
_SOCIAL = ("facebook.", "instagram.", "twitter.", "linkedin.", "pinterest.", "tiktok.")
_MEDIUM = {"cpc": "paid", "ppc": "paid", "paid": "paid", "display": "paid", "email": "email",
           "social": "social", "organic": "search", "referral": "referral"}  # fmt: skip


def device(context: dict[str, Any]) -> str:
    described = context.get("device")
    kind = described.get("type") if isinstance(described, dict) else None
    if kind in ("mobile", "tablet", "desktop"):
        return str(kind)
    agent = context.get("userAgent") if isinstance(context.get("userAgent"), str) else ""
    return "tablet" if _TABLET.search(agent) else "mobile" if _MOBILE.search(agent) else "desktop"


def source(context: dict[str, Any]) -> str:
    campaign = context.get("campaign")
    medium = campaign.get("medium") if isinstance(campaign, dict) else None
    if isinstance(medium, str) and medium.lower() in _MEDIUM:
        return _MEDIUM[medium.lower()]
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    referrer = page.get("referrer") if isinstance(page.get("referrer"), str) else ""
    host = urlsplit(referrer).hostname or ""
    if not host:
        return "direct"
    if any(s in host for s in _SEARCH):
        return "search"
    if host == "t.co" or any(s in host for s in _SOCIAL):
        return "social"
    return "referral"
