"""Email over SMTP: the sender's configuration, the message as sent, and what an answer means.

Every provider (SES, SendGrid, Postmark, Mailgun, a company relay) speaks SMTP, so Kairos sends
through it rather than through each provider's API. aiosmtplib does the protocol (STARTTLS when
offered, implicit TLS for ``smtps://``, AUTH); dkimpy signs (DKIM is cryptography we must not
write). A message carries its ``Message-ID`` and the idempotency key, so a repeat after a crash
between the server's accept and our record is the same message, which receivers can fold.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from html import escape
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import dkim  # type: ignore[import-untyped]
import msgspec

__all__ = ["EmailSettings", "Outcome", "Sender", "compose", "deliver"]


class EmailSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The config file's ``[email]`` section (KAIROS_SMTP_URL wins over ``url``)::

        [email]
        url = "smtp://apikey:secret@smtp.sendgrid.net:587"   # or smtps://…:465
        from_address = "Shop <shop@example.com>"
        reply_to = "help@example.com"
        dkim_domain = "example.com"
        dkim_selector = "kairos"
        dkim_key_file = "/etc/kairos/dkim.pem"
        public_url = "https://kairos.example.com"   # where links in messages point

    ``public_url`` is the engine as recipients reach it: tracked links, the open pixel, the
    preference page and the unsubscribe link are made from it. Unset, it is the engine's URL as
    its own workers reach it (``--api-url``): right on a laptop, not behind a load balancer.
    """

    url: str = ""
    from_address: str = ""
    reply_to: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: str | None = None
    public_url: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""

    def sender(self, env_url: str | None = None) -> Sender | None:
        """The sender these settings describe (``env_url``: KAIROS_SMTP_URL); None when no SMTP
        server is set, so that email steps can say why nothing was sent."""
        url = env_url or self.url
        if not url:
            return None
        if not self.from_address:
            raise ValueError("[email] from_address: needed to send (e.g. shop@example.com)")
        key = Path(self.dkim_key_file).read_bytes() if self.dkim_key_file else None
        return Sender.of(url, self.from_address, reply_to=self.reply_to,
                         dkim_domain=self.dkim_domain, dkim_selector=self.dkim_selector,
                         dkim_key=key)  # fmt: skip


@dataclass(frozen=True)
class Sender:
    """Where and as whom mail goes out (``KAIROS_SMTP_URL`` and the ``[email]`` settings)."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    from_address: str
    reply_to: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key: bytes | None = None

    @classmethod
    def of(cls, url: str, from_address: str, **options: Any) -> Sender:
        """A sender from ``smtp://user:password@host:port`` (or ``smtps://``).

        Examples:
            >>> Sender.of("smtp://ada:s%40cret@mail.example.com:2525", "shop@example.com").password
            's@cret'
            >>> Sender.of("smtps://mail.example.com", "shop@example.com").port
            465
            >>> Sender.of("http://x", "shop@example.com")
            Traceback (most recent call last):
            ValueError: KAIROS_SMTP_URL: scheme must be smtp or smtps, not 'http'
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"KAIROS_SMTP_URL: scheme must be smtp or smtps, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("KAIROS_SMTP_URL: a host is needed, e.g. smtp://mail.example.com:587")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            from_address=from_address,
            **options,
        )


def compose(sender: Sender, to: str, subject: str, html: str, text: str, *, key: str,
            unsubscribe_url: str, preheader: str = "") -> bytes:  # fmt: skip
    """The multipart message as sent (plain text first, HTML preferred), DKIM-signed if set.

    ``key`` is the idempotency key of (person, message): the ``Message-ID`` is made from it, so
    a repeat is recognisably the same message. ``List-Unsubscribe-Post`` is RFC 8058's one-click.
    """
    message = EmailMessage()
    message["From"] = sender.from_address
    message["To"] = to
    message["Subject"] = subject
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    domain = sender.dkim_domain or sender.from_address.rpartition("@")[2] or "kairos.local"
    message["Message-ID"] = f"<{key}@{domain}>"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["X-Kairos-Idempotency-Key"] = key
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    hidden = (f'<div style="display:none;max-height:0;overflow:hidden">{escape(preheader)}</div>'
              if preheader else "")  # fmt: skip
    message.add_alternative(hidden + html, subtype="html")
    raw = message.as_bytes(policy=SMTP)
    if sender.dkim_key and sender.dkim_domain and sender.dkim_selector:
        signature = dkim.sign(
            raw,
            sender.dkim_selector.encode(),
            sender.dkim_domain.encode(),
            sender.dkim_key,
            include_headers=[
                b"from",
                b"to",
                b"subject",
                b"date",
                b"message-id",
                b"list-unsubscribe",
                b"list-unsubscribe-post",
            ],  # fmt: skip
        )
        raw = signature + raw  # prepended as signed: re-folding it through email would break it
    return raw


@dataclass(frozen=True)
class Outcome:
    """What the server said: ``sent``, ``retry`` (4xx, connection trouble) or ``bounced`` (5xx)."""

    status: str
    code: int
    detail: str


async def deliver(sender: Sender, to: str, message: bytes, timeout: float = 30.0) -> Outcome:
    """Hand ``message`` for ``to`` to the sender's server; never raises for what it answers."""
    try:
        await aiosmtplib.send(
            message,
            sender=sender.from_address,
            recipients=[to],
            hostname=sender.host,
            port=sender.port,
            username=sender.username,
            password=sender.password,
            use_tls=sender.tls,
            start_tls=False if sender.tls else None,  # None: STARTTLS when the server offers it
            timeout=timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as refused:
        first = refused.recipients[0]
        return _answer(first.code, first.message)
    except aiosmtplib.SMTPResponseException as answer:
        return _answer(answer.code, answer.message)
    except (aiosmtplib.SMTPException, OSError) as trouble:
        return Outcome("retry", 0, str(trouble) or type(trouble).__name__)
    return Outcome("sent", 250, "accepted")


def _answer(code: int, detail: str) -> Outcome:
    return Outcome("bounced" if 500 <= code < 600 else "retry", code, detail)
