"""Journey definitions: a trigger, entry rules, a graph of steps, exit rules — as data, checked on
the way in so that every error names the step (or field) at fault.

A journey (JSON, e.g. ``PUT /v1/journeys/abandoned_cart``)::

    {"name": "Abandoned cart",
     "trigger": {"kind": "event", "event": "Product Added"},
     "entry": {"reentry": "days", "reentry_days": 7},
     "exit": [{"event": "Order Completed"}],
     "goal": "Order Completed",
     "start": "wait",
     "steps": {
       "wait": {"type": "wait", "duration": "1h", "next": "remind"},
       "remind": {"type": "webhook", "url": "https://mail.example/send", "next": "end"},
       "end": {"type": "end"}}}

Triggers (``kind``): ``event`` (``where``: property values), ``segment_entered`` /
``segment_exited``, ``score`` (a score reaching ``above``), ``onchain`` (an on-chain ``event``
such as mint or stake, of a ``contract``).

Steps (``type``): ``wait`` (a ``duration``; or ``until_time`` "HH:MM" in the person's
``timezone`` trait; or ``until_event`` with a ``timeout``, going to ``timeout_next`` when it
does not come), ``branch`` (``cases``: the first whose rule matches, else ``otherwise``),
``split`` (weighted random paths, sticky per person: a holdout is a path to an ``end``),
``webhook`` (signed JSON with the person; ``decide``: a placement's variant goes along),
``email`` (an email template sent over SMTP, checked against a subscription ``group``; or
a webhook to an email provider with the address, a subject and rendered recommendations),
``traits`` (set traits), ``score`` (adjust the lead score), ``emit`` (an event), ``discord``
and ``telegram`` (a message to a community channel: ``journeys.community``), ``end``.

``holdout`` (a share up to 0.5, with a ``goal``): that share of the people entering, sticky per
person, enter and are counted but are sent nothing, so ``journeys.lift`` can say what the
journey earns: the goal within ``goal_window`` (default 7d) after entering, against them.

Examples:
    >>> parse_duration("90m"), parse_duration("1d")
    (5400000, 86400000)
    >>> JOURNEY.decode(b'{"trigger": {"kind": "event", "event": "Signed Up"}, "start": "a",'
    ...     b' "steps": {"a": {"type": "wait", "duration": "1h", "next": "b"}}}')
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: steps.a.next: no step 'b'
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from collector.identifiers import checksum_address
from journeys import community
from profiles.segments import Rule

__all__ = ["JOURNEY", "KEY", "Journey", "Step", "Trigger", "parse", "parse_duration"]

KEY = re.compile(r"[a-z0-9_][a-z0-9_-]{0,63}")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_ACCEPTED = (
    "a number and a unit with nothing between, the unit s (seconds), m (minutes), h (hours) or "
    'd (days): like "30s", "15m", "1h", "1.5h" or "7d"'
)
# Checked by ``parse_duration`` in the steps' __post_init__ rather than by a pattern here: a
# pattern's error shows the regex (with doubled escapes, in JSON), not what is accepted.
Duration = Annotated[str, msgspec.Meta(min_length=2, max_length=32, description=_ACCEPTED,
                                       examples=["30s", "15m", "1h", "7d"])]  # fmt: skip
StepName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)]


def parse_duration(text: str) -> int:
    """Milliseconds in "30s", "15m", "1.5h" or "7d"."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"a duration is {_ACCEPTED}; got {text!r}")
    return int(float(found.group(1)) * _UNIT_MS[found.group(2)])


# -- triggers --


class EventTrigger(msgspec.Struct, tag="event", tag_field="kind", forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(min_length=1)]
    where: dict[str, Any] = {}  # properties that must equal these values


class SegmentEntered(msgspec.Struct, tag="segment_entered", tag_field="kind",
                     forbid_unknown_fields=True):  # fmt: skip
    segment: str


class SegmentExited(msgspec.Struct, tag="segment_exited", tag_field="kind",
                    forbid_unknown_fields=True):  # fmt: skip
    segment: str


class ScoreCrossed(msgspec.Struct, tag="score", tag_field="kind", forbid_unknown_fields=True):
    """The person's ``score`` (a predictive score, or ``lead_score``) rises to ``above``."""

    score: str
    above: float


