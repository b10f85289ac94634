"""Email templates kept in the engine (``PUT /v1/templates/{key}``): subject, preheader, HTML and
text as jinja2, the blocks they show, and the message as rendered for one person.

A template (JSON)::

    {"name": "Cart reminder",
     "subject": "{{ traits.first_name or 'Hi' }}, your cart is waiting",
     "preheader": "{{ cart | length }} items saved for you",
     "html": "<p>Still thinking it over?</p>{{ recommendations.html }}{{ offer.content.html }}",
     "text": "Still thinking it over?\\n\\n{{ recommendations.text }}",
     "recommendations": {"placement": "cart_recs", "n": 4, "layout": "grid"},
     "offer": "cart_offer"}

What a template sees: ``person`` (the profile document, as ``GET /v1/profiles/{id}``),
``traits``, ``computed``, ``cart`` (the items in the person's cart), ``scores``;
``recommendations`` (``html``, ``text``, ``items``, ``decisionId``: the recommendations API's
rendered block for the person, when the template names a placement) and ``offer`` (the
``/v1/decide`` answer of the ``offer`` placement: ``variant``, ``content``; logged and learned
from like every decision); ``unsubscribe_url`` and ``preferences_url``. A missing trait renders
empty, so ``{{ traits.first_name or 'there' }}`` reads as intended.

Templates run in jinja2's sandbox (a template is data an editor types, not code we trust) and
are checked when they are put: a syntax error is a 400 naming the field and the line. HTML is
autoescaped; the text part and the subject are not (they are not HTML). After rendering, every
``http(s)`` link of the HTML goes through the tracked redirect and an open pixel is added
(``track``), so clicks and opens are events of the person, with the message they came from.

Examples:
    >>> template = TEMPLATE.decode(b'{"subject": "Hi {{ traits.name }}", "html": "<p>Hi</p>"}')
    >>> render(template, {"traits": {"name": "Ada & Co"}}).subject
    'Hi Ada & Co'
    >>> TEMPLATE.decode(b'{"subject": "Hi", "html": "{% if x %}"}')
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: `html` must be a jinja2 template; line 1: Unexpected end of template...
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from html import unescape
from typing import Annotated, Any, Literal

import jinja2
import msgspec
import redis
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TEMPLATE", "Blocks", "EmailTemplate", "Rendered", "delete_template", "render",
           "templates", "put_template", "text_of", "track"]  # fmt: skip

DEFS = "{msg}:templates"
VERSION = "{msg}:templates:version"

_HTML = SandboxedEnvironment(autoescape=True, undefined=jinja2.ChainableUndefined)
_PLAIN = SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined)

Source = Annotated[str, msgspec.Meta(max_length=200_000)]


class Blocks(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The recommendations block a template shows: a placement's items, rendered."""

    placement: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$")]
    n: Annotated[int, msgspec.Meta(ge=1, le=50)] = 4
    layout: Literal["grid", "list"] = "grid"


class EmailTemplate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=998)]  # RFC 5322's line
    html: Annotated[Source, msgspec.Meta(min_length=1)]
    text: Source = ""  # empty: made from the HTML
    preheader: Annotated[str, msgspec.Meta(max_length=500)] = ""
    name: str = ""
    description: str = ""
    recommendations: Blocks | None = None
    offer: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$")] | None = None
    revision: int = 0  # set by the engine on every change

    def __post_init__(self) -> None:
        for field in ("subject", "preheader", "html", "text"):
            environment = _HTML if field == "html" else _PLAIN
            try:
                environment.parse(getattr(self, field))
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(
                    f"`{field}` must be a jinja2 template; line {exc.lineno}: {exc.message}"
                ) from None


TEMPLATE = msgspec.json.Decoder(EmailTemplate)


class Rendered(msgspec.Struct):
    subject: str
    preheader: str
    html: str
    text: str


@functools.lru_cache(maxsize=512)
def _compiled(source: str, html: bool) -> jinja2.Template:
    """A template compiled once (compiling costs more than rendering: a broadcast renders one
    template for every recipient)."""
    return (_HTML if html else _PLAIN).from_string(source)


def render(template: EmailTemplate, variables: dict[str, Any]) -> Rendered:
    """The template for one person (``variables``: what the module docstring lists)."""
    html = _compiled(template.html, True).render(variables)
    text = _compiled(template.text, False).render(variables) if template.text else text_of(html)
    subject = " ".join(_compiled(template.subject, False).render(variables).split())
    preheader = _compiled(template.preheader, False).render(variables).strip()
    return Rendered(subject=subject, preheader=preheader, html=html, text=text)


_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_BLOCK_END = re.compile(r"</(p|div|h[1-6]|tr|li|table)>|<br\s*/?>", re.IGNORECASE)


def track(html: str, link: Callable[[str], str], pixel: str, own: str) -> str:
    """``html`` with each link going through ``link(url)`` (the tracked redirect) and the open
    pixel at the end; links already into the engine (``own``: its public URL, e.g. the
    recommendations' own tracked links) are left as they are.

    Examples:
        >>> html = '<a href="https://shop.example/cart">Cart</a></body>'
        >>> track(html, lambda u: "T:" + u, "P", "E")[:58]
        '<a href="T:https://shop.example/cart">Cart</a><img src="P"'
    """

    def swap(found: re.Match[str]) -> str:
        url = unescape(found.group(3))
        if url.startswith(own):
            return found.group(0)
        return f"{found.group(1)}{found.group(2)}{link(url)}{found.group(2)}"

    image = f'<img src="{pixel}" width="1" height="1" alt="" style="display:block;border:0">'
    tracked = _HREF.sub(swap, html)
    closing = tracked.lower().rfind("</body>")
    if closing < 0:
        return tracked + image
    return tracked[:closing] + image + tracked[closing:]


def text_of(html: str) -> str:
    """A readable plain-text part from HTML: blocks end lines, tags go, entities are decoded.

    Examples:
        >>> text_of("<h1>Hello</h1><p>Your <b>cart</b> &amp; more</p>")
        'Hello\\nYour cart & more'
    """
    lines = unescape(_TAG.sub("", _BLOCK_END.sub("\n", html))).splitlines()
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())


# -- storage --


def templates(client: redis.Redis) -> dict[str, EmailTemplate]:
    return {k.decode(): TEMPLATE.decode(v) for k, v in client.hgetall(DEFS).items()}


def put_template(client: redis.Redis, key: str, template: EmailTemplate) -> bool:
    """Create or replace a template; True if it changed."""
    current = client.hget(DEFS, key)
    if current is not None:
        before = TEMPLATE.decode(current)
        if msgspec.structs.replace(before, revision=template.revision) == template:
            return False
    revision = int(client.incr(VERSION))
    saved = msgspec.structs.replace(template, revision=revision)
    client.hset(DEFS, key, msgspec.json.encode(saved))
    return True


def delete_template(client: redis.Redis, key: str) -> bool:
    pipe = client.pipeline(transaction=True)
    pipe.hdel(DEFS, key)
    pipe.incr(VERSION)
    deleted, _ = pipe.execute()
    return bool(deleted)
