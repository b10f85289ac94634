"""Email over SMTP against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import base64
import email
from email import policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from journeys.smtp import Sender, compose, deliver


def test_a_message_arrives_multipart_with_one_click_unsubscribe_and_a_valid_dkim_signature(inbox):
    handler, port = inbox
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    sender = Sender.of(f"smtp://127.0.0.1:{port}", "shop@example.com", dkim_domain="example.com",
                       dkim_selector="k1", dkim_key=private)  # fmt: skip
    message = compose(sender, "ada@example.org", "Your cart", "<p>Still there?</p>",
                      "Still there?", key="cart-ada-1", preheader="Two items",
                      unsubscribe_url="https://shop.example.com/u/abc")  # fmt: skip
    outcome = asyncio.run(deliver(sender, "ada@example.org", message))
    assert outcome.status == "sent"
    [raw] = handler.messages
    got = email.message_from_bytes(raw, policy=policy.default)
    assert got["Message-ID"] == "<cart-ada-1@example.com>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got["List-Unsubscribe"] == "<https://shop.example.com/u/abc>"
    assert [part.get_content_type() for part in got.iter_parts()] == ["text/plain", "text/html"]
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)
    assert not dkim.verify(
        raw.replace(b"Your cart", b"Your kart"), dnsfunc=lambda n, timeout=5: record
    )


@pytest.mark.parametrize(("to", "status", "code"), [("bounce@example.org", "bounced", 550),
                                                    ("busy@example.org", "retry", 451)])  # fmt: skip
def test_a_refusal_says_whether_to_retry_or_suppress(inbox, to, status, code):
    handler, port = inbox
    sender = Sender.of(f"smtp://127.0.0.1:{port}", "shop@example.com")
    message = compose(sender, to, "Hi", "<p>Hi</p>", "Hi", key="k", unsubscribe_url="https://u")
    outcome = asyncio.run(deliver(sender, to, message))
    assert (outcome.status, outcome.code) == (status, code)
    assert handler.messages == []


def test_no_server_is_a_retry():
    sender = Sender.of("smtp://127.0.0.1:9", "shop@example.com")
    message = compose(
        sender, "a@example.org", "Hi", "<p>Hi</p>", "Hi", key="k", unsubscribe_url="https://u"
    )
    assert asyncio.run(deliver(sender, "a@example.org", message, timeout=2)).status == "retry"