class OnchainTrigger(msgspec.Struct, tag="onchain", tag_field="kind", forbid_unknown_fields=True):
    """An on-chain event (``POST /v1/onchain``) of this kind, of ``contract`` if given."""

    event: Literal["mint", "transfer", "stake", "unstake", "vote", "burn", "swap", "other"]
    contract: Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{40}$")] | None = None
    direction: Literal["in", "out"] | None = None  # of a transfer

    def __post_init__(self) -> None:
        if self.contract is not None:
            self.contract = checksum_address(self.contract)


Trigger = EventTrigger | SegmentEntered | SegmentExited | ScoreCrossed | OnchainTrigger


class Cap(msgspec.Struct, forbid_unknown_fields=True):
    """At most ``journeys`` journeys entered (any of them, this one included) per ``days``."""

    journeys: Annotated[int, msgspec.Meta(ge=1)]
    days: Annotated[float, msgspec.Meta(gt=0)] = 7.0


class Entry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who may enter: ``rule`` (the segment rule language), how often (``reentry``: once,
    again after ``reentry_days``, or always — never while already in the journey), and a
    frequency ``cap`` across journeys (so nobody gets five campaigns in a day)."""

    rule: Rule | None = None
    segment: str | None = None
    reentry: Literal["once", "days", "always"] = "once"
    reentry_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    cap: Cap | None = None


class ExitRule(msgspec.Struct, forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(min_length=1)]
    where: dict[str, Any] = {}


# -- steps --


class Wait(msgspec.Struct, tag="wait", tag_field="type", forbid_unknown_fields=True,
           omit_defaults=True):  # fmt: skip
    next: StepName
    duration: Duration | None = None
    until_time: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    until_event: str | None = None
    timeout: Duration | None = None
    timeout_next: StepName | None = None

    def __post_init__(self) -> None:
        for name in ("duration", "timeout"):
            value = getattr(self, name)
            if value is not None and _DURATION.match(value) is None:
                raise ValueError(f"`{name}` must be {_ACCEPTED}; got {value!r}")
        forms = [f for f in ("duration", "until_time", "until_event") if getattr(self, f)]
        if len(forms) != 1:
            raise ValueError("a wait has exactly one of duration, until_time, until_event")
        if self.until_event and not (self.timeout and self.timeout_next):
            raise ValueError("a wait until_event needs `timeout` and `timeout_next`")


class Case(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    next: StepName
    rule: Rule | None = None
    segment: str | None = None  # in this segment
    event_since_entry: str | None = None  # did this since entering the journey

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.rule, self.segment, self.event_since_entry)) != 1:
            raise ValueError("a case has exactly one of rule, segment, event_since_entry")


class Branch(msgspec.Struct, tag="branch", tag_field="type", forbid_unknown_fields=True):
    cases: Annotated[list[Case], msgspec.Meta(min_length=1)]
    otherwise: StepName


class Path(msgspec.Struct, forbid_unknown_fields=True):
    weight: Annotated[float, msgspec.Meta(gt=0)]
    next: StepName
    name: str = ""


class Split(msgspec.Struct, tag="split", tag_field="type", forbid_unknown_fields=True):
    paths: Annotated[list[Path], msgspec.Meta(min_length=2)]


class Webhook(msgspec.Struct, tag="webhook", tag_field="type", forbid_unknown_fields=True,
              omit_defaults=True):  # fmt: skip
    url: Url
    next: StepName
    body: dict[str, Any] = {}  # merged into the JSON sent
    decide: str | None = None  # a placement: its variant for the person goes along (a bandit)


class Email(msgspec.Struct, tag="email", tag_field="type", forbid_unknown_fields=True,
            omit_defaults=True):  # fmt: skip
    """An email: ``template`` (an email template, ``PUT /v1/templates/{key}``) sent by Kairos
    over SMTP, checked against ``group`` (a subscription group: consent, unsubscribes) at send
    time; or, with ``url`` instead, a hand-off to an email provider: a webhook carrying the
    person's address, ``subject`` and a block of recommendations from ``placement`` rendered by
    the recommendations API (``layout``: grid or list), with ``decide``'s variant if given."""

    next: StepName
    template: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$")] | None = None
    group: str | None = None
    url: Url | None = None
    subject: str = ""
    placement: str | None = None
    layout: Literal["grid", "list"] = "grid"
    n: Annotated[int, msgspec.Meta(ge=1, le=50)] = 4
    body: dict[str, Any] = {}
    decide: str | None = None

    def __post_init__(self) -> None:
        if self.url and self.template in ("grid", "list"):  # a hand-off saved before layout
            self.layout, self.template = self.template, None  # type: ignore[assignment]
        if (self.template is None) == (self.url is None):
            raise ValueError("an email step has either `template` (sent by Kairos over SMTP) "
                             "or `url` (a hand-off to your provider's webhook)")  # fmt: skip


