"""The discord and telegram steps, against local servers that act as Discord's webhooks and
Telegram's Bot API: each checks every request against the services' documented format (and
records what it finds wrong), and answers as they do, rate limits included."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from edge.runtime.config import Config, ConfigError, load_config
from edge.runtime.workers import WORKERS, start
from journeys.community import Channels, ChannelSettings, Sent
from journeys.mailer import SendPolicy
from journeys.spec import JOURNEY, Discord, Telegram
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, worker_needs
from tests.helpers import bearer, eventually
from tests.journeys.conftest import Clock, _store, put_journey, track

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

HOOK_ID = "112233445566778899"
HOOK_TOKEN = "dGhpcy1pcy1hLWZha2Utd2ViaG9vay10b2tlbi1mb3ItdGhlLXRlc3RzLW9ubHktMTIz"
WEBHOOK = f"{HOOK_ID}/{HOOK_TOKEN}"
BOT_TOKEN = "7012345678:AAHfakeTokenForTheTestsOnly_0123456789ab"  # the environment's
FILE_TOKEN = "7099999999:AAHtheConfigFilesTokenWhichMustLose_0123"
ADA_CHAT = 123456789

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (bytes: sent as they are)


class Service:
    """A local HTTP server acting as a service: ``check`` lists what a request gets wrong
    (``problems`` keeps them all), ``answer`` answers it; ``script[who]`` holds answers to give
    before the usual ones (a 429, a 500), first in first out."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.script: dict[str, list[Answer]] = {}
        self.delay = 0.0  # seconds before answering (a slow service)
        self.clock = clock or (lambda: int(time.time() * 1000))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, body = outer.handle(self.path, dict(self.headers), raw)
                time.sleep(outer.delay)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting (the timeout test)
                    pass

            def do_GET(self) -> None:  # noqa: N802
                outer.problems.append(f"GET {self.path}: the services take POST")
                self.send_response(405)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        wrong = self.check(path, headers, body)
        self.problems += wrong
        self.received.append({"path": path, "headers": headers, "json": body, "at": self.clock(),
                              "wrong": wrong})  # fmt: skip
        return self.answer(path, body, wrong)

    def check(self, path: str, headers: dict[str, str], body: Any) -> list[str]:
        raise NotImplementedError

    def answer(self, path: str, body: Any, wrong: list[str]) -> Answer:
        raise NotImplementedError

    def scripted(self, who: str) -> Answer | None:
        queued = self.script.get(who) or []
        return queued.pop(0) if queued else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _types(body: dict[str, Any], allowed: dict[str, type | tuple[type, ...]]) -> list[str]:
    """What is wrong with the fields' JSON types (a bool is no integer to these services)."""
    wrong = [f"unknown field {k!r}" for k in body if k not in allowed]
    for name, kinds in allowed.items():
        value = body.get(name)
        if name in body and (
            not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool)
        ):
            wrong.append(f"{name}: {type(value).__name__} is not {kinds}")
    return wrong


class FakeDiscord(Service):
    """Discord's "Execute Webhook" (``POST /webhooks/{id}/{token}``), under ``/api``."""

    hooks = {HOOK_ID: HOOK_TOKEN}
    _FIELDS: dict[str, type | tuple[type, ...]] = {
        "content": str, "username": str, "avatar_url": str, "tts": bool, "embeds": list,
        "allowed_mentions": dict, "flags": int, "thread_name": str,
    }  # fmt: skip

    def check(self, path: str, headers: dict[str, str], body: Any) -> list[str]:
        wrong = []
        parts = urlsplit(path)
        if re.fullmatch(r"/api/webhooks/\d{15,21}/[A-Za-z0-9_-]+", parts.path) is None:
            wrong.append(f"path {parts.path!r} is not /api/webhooks/<id>/<token>")
        if parts.query != "wait=true":
            wrong.append(f"query {parts.query!r}: wait=true, to be answered with the message")
        if not headers.get("Content-Type", "").startswith("application/json"):
            wrong.append(f"Content-Type {headers.get('Content-Type')!r}")
        if not isinstance(body, dict):
            return [*wrong, "the body is not a JSON object"]
        wrong += _types(body, self._FIELDS)
        content = body.get("content")
        if not isinstance(content, str) or not 1 <= len(content) <= 2000:
            wrong.append("content: 1 to 2000 characters (there are no embeds)")
        if "username" in body and not 1 <= len(str(body["username"])) <= 80:
            wrong.append("username: 1 to 80 characters")
        mentions = body.get("allowed_mentions", {})
        if not isinstance(mentions, dict) or not set(mentions.get("parse", [])) <= {
            "roles", "users", "everyone"}:  # fmt: skip
            wrong.append(f"allowed_mentions: {mentions!r}")
        return wrong

    def answer(self, path: str, body: Any, wrong: list[str]) -> Answer:
        hook, _, token = urlsplit(path).path.removeprefix("/api/webhooks/").partition("/")
        if hook not in self.hooks:
            return 404, {}, {"message": "Unknown Webhook", "code": 10015}
        if token != self.hooks[hook]:
            return 401, {}, {"message": "Invalid Webhook Token", "code": 50027}
        if wrong:
            return 400, {}, {"message": "Invalid Form Body", "code": 50035, "errors": wrong}
        found = self.scripted(hook)
        if found is not None:
            return found
        message = {"id": str(1_200_000_000_000_000_000 + len(self.received)), "type": 0,
                   "content": body["content"], "channel_id": "998877665544332211",
                   "webhook_id": hook, "author": {"bot": True, "id": hook,
                                                  "username": body.get("username", "Hook")}}  # fmt: skip
        limits = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4",
                  "X-RateLimit-Reset-After": "2.000", "X-RateLimit-Bucket": "abcd"}  # fmt: skip
        return 200, limits, message


