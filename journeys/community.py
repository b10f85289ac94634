"""Community channels: a journey's message to a Discord channel or a Telegram chat.

- ``discord``: Discord's "Execute Webhook", ``POST {discord_url}/webhooks/{id}/{token}?wait=true``
  with JSON ``{"content", "username"?, "allowed_mentions": {"parse": []}}`` (no mention in a
  message pings anyone: its text comes partly from traits). ``wait=true`` makes Discord answer
  with the message, so a success names it.
- ``telegram``: the Bot API's ``POST {telegram_url}/bot{token}/sendMessage`` with JSON
  ``{"chat_id", "text", "parse_mode"?, "disable_web_page_preview"?}``; it answers
  ``{"ok": true, "result": {…}}`` or ``{"ok": false, "error_code", "description",
  "parameters"?}``.

The text is a jinja2 template over the person's traits (``{{ first_name }}``; also
``traits``), in an immutable sandbox: a trait missing renders empty, templates reach no Python
internals and cannot change the traits. Autoescape is off for plain text; with ``parse_mode``
HTML every value is HTML-escaped and with MarkdownV2 every value gets Telegram's backslashes,
so a trait is always shown as text, never read as markup. A template is checked when the
journey is saved (``check_template``: it parses, and a text without variables fits the limit);
a message that renders too long or empty for one person is not sent (permanent).

What an answer means (``Sent``): a 2xx is sent; a 429 is retried exactly when the service says
(Discord: the JSON ``retry_after`` seconds, else the ``Retry-After`` header; Telegram:
``parameters.retry_after``), not after the usual backoff; a 5xx, no answer within the timeout or
no connection is retried with ``journeys.actions.backoff``; any other 4xx is permanent (a
deleted webhook, a bot blocked by the person). Discord's rate-limit headers are honoured before
a 429 comes: once a webhook's bucket is empty (``X-RateLimit-Remaining: 0``), its next message
waits for ``X-RateLimit-Reset-After``, as Discord asks of every client. Neither service takes an
idempotency key: a crash between the service's answer and the record of it sends the message
again after the restart (at least once, like webhooks).

The bot token is a credential: it is in the request path only, never in a ``Sent`` detail (which
is logged and kept with the action), and the settings' repr hides it.

Examples:
    >>> token = "t" * 68
    >>> webhook_of(f"https://discord.com/api/webhooks/112233445566778899/{token}") == (
    ...     f"112233445566778899/{token}")
    True
    >>> render("Hi {{ first_name or 'there' }}!", {"first_name": "Ada"})
    'Hi Ada!'
    >>> render("<b>{{ name }}</b>", {"name": "<Ada & co>"}, "HTML")
    '<b>&lt;Ada &amp; co&gt;</b>'
    >>> render("*{{ name }}*", {"name": "a_b.c"}, "MarkdownV2")
    '*a\\\\_b\\\\.c*'
    >>> check_template("content", "Hi {{ name", 2000)
    Traceback (most recent call last):
    ...
    ValueError: `content` must be a jinja2 template that parses: unexpected end of template, expected 'end of print statement'. (line 1)
"""  # noqa: E501

from __future__ import annotations

import functools
import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

import httpx
import msgspec
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:  # journeys.spec imports this module (its steps' checks)
    from journeys.spec import Discord, Telegram

__all__ = [
    "DISCORD_MAX",
    "TELEGRAM_MAX",
    "ChannelSettings",
    "Channels",
    "ParseMode",
    "Sent",
    "chat_id_of",
    "check_template",
    "render",
    "webhook_of",
]

DISCORD_MAX = 2000  # characters of a message's content (Discord's documented limit)
TELEGRAM_MAX = 4096  # characters of a message's text after entities parsing (the Bot API's)

_SNOWFLAKE = r"\d{15,21}"  # Discord ids: 64-bit integers in decimal
_TOKEN = r"[A-Za-z0-9_-]{20,128}"
_BARE = re.compile(rf"^({_SNOWFLAKE})/({_TOKEN})$")
_URL = re.compile(rf"^https://(?:(?:canary|ptb)\.)?discord(?:app)?\.com/api(?:/v\d+)?"
                  rf"/webhooks/({_SNOWFLAKE})/({_TOKEN})/?$")  # fmt: skip
