"""The double opt-in confirmation email: sent when someone is subscribed to a ``double_opt_in``
group through the API, it carries a signed link (``journeys.subscriptions.confirm_url``) whose
page confirms the subscription (``pending`` -> ``subscribed``).

Examples:
    >>> subject, html, text = content("Weekly news", "https://k.example/v1/subscriptions/confirm/t")
    >>> subject
    'Please confirm: Weekly news'
    >>> "https://k.example/v1/subscriptions/confirm/t" in text
    True
"""

from __future__ import annotations

import time
from html import escape

import redis

from journeys import suppression
from journeys.links import link_secret
from journeys.smtp import Outcome, Sender, compose, deliver
from journeys.subscriptions import Group, confirm_url, unsubscribe_url

__all__ = ["content", "send_confirmation"]


def content(name: str, link: str) -> tuple[str, str, str]:
    """Subject, HTML and text of the confirmation email for group ``name``."""
    subject = f"Please confirm: {name}"
    text = (f"Please confirm that you want to receive {name}:\n\n{link}\n\n"
            "If you did not ask for it, ignore this email: nothing will be sent.\n")  # fmt: skip
    html = (
        f"<p>Please confirm that you want to receive <strong>{escape(name)}</strong>.</p>"
        f'<p><a href="{escape(link)}">Confirm my subscription</a></p>'
        "<p>If you did not ask for it, ignore this email: nothing will be sent.</p>"
    )
    return subject, html, text


async def send_confirmation(client: redis.Redis, sender: Sender, public_url: str, pid: str,
                            key: str, group: Group, to: str) -> Outcome:  # fmt: skip
    """Send the confirmation for group ``key`` to ``to``; a hard bounce suppresses the address
    (``journeys.suppression.record_bounce``)."""
    secret = link_secret(client)
    link = confirm_url(public_url, secret, pid, key)
    subject, html, text = content(group.name, link)
    message = compose(sender, to, subject, html, text, key=f"confirm-{pid}-{key}-{time.time_ns()}",
                      unsubscribe_url=unsubscribe_url(public_url, secret, pid, key))  # fmt: skip
    outcome = await deliver(sender, to, message)
    if outcome.status == "bounced":
        suppression.record_bounce(client, to, f"{outcome.code} {outcome.detail}")
    return outcome