def discord_rate_limited(seconds: float) -> Answer:
    """A 429 as Discord answers it: the JSON ``retry_after`` (seconds, a float) and the
    headers."""
    headers = {"Retry-After": str(int(seconds) + 1), "X-RateLimit-Limit": "5",
               "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{seconds:.3f}",
               "X-RateLimit-Scope": "user"}  # fmt: skip
    return 429, headers, {"message": "You are being rate limited.", "retry_after": seconds,
                          "global": False}  # fmt: skip


_TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
                  "a", "code", "pre", "blockquote", "tg-emoji"}  # fmt: skip


class _Html(HTMLParser):
    """Reads a text as the Bot API's HTML parse mode does: only its tags, balanced."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.wrong: list[str] = []
        self.visible = ""

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in _TELEGRAM_TAGS:
            self.wrong.append(f'Unsupported start tag "{tag}"')
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.wrong.append(f'Unexpected end tag "{tag}"')

    def handle_data(self, data: str) -> None:
        self.visible += data


class FakeTelegram(Service):
    """The Bot API's ``sendMessage`` (``POST /bot{token}/sendMessage``) of one bot, which may
    write to ``chats``."""

    chats: set[int | str] = {ADA_CHAT, "@shop_community"}
    _FIELDS: dict[str, type | tuple[type, ...]] = {
        "chat_id": (int, str), "text": str, "parse_mode": str, "disable_web_page_preview": bool,
        "link_preview_options": dict, "disable_notification": bool, "protect_content": bool,
        "message_thread_id": int, "reply_markup": dict, "entities": list,
    }  # fmt: skip

    def __init__(self, token: str, clock: Callable[[], int] | None = None) -> None:
        super().__init__(clock)
        self.token = token

    def check(self, path: str, headers: dict[str, str], body: Any) -> list[str]:
        wrong = []
        if re.fullmatch(r"/bot\d+:[A-Za-z0-9_-]+/sendMessage", path) is None:
            wrong.append(f"path {path!r} is not /bot<token>/sendMessage")
        if not headers.get("Content-Type", "").startswith("application/json"):
            wrong.append(f"Content-Type {headers.get('Content-Type')!r}")
        if not isinstance(body, dict):
            return [*wrong, "the body is not a JSON object"]
        wrong += _types(body, self._FIELDS)
        if "chat_id" not in body or "text" not in body:
            wrong.append("chat_id and text are required")
        if body.get("parse_mode", "HTML") not in ("HTML", "MarkdownV2", "Markdown"):
            wrong.append(f"parse_mode {body['parse_mode']!r}")
        return wrong

    def answer(self, path: str, body: Any, wrong: list[str]) -> Answer:
        if path.removeprefix("/bot").partition("/")[0] != self.token:
            return 401, {}, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if wrong:
            return 400, {}, {"ok": False, "error_code": 400, "description": f"Bad Request: {wrong}"}
        text, mode = body["text"], body.get("parse_mode")
        if mode == "HTML":
            parsed = _Html()
            parsed.feed(text)
            parsed.close()
            if parsed.wrong or parsed.open:
                self.problems += parsed.wrong or [f"unclosed {parsed.open}"]
                return _bad(f"can't parse entities: {(parsed.wrong or parsed.open)[0]}")
            text = parsed.visible
        elif mode == "MarkdownV2":
            loose = re.search(r"(?<!\\)[.!=+#{}-]", text)
            if loose:
                self.problems.append(f"MarkdownV2: {loose.group()!r} not escaped in {text!r}")
                return _bad(f"can't parse entities: Character '{loose.group()}' is reserved and "
                            "must be escaped with the preceding '\\'")  # fmt: skip
            text = re.sub(r"\\(.)", r"\1", re.sub(r"(?<!\\)[*_~|]", "", text))
        if not text.strip():
            return _bad("message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            self.problems.append("text: more than 4096 characters after entities parsing")
            return _bad("message is too long")
        if body["chat_id"] not in self.chats:
            return _bad("chat not found")
        found = self.scripted(str(body["chat_id"]))
        if found is not None:
            return found
        chat = body["chat_id"]
        kind = "channel" if isinstance(chat, str) else "private"
        return 200, {}, {"ok": True, "result": {"message_id": len(self.received), "date": 0,
                                                "chat": {"id": chat, "type": kind}, "text": text}}  # fmt: skip


def _bad(description: str) -> Answer:
    return 400, {}, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def telegram_rate_limited(seconds: int) -> Answer:
    return 429, {}, {"ok": False, "error_code": 429,
                     "description": f"Too Many Requests: retry after {seconds}",
                     "parameters": {"retry_after": seconds}}  # fmt: skip


# -- the channels alone: what each answer means --


@pytest.fixture
def discord() -> Iterator[FakeDiscord]:
    found = FakeDiscord()
    yield found
    found.close()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    found = FakeTelegram(BOT_TOKEN)
    yield found
    found.close()


@pytest.fixture
def channels(discord: FakeDiscord, telegram: FakeTelegram) -> Iterator[Channels]:
    settings = ChannelSettings(discord_url=f"{discord.url}/api", telegram_url=telegram.url,
                               telegram_token=BOT_TOKEN)  # fmt: skip
    with httpx.Client() as http:
        yield Channels(settings, http, timeout=0.5)


def _discord(content: str = "Hi {{ first_name }}", **options: Any) -> Discord:
    return Discord(webhook=WEBHOOK, content=content, next="end", **options)


def _telegram(text: str = "Hi {{ first_name }}", **options: Any) -> Telegram:
    return Telegram(text=text, next="end", **({"chat_id": ADA_CHAT} | options))


def test_a_discord_message_is_sent_as_discord_documents_it(
    channels: Channels, discord: FakeDiscord
) -> None:
    sent = channels.send(_discord("Hi {{ first_name }} @everyone", username="Kairos Shop"),
                         {"first_name": "Ada"}, 0)  # fmt: skip
    assert sent.ok, sent.detail
    assert sent.detail.startswith("Discord message 12")
    assert discord.problems == []
    [request] = discord.received
    assert request["path"] == f"/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}?wait=true"
    assert request["json"] == {"content": "Hi Ada @everyone", "username": "Kairos Shop",
                               "allowed_mentions": {"parse": []}}  # fmt: skip


def test_the_fake_discord_refuses_what_discord_refuses(discord: FakeDiscord) -> None:
    """The receiver's checks can fail: a request off the documented format is caught."""
    answer = httpx.post(f"{discord.url}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}",
                        json={"content": "x" * 2001, "colour": 3})  # fmt: skip
    assert answer.status_code == 400
    assert discord.problems == ["query '': wait=true, to be answered with the message",
                                "unknown field 'colour'",
                                "content: 1 to 2000 characters (there are no embeds)"]  # fmt: skip
    answer = httpx.post(f"{discord.url}/api/webhooks/{HOOK_ID}/wrong-token-0123456789?wait=true",
                        json={"content": "x"})  # fmt: skip
    assert answer.status_code == 401 and answer.json()["code"] == 50027