class Traits(msgspec.Struct, tag="traits", tag_field="type", forbid_unknown_fields=True):
    set: dict[str, Any]
    next: StepName


class Score(msgspec.Struct, tag="score", tag_field="type", forbid_unknown_fields=True):
    points: float
    next: StepName


class Emit(msgspec.Struct, tag="emit", tag_field="type", forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(min_length=1)]
    next: StepName
    properties: dict[str, Any] = {}


class Discord(msgspec.Struct, tag="discord", tag_field="type", forbid_unknown_fields=True,
              omit_defaults=True):  # fmt: skip
    """A message to a Discord channel through one of its webhooks (``journeys.community``):
    ``webhook`` is "<id>/<token>" or the webhook's URL (kept as "<id>/<token>"), ``content`` a
    jinja2 template over the person's traits, at most 2000 characters once rendered.

    Examples:
        >>> hook = "https://discord.com/api/webhooks/112233445566778899/" + "x" * 68
        >>> Discord(webhook=hook, content="Hi {{ first_name }}", next="end").webhook[:19]
        '112233445566778899/'
        >>> Discord(webhook="https://example.com/hook", content="Hi", next="end")
        Traceback (most recent call last):
        ...
        ValueError: `webhook` must be "<webhook id>/<webhook token>" or the webhook's URL from Discord's channel settings, "https://discord.com/api/webhooks/<id>/<token>"
    """  # noqa: E501

    webhook: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    next: StepName
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None

    def __post_init__(self) -> None:
        self.webhook = community.webhook_of(self.webhook)
        community.check_template("content", self.content, community.DISCORD_MAX)


class Telegram(msgspec.Struct, tag="telegram", tag_field="type", forbid_unknown_fields=True,
               omit_defaults=True):  # fmt: skip
    """A message to a Telegram chat from the engine's bot (``journeys.community``): to
    ``chat_id`` (a channel's "@username" or a numeric id), or to the chat id in the person's
    trait ``chat_id_trait`` (a person without it is skipped); ``text`` a jinja2 template over
    the traits, at most 4096 characters once rendered.

    Examples:
        >>> Telegram(chat_id="@shop_community", text="New drop!", next="end").chat_id
        '@shop_community'
        >>> Telegram(chat_id="shop", text="New drop!", next="end")
        Traceback (most recent call last):
        ...
        ValueError: `chat_id` must be a chat's numeric id (e.g. -1001234567890) or a public chat's "@username" (e.g. "@shop_community"); got 'shop'
    """  # noqa: E501

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=40_000)]
    next: StepName
    chat_id: int | str | None = None
    chat_id_trait: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    parse_mode: community.ParseMode | None = None
    disable_web_page_preview: bool | None = None

    def __post_init__(self) -> None:
        if (self.chat_id is None) == (self.chat_id_trait is None):
            raise ValueError("a telegram step has exactly one of chat_id, chat_id_trait")
        if self.chat_id is not None:
            chat = community.chat_id_of(self.chat_id)
            if chat is None:
                raise ValueError(
                    "`chat_id` must be a chat's numeric id (e.g. -1001234567890) or a public "
                    f'chat\'s "@username" (e.g. "@shop_community"); got {self.chat_id!r}'
                )
            self.chat_id = chat
        limit = community.TELEGRAM_MAX if self.parse_mode is None else None
        community.check_template("text", self.text, limit, self.parse_mode)