_WEBHOOK_FORMS = (
    "\"<webhook id>/<webhook token>\" or the webhook's URL from Discord's channel settings, "
    '"https://discord.com/api/webhooks/<id>/<token>"'
)
_BOT_TOKEN = r"^\d{5,20}:[A-Za-z0-9_-]{30,64}$"  # what @BotFather hands out
_BOT_TOKEN_FORM = '"<bot id>:<secret>" as @BotFather gives it, e.g. "123456789:AAE…"'
_INTERNAL_NAME = re.compile(r"__\w|_[A-Za-z]\w*__\w")  # dunders, mangled private names
_MARKDOWN_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")  # MarkdownV2's reserved characters

ParseMode = Literal["HTML", "MarkdownV2"]
BaseUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)]


class ChannelSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The config file's ``[channels]``: where the services are, and the Telegram bot's token
    (``KAIROS_TELEGRAM_TOKEN`` wins over ``telegram_token``: ``with_token``).

    Examples:
        >>> ChannelSettings(telegram_token="123456789:" + "A" * 35)
        ChannelSettings(discord_url='https://discord.com/api', telegram_url='https://api.telegram.org', telegram_token=<hidden>)
        >>> ChannelSettings().with_token("not a token")
        Traceback (most recent call last):
        ...
        ValueError: KAIROS_TELEGRAM_TOKEN: a bot token is "<bot id>:<secret>" as @BotFather gives it, e.g. "123456789:AAE…"
    """  # noqa: E501

    discord_url: BaseUrl = "https://discord.com/api"
    telegram_url: BaseUrl = "https://api.telegram.org"
    telegram_token: Annotated[str, msgspec.Meta(pattern=_BOT_TOKEN)] | None = None

    def __repr__(self) -> str:  # the token is a credential: not in reprs, tracebacks, logs
        token = "<hidden>" if self.telegram_token else "None"
        return (f"ChannelSettings(discord_url={self.discord_url!r}, "
                f"telegram_url={self.telegram_url!r}, telegram_token={token})")  # fmt: skip

    def with_token(self, token: str | None) -> ChannelSettings:
        """These settings with ``token`` (the environment's) in place of the file's, if given.
        The ValueError never quotes the token."""
        if not token:
            return self
        if re.match(_BOT_TOKEN, token) is None:
            raise ValueError(f"KAIROS_TELEGRAM_TOKEN: a bot token is {_BOT_TOKEN_FORM}")
        return msgspec.structs.replace(self, telegram_token=token)


def webhook_of(text: str) -> str:
    """``"<id>/<token>"`` of a Discord webhook named either way; ValueError says both forms."""
    found = _BARE.match(text) or _URL.match(text)
    if found is None:
        raise ValueError(f"`webhook` must be {_WEBHOOK_FORMS}")
    return f"{found.group(1)}/{found.group(2)}"


def chat_id_of(value: object) -> int | str | None:
    """A Telegram chat id as the Bot API takes it (an integer, or a public "@username"), or
    None if ``value`` is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value != 0 else None
    if isinstance(value, str):
        if re.fullmatch(r"-?\d{1,20}", value):
            return chat_id_of(int(value))
        if re.fullmatch(r"@[A-Za-z][A-Za-z0-9_]{3,31}", value):
            return value
    return None


def _markdown(value: Any) -> str:
    """A value put into a MarkdownV2 text, shown as it is (Telegram's escaping)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)) if value is not None else ""


_LARGEST = 100_000  # items or characters an operator may make: far above any message's limit


class _Bounded(ImmutableSandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` bounded: ``{{ 'x' * 10**9 }}`` would otherwise take a
    gigabyte, when the journey is saved (jinja2 folds constants as it compiles) or sent."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError(f"an exponent of at most 64 (got {right})")
        if operator == "*":
            for many, times in ((left, right), (right, left)):
                if isinstance(many, str | list | tuple) and isinstance(times, int):
                    if len(many) * times > _LARGEST:
                        raise SecurityError(f"at most {_LARGEST} repeated items or characters")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENTS = {
    None: _Bounded(autoescape=False, undefined=ChainableUndefined),
    "HTML": _Bounded(autoescape=True, undefined=ChainableUndefined),
    "MarkdownV2": _Bounded(autoescape=False, undefined=ChainableUndefined, finalize=_markdown),
}


@functools.lru_cache(maxsize=256)
def _compiled(source: str, mode: str | None) -> Template:
    return _ENVIRONMENTS[mode].from_string(source)


def render(source: str, traits: dict[str, Any], mode: str | None = None) -> str:
    """``source`` rendered with the person's ``traits`` (``mode``: a Telegram parse mode, whose
    markup a value is escaped for)."""
    return _compiled(source, mode).render(**traits, traits=traits)


def length(text: str) -> int:
    """A text's length in UTF-16 code units: never fewer than its characters, and the unit
    Telegram measures text in (an emoji outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


def check_template(field: str, source: str, limit: int | None, mode: str | None = None) -> None:
    """Refuse, naming ``field``, a template that does not parse, names Python's internals, fails
    to render whatever the traits, or (having no variables) renders longer than ``limit``."""
    environment = _ENVIRONMENTS[mode]
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"`{field}` must be a jinja2 template that parses: {exc.message} (line {exc.lineno})"
        ) from None
    for node in tree.find_all((nodes.Getattr, nodes.Const)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node, "value", None)
        if isinstance(name, str) and _INTERNAL_NAME.match(name):
            raise ValueError(f"`{field}` must not name {name!r}: Python's internals are not "
                             "for templates")  # fmt: skip
    try:
        shown = render(source, {}, mode)
    except UndefinedError:  # arithmetic on a trait the trial has not got: fine with traits
        return
    except Exception as exc:  # the sandbox's SecurityError, a division by zero, a bad filter arg
        raise ValueError(f"`{field}` must render: {type(exc).__name__}: {exc}") from None
    if limit is not None and not meta.find_undeclared_variables(tree) and length(shown) > limit:
        raise ValueError(f"`{field}` must be at most {limit} characters; it renders "
                         f"{length(shown)}")  # fmt: skip