@pytest.mark.parametrize(
    ("answer", "retry", "after_ms"),
    [
        pytest.param(discord_rate_limited(1.25), True, 1250, id="429-json-retry-after"),
        pytest.param(
            (429, {"Retry-After": "7"}, b"<html>slow down</html>"), True, 7000, id="429-header-only"
        ),
        pytest.param((502, {}, b"<html>bad gateway</html>"), True, None, id="5xx-backoff"),
        pytest.param(
            (404, {}, {"message": "Unknown Webhook", "code": 10015}),
            False,
            None,
            id="4xx-permanent",
        ),
    ],
)
def test_what_a_discord_answer_means(channels: Channels, discord: FakeDiscord, answer: Answer,
                                     retry: bool, after_ms: int | None) -> None:  # fmt: skip
    discord.script[HOOK_ID] = [answer]
    sent = channels.send(_discord(), {"first_name": "Ada"}, 0)
    assert (sent.ok, sent.retry, sent.after_ms) == (False, retry, after_ms), sent.detail
    assert sent.detail.startswith(f"Discord: HTTP {answer[0]}")
    assert HOOK_TOKEN not in sent.detail


def test_an_empty_discord_bucket_holds_the_next_message_until_it_refills(
    channels: Channels, discord: FakeDiscord
) -> None:
    refill = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "1.5"}
    discord.script[HOOK_ID] = [(200, refill, {"id": "1"})]
    assert channels.send(_discord(), {}, 10_000).ok
    held = channels.send(_discord(), {}, 10_400)
    assert (held.ok, held.retry, held.after_ms) == (False, True, 1100)
    assert len(discord.received) == 1  # not asked: Discord would have answered 429
    assert channels.send(_discord(), {}, 11_500).ok
    assert len(discord.received) == 2