class End(msgspec.Struct, tag="end", tag_field="type", forbid_unknown_fields=True):
    pass


Step = Wait | Branch | Split | Webhook | Email | Traits | Score | Emit | Discord | Telegram | End
ACTIONS = (Webhook, Email, Traits, Score, Emit, Discord, Telegram)


def successors(step: Step) -> list[tuple[str, str]]:
    """(field, step name) pairs a step can go to."""
    if isinstance(step, End):
        return []
    if isinstance(step, Branch):
        cases = [(f"cases[{i}].next", c.next) for i, c in enumerate(step.cases)]
        return [*cases, ("otherwise", step.otherwise)]
    if isinstance(step, Split):
        return [(f"paths[{i}].next", p.next) for i, p in enumerate(step.paths)]
    found = [("next", step.next)]
    if isinstance(step, Wait) and step.timeout_next:
        found.append(("timeout_next", step.timeout_next))
    return found


def in_order(journey: Journey) -> list[str]:
    """The journey's step names, breadth first from its start (unreachable ones last)."""
    seen, queue = [journey.start], [journey.start]
    while queue:
        for _, target in successors(journey.steps[queue.pop(0)]):
            if target not in seen:
                seen.append(target)
                queue.append(target)
    return seen + [name for name in journey.steps if name not in seen]


class Journey(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    trigger: Trigger
    start: StepName
    steps: Annotated[dict[StepName, Step], msgspec.Meta(min_length=1, max_length=200)]
    name: str = ""
    description: str = ""
    entry: Entry = msgspec.field(default_factory=Entry)
    exit: list[ExitRule] = []
    goal: str | None = None  # the event that counts as converting
    # Within how long after entering the goal counts (journeys.lift), and the share of the
    # people entering who are held out: they enter and are counted, but are sent nothing, so
    # the journey's lift is measured against them.
    goal_window: Duration = "7d"
    holdout: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.0
    active: bool = True
    revision: int = 0  # set by the engine on every change

    def __post_init__(self) -> None:
        if self.start not in self.steps:
            raise ValueError(f"`start`: no step {self.start!r}")
        for name, step in self.steps.items():
            for field, target in successors(step):
                if target not in self.steps:
                    raise ValueError(f"steps.{name}.{field}: no step {target!r}")
        loop = self._loop_without_wait()
        if loop:
            raise ValueError(f"steps.{loop}: a loop without a wait would never stop")
        if _DURATION.match(self.goal_window) is None:
            raise ValueError(f"`goal_window` must be {_ACCEPTED}; got {self.goal_window!r}")
        if self.holdout and not self.goal:
            raise ValueError("`holdout` must come with a `goal`: the event whose lift it measures")

    def _loop_without_wait(self) -> str | None:
        """A step on a cycle that passes no wait, if any."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str) -> str | None:
            if state.get(name) == 1:
                return name
            if state.get(name) == 2 or isinstance(self.steps[name], Wait):
                return None
            state[name] = 1
            for _, target in successors(self.steps[name]):
                if (found := visit(target)) is not None:
                    return found
            state[name] = 2
            return None

        for name in self.steps:
            if (found := visit(name)) is not None:
                return found
        return None


JOURNEY = msgspec.json.Decoder(Journey)
_STEP = msgspec.json.Decoder(dict[str, msgspec.Raw])


def parse(body: bytes) -> Journey:
    """A journey from JSON; a ``msgspec.ValidationError`` names the step at fault
    (``$.steps.<name>…``) where msgspec alone would say ``$.steps[...]``."""
    try:
        return JOURNEY.decode(body)
    except msgspec.ValidationError as exc:
        if "steps[...]" not in str(exc):
            raise
        try:
            steps = _STEP.decode(msgspec.json.encode(msgspec.json.decode(body)["steps"]))
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError):
            raise exc from None
        for name, raw in steps.items():
            try:
                msgspec.json.decode(raw, type=Step)
            except msgspec.ValidationError as found:
                text, at, where = str(found).rpartition(" - at `$")
                text, where = (text, where.rstrip("`")) if at else (where, "")
                raise msgspec.ValidationError(f"{text} - at `$.steps.{name}{where}`") from None
        raise