class Sent(msgspec.Struct):
    """What came of one message: sent (``ok``), or to be retried (``retry``: after
    ``after_ms`` if the service said when, else with backoff), or not (permanent);
    ``skipped``: there was nothing to send to (not an error)."""

    ok: bool
    retry: bool
    detail: str
    after_ms: int | None = None
    skipped: bool = False


class Channels:
    """Sends community steps' messages through ``http`` to the services ``settings`` name.

    Keeps, per Discord webhook, when its rate-limit bucket refills (the worker's own state:
    each instance learns it from the answers it gets).

    Examples:
        >>> channels = Channels(ChannelSettings(), httpx.Client())
        >>> channels.telegram_url(None)
        Traceback (most recent call last):
        ...
        LookupError: no Telegram bot token: set KAIROS_TELEGRAM_TOKEN or [channels] telegram_token
    """

    def __init__(self, settings: ChannelSettings, http: httpx.Client, timeout: float = 10.0):
        self.settings = settings
        self.http = http
        self.timeout = timeout
        self._refills: dict[str, int] = {}  # webhook id -> ms its bucket refills at

    def send(self, step: Discord | Telegram, traits: dict[str, Any], now: int) -> Sent:
        """Render ``step``'s text for a person with ``traits`` and send it (``now``: ms)."""
        from journeys.spec import Discord  # here: journeys.spec imports this module

        if isinstance(step, Discord):
            return self._discord(step, traits, now)
        return self._telegram(step, traits)

    def telegram_url(self, token: str | None) -> str:
        if not token:
            raise LookupError(
                "no Telegram bot token: set KAIROS_TELEGRAM_TOKEN or [channels] telegram_token"
            )
        return f"{self.settings.telegram_url.rstrip('/')}/bot{token}/sendMessage"

    def _discord(self, step: Discord, traits: dict[str, Any], now: int) -> Sent:
        hook, _, _ = step.webhook.partition("/")
        refill = self._refills.get(hook, 0)
        if now < refill:
            return Sent(False, True, "Discord rate limit: the webhook's bucket is empty",
                        after_ms=refill - now)  # fmt: skip
        text = _rendered("content", step.content, traits, None, DISCORD_MAX)
        if isinstance(text, Sent):
            return text
        body: dict[str, Any] = {"content": text, "allowed_mentions": {"parse": []}}
        if step.username:
            body["username"] = step.username
        url = f"{self.settings.discord_url.rstrip('/')}/webhooks/{step.webhook}"
        answer = self._post(url, body, {"wait": "true"}, step.webhook)
        if isinstance(answer, Sent):
            return answer
        if answer.headers.get("X-RateLimit-Remaining") == "0":
            after = _seconds(answer.headers.get("X-RateLimit-Reset-After"))
            if after is not None:
                self._refills[hook] = now + after
        found = _json(answer)
        if answer.is_success:
            return Sent(True, False, f"Discord message {found.get('id', '')}".rstrip())
        what = f"Discord: HTTP {answer.status_code}: {_said(found, 'message') or answer.text[:200]}"
        if answer.status_code == 429:
            after = _seconds(found.get("retry_after"))
            after = after if after is not None else _seconds(answer.headers.get("Retry-After"))
            return Sent(False, True, what, after_ms=after)
        return Sent(False, answer.status_code >= 500, what)

    def _telegram(self, step: Telegram, traits: dict[str, Any]) -> Sent:
        if step.chat_id_trait is not None:
            value = traits.get(step.chat_id_trait)
            if value is None or value == "":
                return Sent(False, False, f"no Telegram chat: the person has no trait "
                            f"{step.chat_id_trait!r}", skipped=True)  # fmt: skip
            chat = chat_id_of(value)
            if chat is None:
                return Sent(False, False, f"trait {step.chat_id_trait!r} is not a Telegram chat "
                            f"id (an integer or an @username): {str(value)[:64]!r}")  # fmt: skip
        else:
            chat = step.chat_id
        # The parse mode's markup does not count towards the limit (entities are parsed first):
        # Telegram judges those texts itself.
        limit = TELEGRAM_MAX if step.parse_mode is None else None
        text = _rendered("text", step.text, traits, step.parse_mode, limit)
        if isinstance(text, Sent):
            return text
        token = self.settings.telegram_token
        try:
            url = self.telegram_url(token)
        except LookupError as exc:
            return Sent(False, False, str(exc))
        body: dict[str, Any] = {"chat_id": chat, "text": text}
        if step.parse_mode is not None:
            body["parse_mode"] = step.parse_mode
        if step.disable_web_page_preview is not None:
            body["disable_web_page_preview"] = step.disable_web_page_preview
        answer = self._post(url, body, None, token or "")
        if isinstance(answer, Sent):
            return answer
        found = _json(answer)
        if answer.is_success and found.get("ok") is True:
            result = found.get("result")
            message = result.get("message_id", "") if isinstance(result, dict) else ""
            return Sent(True, False, f"Telegram message {message}".rstrip())
        status = answer.status_code
        described = _said(found, "description") or answer.text[:200]
        what = f"Telegram: HTTP {status}: {found.get('error_code', status)} {described}"
        parameters = found.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        if "migrate_to_chat_id" in parameters:  # a group became a supergroup: a new id
            what += f" (the chat is now {parameters['migrate_to_chat_id']})"
        what = what.replace(token, "<token>") if token else what
        if status == 429:
            return Sent(False, True, what, after_ms=_seconds(parameters.get("retry_after")))
        # A 2xx that is not ok is no answer of the Bot API's (a proxy's page): try again.
        return Sent(False, status >= 500 or answer.is_success, what)

    def _post(self, url: str, body: dict[str, Any], params: dict[str, str] | None,
              secret: str) -> httpx.Response | Sent:  # fmt: skip
        """The service's answer, or a retry when there was none; ``secret`` (a token in
        ``url``) never gets into the detail."""
        try:
            return self.http.post(url, content=msgspec.json.encode(body), params=params,
                                  headers={"Content-Type": "application/json",
                                           "User-Agent": "kairos-journeys"},
                                  timeout=self.timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return Sent(False, True, detail.replace(secret, "<token>") if secret else detail)


def _rendered(field: str, source: str, traits: dict[str, Any], mode: str | None,
              limit: int | None) -> str | Sent:  # fmt: skip
    """The text for this person, or why there is none to send (permanent: the same traits
    render the same again)."""
    try:
        text = render(source, traits, mode)
    except Exception as exc:  # the sandbox's SecurityError, a division by zero, …
        return Sent(False, False, f"`{field}` does not render: {type(exc).__name__}: {exc}")
    if not text.strip():
        return Sent(False, False, f"`{field}` renders empty for this person")
    if limit is not None and length(text) > limit:
        return Sent(False, False, f"`{field}` renders {length(text)} characters for this person; "
                    f"at most {limit} are allowed")  # fmt: skip
    return text


def _seconds(value: object) -> int | None:
    """Milliseconds in a retry-after of seconds (a number, or a header's text), rounded up."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:  # an HTTP date, or nonsense: the usual backoff
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return math.ceil(value * 1000)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        found = answer.json()
    except ValueError:  # an HTML page from a proxy in between
        return {}
    return found if isinstance(found, dict) else {}


def _said(found: dict[str, Any], name: str) -> str:
    value = found.get(name)
    return str(value)[:200] if value is not None else ""