def test_a_message_too_long_or_empty_for_a_person_is_not_sent(
    channels: Channels, discord: FakeDiscord, telegram: FakeTelegram
) -> None:
    sent = channels.send(_discord("{{ bio }}"), {"bio": "b" * 2001}, 0)
    assert sent == Sent(False, False, "`content` renders 2001 characters for this person; at most "
                        "2000 are allowed")  # fmt: skip
    emoji = channels.send(_telegram("{{ bio }}"), {"bio": "🎉" * 2049}, 0)  # 4098 UTF-16 units
    assert not emoji.ok and not emoji.retry and "renders 4098 characters" in emoji.detail
    empty = channels.send(_telegram("{{ nickname }}"), {}, 0)
    assert empty == Sent(False, False, "`text` renders empty for this person")
    assert discord.received == [] and telegram.received == []


def test_a_telegram_message_is_sent_as_the_bot_api_documents_it(
    channels: Channels, telegram: FakeTelegram
) -> None:
    step = _telegram("Hi {{ first_name }}, <b>{{ offer }}</b>", parse_mode="HTML",
                     disable_web_page_preview=True)  # fmt: skip
    sent = channels.send(step, {"first_name": "Ada", "offer": "10% <off> & more"}, 0)
    assert sent.ok, sent.detail
    assert telegram.problems == []
    [request] = telegram.received
    assert request["path"] == f"/bot{BOT_TOKEN}/sendMessage"
    assert request["json"] == {"chat_id": ADA_CHAT, "parse_mode": "HTML",
                               "text": "Hi Ada, <b>10% &lt;off&gt; &amp; more</b>",
                               "disable_web_page_preview": True}  # fmt: skip
    markdown = _telegram("*{{ first_name }}* saved {{ saved }}!", parse_mode="MarkdownV2")
    assert not channels.send(markdown, {"first_name": "Ada-Lou", "saved": "12.50"}, 0).ok
    assert telegram.problems == ["MarkdownV2: '!' not escaped in '*Ada\\\\-Lou* saved 12\\\\.50!'"]
    telegram.problems.clear()
    markdown = _telegram("*{{ first_name }}* saved {{ saved }}\\!", parse_mode="MarkdownV2")
    assert channels.send(markdown, {"first_name": "Ada-Lou", "saved": "12.50"}, 0).ok
    assert telegram.received[-1]["json"]["text"] == "*Ada\\-Lou* saved 12\\.50\\!"
    assert telegram.problems == []


@pytest.mark.parametrize(
    ("answer", "retry", "after_ms"),
    [
        pytest.param(telegram_rate_limited(3), True, 3000, id="429-retry-after"),
        pytest.param(
            (500, {}, {"ok": False, "error_code": 500, "description": "Internal"}),
            True,
            None,
            id="5xx-backoff",
        ),
        pytest.param(
            (
                403,
                {},
                {
                    "ok": False,
                    "error_code": 403,
                    "description": "Forbidden: bot was blocked by the user",
                },
            ),
            False,
            None,
            id="blocked-permanent",
        ),
    ],
)
def test_what_a_telegram_answer_means(channels: Channels, telegram: FakeTelegram,
                                      answer: Answer, retry: bool,
                                      after_ms: int | None) -> None:  # fmt: skip
    telegram.script[str(ADA_CHAT)] = [answer]
    sent = channels.send(_telegram(), {"first_name": "Ada"}, 0)
    assert (sent.ok, sent.retry, sent.after_ms) == (False, retry, after_ms), sent.detail
    assert sent.detail.startswith(f"Telegram: HTTP {answer[0]}: {answer[0]} ")
    assert BOT_TOKEN not in sent.detail


def test_telegram_trouble_never_shows_the_token(channels: Channels, telegram: FakeTelegram) -> None:
    unknown = channels.send(_telegram(chat_id=987654321), {}, 0)
    assert unknown == Sent(False, False, "Telegram: HTTP 400: 400 Bad Request: chat not found")
    telegram.delay = 1.0  # longer than the channels' timeout
    slow = channels.send(_telegram(), {}, 0)
    assert (slow.ok, slow.retry, slow.detail) == (False, True, "ReadTimeout: timed out")
    telegram.delay = 0
    other = Channels(channels.settings.with_token(FILE_TOKEN), channels.http)
    refused = other.send(_telegram(), {}, 0)
    assert refused == Sent(False, False, "Telegram: HTTP 401: 401 Unauthorized")
    telegram.close()
    gone = channels.send(_telegram(), {}, 0)
    assert gone.retry and gone.detail.startswith("ConnectError: ")
    for sent in (unknown, slow, refused, gone):
        assert BOT_TOKEN not in sent.detail and FILE_TOKEN not in sent.detail
    assert BOT_TOKEN not in repr(channels.settings)


def test_a_person_without_the_chat_trait_is_skipped(
    channels: Channels, telegram: FakeTelegram
) -> None:
    step = _telegram(chat_id=None, chat_id_trait="telegram_chat_id")
    assert channels.send(step, {"first_name": "Bob"}, 0) == Sent(
        False, False, "no Telegram chat: the person has no trait 'telegram_chat_id'", skipped=True
    )
    odd = channels.send(step, {"telegram_chat_id": "bob's phone"}, 0)
    assert not odd.ok and not odd.retry and not odd.skipped
    assert odd.detail == ("trait 'telegram_chat_id' is not a Telegram chat id (an integer or an "
                          "@username): \"bob's phone\"")  # fmt: skip
    assert channels.send(step, {"telegram_chat_id": str(ADA_CHAT)}, 0).ok
    assert telegram.received[-1]["json"]["chat_id"] == ADA_CHAT  # an integer, as it is one
    no_bot = Channels(ChannelSettings(telegram_url=telegram.url), channels.http)
    assert no_bot.send(_telegram(), {}, 0) == Sent(
        False, False, "no Telegram bot token: set KAIROS_TELEGRAM_TOKEN or [channels] "
        "telegram_token")  # fmt: skip


# -- definitions --


def _journey(step: dict[str, Any]) -> dict[str, Any]:
    return {"trigger": {"kind": "event", "event": "Signed Up"}, "start": "say",
            "steps": {"say": {**step, "next": "end"}, "end": {"type": "end"}}}  # fmt: skip


@pytest.mark.parametrize(
    ("step", "message"),
    [
        pytest.param({"type": "discord", "webhook": "https://evil.example/api/webhooks/1/2",
                      "content": "Hi"},
                     '$.steps.say.webhook: must be "<webhook id>/<webhook token>" or the '
                     "webhook's URL from Discord's channel settings, "
                     '"https://discord.com/api/webhooks/<id>/<token>"', id="bad-webhook"),
        pytest.param({"type": "discord", "webhook": WEBHOOK, "content": "Hi {{ name"},
                     "$.steps.say.content: must be a jinja2 template that parses: unexpected end "
                     "of template, expected 'end of print statement'. (line 1)", id="no-parse"),
        pytest.param({"type": "discord", "webhook": WEBHOOK, "content": "{{ 1 // 0 }}"},
                     "$.steps.say.content: must render: ZeroDivisionError: integer division or "
                     "modulo by zero", id="render-error"),
        pytest.param({"type": "discord", "webhook": WEBHOOK, "content": "{{ 'x' * 10**9 }}"},
                     "$.steps.say.content: must render: SecurityError: at most 100000 repeated "
                     "items or characters", id="huge"),
        pytest.param({"type": "discord", "webhook": WEBHOOK,
                      "content": "{{ ''.__class__ }}"},
                     "$.steps.say.content: must not name '__class__': Python's internals are not "
                     "for templates", id="internals"),
        pytest.param({"type": "discord", "webhook": WEBHOOK, "content": "x" * 2001},
                     "$.steps.say.content: must be at most 2000 characters; it renders 2001",
                     id="static-too-long"),
        pytest.param({"type": "telegram", "text": "Hi"},
                     "$.steps.say: a telegram step has exactly one of chat_id, chat_id_trait",
                     id="no-chat"),
        pytest.param({"type": "telegram", "text": "Hi", "chat_id": 5,
                      "chat_id_trait": "telegram_chat_id"},
                     "$.steps.say: a telegram step has exactly one of chat_id, chat_id_trait",
                     id="both-chats"),
        pytest.param({"type": "telegram", "text": "Hi", "chat_id": "shop community"},
                     "$.steps.say.chat_id: must be a chat's numeric id (e.g. -1001234567890) or a "
                     "public chat's \"@username\" (e.g. \"@shop_community\"); got 'shop community'",
                     id="bad-chat"),
        pytest.param({"type": "telegram", "text": "Hi", "chat_id": 5, "parse_mode": "markdown"},
                     "$.steps.say.parse_mode: Invalid enum value 'markdown' — expected one of "
                     "HTML, MarkdownV2", id="parse-mode"),
        pytest.param({"type": "telegram", "text": "{% for x in y %}", "chat_id": 5},
                     "$.steps.say.text: must be a jinja2 template that parses: Unexpected end of "
                     "template. Jinja was looking for the following tags: 'endfor' or 'else'. The "
                     "innermost block that needs to be closed is 'for'. (line 1)",
                     id="telegram-no-parse"),
    ],
)  # fmt: skip
def test_definitions_are_checked_naming_the_field(
    engine: Engine, step: dict[str, Any], message: str
) -> None:
    answer = engine.client.put(f"{engine.url}/v1/journeys/x", json=_journey(step),
                               headers=bearer())  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"code": "invalid_journey", "message": message}


def test_definitions_keep_the_webhook_as_id_and_token(engine: Engine) -> None:
    url = f"https://discord.com/api/webhooks/{WEBHOOK}"
    put_journey(
        engine, "x", _journey({"type": "discord", "webhook": url, "content": "{{ a + 1 }}"})
    )
    shown = engine.client.get(f"{engine.url}/v1/journeys/x", headers=bearer()).json()
    assert shown["steps"]["say"] == {"type": "discord", "webhook": WEBHOOK,
                                     "content": "{{ a + 1 }}", "next": "end"}  # fmt: skip
    # The HTML parse mode's markup does not count: Telegram parses entities first.
    long_html = "<b>" + "x" * 4096 + "</b>"
    JOURNEY.decode(json.dumps(_journey({"type": "telegram", "text": long_html, "chat_id": 5,
                                        "parse_mode": "HTML"})))  # fmt: skip


# -- configuration --


def test_channels_come_from_the_config_file_and_the_token_from_the_environment(
    redis_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kairos.toml"
    config.write_text(f'[channels]\ndiscord_url = "http://127.0.0.1:9/api"\n'
                      f'telegram_token = "{FILE_TOKEN}"\n')  # fmt: skip
    loaded = load_config(config)
    assert loaded.channels.telegram_token == FILE_TOKEN
    assert loaded.channels.telegram_url == "https://api.telegram.org"

    def token_of(given: Config) -> str | None:
        worker: Any = WORKERS["journeys"].build(worker_needs(redis_url, "cfg", given))
        worker.stopped()
        return worker.courier.channels.settings.telegram_token  # type: ignore[no-any-return]

    monkeypatch.delenv("KAIROS_TELEGRAM_TOKEN", raising=False)
    assert token_of(loaded) == FILE_TOKEN
    monkeypatch.setenv("KAIROS_TELEGRAM_TOKEN", BOT_TOKEN)
    assert token_of(loaded) == BOT_TOKEN
    monkeypatch.setenv("KAIROS_TELEGRAM_TOKEN", "12345")
    with pytest.raises(ValueError, match=r"^KAIROS_TELEGRAM_TOKEN: a bot token is "):
        token_of(loaded)
    config.write_text('[channels]\ntelegram_token = "secret-but-malformed"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "$.channels.telegram_token" in str(refused.value)
    assert "secret-but-malformed" not in str(refused.value)
    config.write_text('[channels]\nslack_url = "https://slack.com"\n')
    with pytest.raises(ConfigError, match="slack_url"):
        load_config(config)


# -- end to end: tracked events, the journeys worker, the services --


class Services:
    def __init__(self, clock: Clock, discord: FakeDiscord, telegram: FakeTelegram) -> None:
        self.clock, self.discord, self.telegram = clock, discord, telegram


@pytest.fixture
def services(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """The journeys worker (its clock the test's), with the channels at the fakes: the file's
    bot token is a wrong one, the environment's the right one (which must win)."""
    clock = Clock()
    discord, telegram = FakeDiscord(clock), FakeTelegram(BOT_TOKEN, clock)
    monkeypatch.setenv("KAIROS_TELEGRAM_TOKEN", BOT_TOKEN)
    config = Config(channels=ChannelSettings(discord_url=f"{discord.url}/api",
                                             telegram_url=telegram.url,
                                             telegram_token=FILE_TOKEN))  # fmt: skip
    needs = worker_needs(engine.settings.redis_url, "test-community", config,
                         api=(engine.url, WRITE_KEY, SECRET_KEY))  # fmt: skip
    stop = threading.Event()
    thread = start("journeys", needs, stop, interval=0.05, clock=clock)
    yield Services(clock, discord, telegram)
    stop.set()
    thread.join(timeout=30)
    discord.close()
    telegram.close()


def identify(engine: Engine, who: str, **traits: Any) -> None:
    answer = engine.post("/v1/identify", {"anonymousId": who, "traits": traits})
    assert answer.status_code == 200


def outbox(engine: Engine) -> dict[str, int]:
    """Every partition's outbox: action key -> when it is (re)tried (ms)."""
    r = _store(engine.settings.redis_url)
    found: dict[str, int] = {}
    for key in r.scan_iter(match="*:outbox"):
        found |= {k.decode(): int(s) for k, s in r.zrange(key, 0, -1, withscores=True)}
    return found


def actions_sent(engine: Engine) -> list[list[str]]:
    return engine.sql("SELECT anonymous_id, JSONExtractString(properties, 'step'), "
                      "JSONExtractString(properties, 'action') FROM events "
                      "WHERE event = 'Journey Action Sent' ORDER BY 1, 2")  # fmt: skip


def test_a_discord_step_posts_for_each_person_and_waits_out_a_rate_limit(
    engine: Engine, services: Services
) -> None:
    discord, clock = services.discord, services.clock
    discord.script[HOOK_ID] = [discord_rate_limited(600.5)]  # ten minutes: far beyond backoff
    put_journey(engine, "welcome", {
        "trigger": {"kind": "event", "event": "Signed Up"},
        "start": "announce",
        "steps": {
            "announce": {"type": "discord", "webhook": f"https://discord.com/api/webhooks/{WEBHOOK}",
                         "content": "Welcome {{ first_name or 'a new member' }}! {{ bio }}",
                         "username": "Kairos Shop", "next": "end"},
            "end": {"type": "end"},
        },
    })  # fmt: skip
    identify(engine, "ada", first_name="Ada")
    identify(engine, "bob", first_name="Bob", bio="b" * 2000)  # too long once rendered
    track(engine, "ada", "Signed Up")
    eventually(lambda: discord.received)
    first = discord.received[0]
    assert first["json"]["content"] == "Welcome Ada! "
    # Retried exactly when Discord said, not after the backoff (2 s): the outbox says so, and
    # a minute later nothing has been sent again.
    [(key, due)] = eventually(lambda: list(outbox(engine).items()))
    assert 0 <= first["at"] - (due - 600_500) < 5_000
    clock.forward(1)
    time.sleep(1.0)
    assert len(discord.received) == 1
    clock.forward(9.2)
    eventually(lambda: len(discord.received) == 2)
    assert discord.received[1]["json"] == first["json"]
    assert discord.received[1]["at"] >= due
    track(engine, "bob", "Signed Up")  # too long for Discord: dropped without asking
    eventually(lambda: not outbox(engine) and (engine.sql(
        "SELECT count() FROM events WHERE event = 'Journey Completed'") == [[2]]))  # fmt: skip
    time.sleep(0.5)
    assert len(discord.received) == 2 and discord.problems == []
    rows = eventually(lambda: actions_sent(engine))
    assert rows == [["ada", "announce", "discord"]]


def test_a_telegram_step_messages_people_and_a_channel(engine: Engine, services: Services) -> None:
    telegram, clock = services.telegram, services.clock
    telegram.script[str(ADA_CHAT)] = [telegram_rate_limited(600)]
    put_journey(engine, "drop", {
        "trigger": {"kind": "event", "event": "Order Completed"},
        "start": "thanks",
        "steps": {
            "thanks": {"type": "telegram", "chat_id_trait": "telegram_chat_id",
                       "text": "Thanks {{ first_name }}! <b>{{ offer }}</b>", "parse_mode": "HTML",
                       "next": "announce"},
            "announce": {"type": "telegram", "chat_id": "@shop_community",
                         "text": "{{ first_name }} just ordered", "next": "end"},
            "end": {"type": "end"},
        },
    })  # fmt: skip
    identify(engine, "ada", first_name="Ada", telegram_chat_id=ADA_CHAT, offer="10% <off> next")
    identify(engine, "bob", first_name="Bob")  # no chat id: thanked nowhere, but announced
    track(engine, "ada", "Order Completed")
    track(engine, "bob", "Order Completed")
    eventually(lambda: len(telegram.received) == 3)
    texts = sorted((r["json"]["chat_id"], r["json"]["text"]) for r in telegram.received
                   if r["json"]["chat_id"] == "@shop_community")  # fmt: skip
    assert texts == [
        ("@shop_community", "Ada just ordered"),
        ("@shop_community", "Bob just ordered"),
    ]
    [thanks] = [r for r in telegram.received if r["json"]["chat_id"] == ADA_CHAT]
    assert thanks["json"] == {"chat_id": ADA_CHAT, "parse_mode": "HTML",
                              "text": "Thanks Ada! <b>10% &lt;off&gt; next</b>"}  # fmt: skip
    assert thanks["path"] == f"/bot{BOT_TOKEN}/sendMessage"  # the environment's token won
    # Once the announcements are settled (the service has them a moment before), the thanks
    # is all the outbox holds.
    [(key, due)] = eventually(lambda: found if len(found := list(outbox(engine).items())) == 1
                              else None)  # fmt: skip
    assert key.endswith("|thanks") and 0 <= thanks["at"] - (due - 600_000) < 5_000
    clock.forward(1)
    time.sleep(1.0)
    assert len(telegram.received) == 3
    clock.forward(10)
    eventually(lambda: len(telegram.received) == 4)
    assert telegram.received[3]["json"] == thanks["json"] and telegram.problems == []
    eventually(lambda: not outbox(engine))
    rows = eventually(lambda: rows if len(rows := actions_sent(engine)) == 3 else None)
    assert rows == [["ada", "announce", "telegram"], ["ada", "thanks", "telegram"],
                    ["bob", "announce", "telegram"]]  # fmt: skip


def test_a_telegram_message_to_a_person_keeps_their_quiet_hours_and_the_frequency_cap(
    engine: Engine,
) -> None:
    # 20:30 UTC on 1 June is 22:30 in Berlin: inside Ada's quiet hours until 08:00 there.
    clock = Clock()
    evening = int(datetime(2026, 6, 1, 20, 30, tzinfo=UTC).timestamp() * 1000)
    clock.offset = evening - clock()
    telegram = FakeTelegram(BOT_TOKEN, clock)
    config = Config(channels=ChannelSettings(telegram_url=telegram.url, telegram_token=BOT_TOKEN),
                    messaging=SendPolicy(quiet_hours="21:00-08:00", frequency_cap=1))  # fmt: skip
    needs = worker_needs(engine.settings.redis_url, "test-community", config)
    stop = threading.Event()
    thread = start("journeys", needs, stop, interval=0.05, clock=clock)
    try:
        put_journey(engine, "thanks", {
            "trigger": {"kind": "event", "event": "Order Completed"},
            "entry": {"reentry": "always"}, "start": "thanks",
            "steps": {"thanks": {"type": "telegram", "chat_id_trait": "telegram_chat_id",
                                 "text": "Thanks {{ first_name }}!", "next": "end"},
                      "end": {"type": "end"}}})  # fmt: skip
        identify(engine, "ada", first_name="Ada", telegram_chat_id=ADA_CHAT,
                 timezone="Europe/Berlin")  # fmt: skip
        track(engine, "ada", "Order Completed")
        [(key, due)] = eventually(lambda: list(outbox(engine).items()))
        morning = int(datetime(2026, 6, 2, 6, 0, tzinfo=UTC).timestamp() * 1000)
        assert due == morning and telegram.received == []  # 08:00 in Berlin
        clock.forward(9 * 60 + 31)  # 06:01 UTC
        eventually(lambda: len(telegram.received) == 1)
        track(engine, "ada", "Order Completed")  # a second thanks the same day: over the cap
        skipped = eventually(lambda: engine.sql(
            "SELECT JSONExtractString(properties, 'reason') FROM events "
            "WHERE event = 'Message Skipped'"))  # fmt: skip
        assert skipped == [["frequency_cap"]] and len(telegram.received) == 1
    finally:
        stop.set()
        thread.join(timeout=30)
        telegram.close()
