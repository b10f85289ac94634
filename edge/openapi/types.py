"""What the JSON answers look like, as msgspec Structs the OpenAPI document is generated from.

The endpoints build these answers as dicts; the types here exist to describe them (the fuzz
tests in tests/fuzz check every answer against the schema made from them). Fields a body may
or may not carry are typed ``X | None`` or left out; ``Any`` where the content is the caller's
own JSON (a variant's content, an event's properties).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from msgspec import Struct

__all__ = ["ANSWERS"]


class Error(Struct):
    """What every 4xx and 5xx answer carries: a stable ``code`` and a ``message`` that leads
    with the field path (``$.batch[3].event: required field is missing``)."""

    code: str
    message: str
    errors: list[dict[str, Any]] | None = None  # a batch: every invalid message by index


class Accepted(Struct):
    """The tracking API's 200: every message of the request is in the spool."""

    success: bool


class QueryResult(Struct):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class Saved(Struct):
    """A PUT of a placement, segment or journey: created (201) or replaced (200)."""

    key: str
    created: bool
    changed: bool
    revision: int | None = None  # placements
    backfill: bool | None = None  # segments: a changed rule is evaluated over history


class Deleted(Struct):
    deleted: bool
    key: str | None = None
    id: str | None = None


class PlacementRow(Struct):
    key: str
    name: str
    policy: str
    variants: list[str]
    revision: int


class PlacementList(Struct):
    placements: list[PlacementRow]


class DetectedChange(Struct):
    """A change in a variant's rate that a policy with ``detect_changes`` found."""

    at: str
    variant: str
    direction: Literal["fell", "rose"]
    rate: float
    partition: int


class Learned(Struct):
    policy: str
    revision: int
    decisions: float
    variants: list[dict[str, Any]]
    restarts: int | None = None  # with detect_changes: how many times the policy restarted
    changes: list[DetectedChange] | None = None  # with detect_changes: newest first


class PlacementShown(Struct):
    """A placement's definition (see the request schema ``Placement``) and what it learned."""

    key: str
    variants: list[dict[str, Any]]
    learned: Learned


class Results(Struct):
    placement: str
    policy: str
    metric: str
    control: str
    window: dict[str, Any]
    variants: list[dict[str, Any]]


class EvaluationResult(Struct):
    placement: str
    candidate: dict[str, Any]
    window: dict[str, Any]
    decisions: dict[str, Any]
    estimates: dict[str, Any]


class LogEvaluationResult(Struct):
    """``POST /v1/evaluate``: the candidate, the rounds learned from and judged, and per
    estimator (``logged``, ``ips``, ``snips``, ``dr``) the value, its interval, the value over
    the log's mean reward (``relative``) and the effective number of rounds."""

    policy: str
    prior: bool
    arms: int
    positions: int
    draws: int
    seed: int
    rounds: dict[str, int]
    context: int
    mean_reward: float | None
    estimates: dict[str, Any]


class Profile(Struct):
    id: str
    identities: dict[str, Any]
    traits: dict[str, Any]
    computed: dict[str, Any]
    segments: list[str]
    merged_from: list[str]


class ProfileEvents(Struct):
    profile: str
    events: list[dict[str, Any]]
    next_cursor: str | None


class ProfileExport(Struct):
    profile: Profile
    events: list[dict[str, Any]]


class Erasure(Struct):
    erased: str
    profiles: list[str]
    identities: int
    events: str
    request: str  # the erasure request's id: what the audit log names (never the person)


class SegmentShown(Struct):
    key: str
    rule: Any
    members: int


class SegmentList(Struct):
    segments: list[SegmentShown]


class Members(Struct):
    segment: str
    profiles: list[str]
    next_cursor: str | None


class ModelQuality(Struct):
    """Prequential quality of the raw (uncalibrated) scores, on the same examples."""

    roc_auc: float | None
    log_loss: float | None
    ece: float | None


class ModelShown(Struct):
    """One model: over the last ``window`` labelled examples, each prediction made before its
    label was known, ROC AUC, log loss, expected calibration error (``ece``: 10 equal-width
    bins, the gap between mean prediction and observed rate weighted by each bin's share) and
    calibration by decile; the same for the raw scores in ``uncalibrated``."""

    target: str
    estimator: str
    examples: int
    positives: int
    window: int
    roc_auc: float | None
    log_loss: float | None
    calibration: list[dict[str, Any]]
    ece: float | None = None  # (None in a summary from before calibration)
    calibrated: bool | None = None
    uncalibrated: ModelQuality | None = None


class Models(Struct):
    models: list[ModelShown]
    ltv: dict[str, Any] | None


class ItemShown(Struct):
    item: dict[str, Any]
    recommendable: bool | None = None
    created: bool | None = None


class ItemPage(Struct):
    items: list[dict[str, Any]]
    next_cursor: str | None


class Upserted(Struct):
    upserted: int


class JourneyRow(Struct):
    key: str
    name: str
    trigger: dict[str, Any]
    active: bool
    steps: int
    revision: int


class JourneyList(Struct):
    journeys: list[JourneyRow]
    webhook_secret: str = ""  # what webhooks are signed with: only for the admin scope


class JourneyShown(Struct):
    key: str
    trigger: dict[str, Any]
    steps: dict[str, Any]


class EmailTemplateShown(Struct):
    key: str
    subject: str
    html: str
    text: str = ""
    preheader: str = ""
    revision: int = 0


class EmailTemplateList(Struct):
    templates: list[EmailTemplateShown]


class EmailPreview(Struct):
    key: str
    person: str
    subject: str
    preheader: str
    html: str
    text: str
    unsubscribe_url: str


class BroadcastStatus(Struct):
    key: str
    status: str


class BroadcastProgress(Struct):
    status: str  # draft, scanning, sending, paused, completed, cancelled
    scanned: int  # segment members read
    held_out: int
    fed: int  # handed to the outbox
    pending: int  # queued for their send time or the throttle


class BroadcastShown(Struct):
    key: str
    segment: str
    progress: BroadcastProgress


class BroadcastList(Struct):
    broadcasts: list[BroadcastShown]


class BroadcastDryRun(Struct):
    key: str
    audience: int
    held_out: int
    would_send: int
    skipped: dict[str, int]
    sample: list[dict[str, Any]]
    truncated: bool


class BroadcastGroup(Struct):
    targeted: int
    sent: int
    skipped: dict[str, int]
    bounced: int
    opened: int
    clicked: int
    open_rate: float | None
    click_rate: float | None


class BroadcastResults(Struct):
    key: str
    goal: str | None
    goalWindow: str  # noqa: N815 - the JSON's name
    control: str
    groups: dict[str, BroadcastGroup]
    lift: list[dict[str, Any]]  # as a journey's results' groups (journeys.lift)


class JourneyStats(Struct):
    key: str
    active: dict[str, Any]


class Against(Struct):
    """A group against the holdout on one metric: always-valid 95% intervals (journeys.lift)."""

    difference: float
    differenceCI: list[float]
    lift: float | None  # null while the holdout's figure is 0
    liftCI: list[float] | None
    pValue: float


class VsHoldout(Struct):
    conversion: Against
    revenue: Against


class JourneyGroup(Struct):
    group: str  # treated, or holdout
    people: int
    converted: int
    rate: float
    revenue: float
    revenuePerPerson: float
    revenueVariance: float
    vsHoldout: VsHoldout | None  # null for the holdout itself
    summary: str


class JourneyResults(Struct):
    journey: str
    goal: str
    goalWindow: str
    holdout: float
    control: str
    window: dict[str, Any]
    groups: list[JourneyGroup]
    method: list[str]


class Simulation(Struct):
    key: str
    since: str
    until: str


class Templates(Struct):
    templates: dict[str, Any]  # by name: a journey definition to change and PUT


class SubscriptionGroup(Struct):
    key: str
    name: str
    channel: str
    default: str
    double_opt_in: bool
    description: str


class SubscriptionList(Struct):
    groups: list[SubscriptionGroup]
    suppressed: int  # addresses on the suppression list
    feedback_secret: str = ""  # what POST /v1/messaging/feedback is signed with (admin only)


class GroupSaved(Struct):
    key: str
    created: bool
    changed: bool


class ProfileSubscriptions(Struct):
    """Each group: name, channel, receives (may be sent it), state (None: never chose), at
    (ms), source (api, event, preferences, one_click, confirm, complaint)."""

    profile: str
    subscriptions: dict[str, dict[str, Any]]
    changed: list[str] | None = None  # PUT: the groups whose state changed
    confirmations: dict[str, dict[str, Any]] | None = None  # PUT, double opt-in: sent, message


class SuppressionShown(Struct):
    email: str
    suppressed: bool  # nothing goes to it (bounce, complaint, manual)
    reason: str | None
    at: int | None
    detail: str
    groups: dict[str, int]  # unsubscribed from these groups ("*": all email), since (ms)
    soft_bounces: int


class SuppressionDeleted(Struct):
    email: str
    deleted: bool


class FeedbackRecorded(Struct):
    email: str
    result: str  # suppressed, or recorded (a soft bounce)


class OnchainAccepted(Struct):
    accepted: int
    duplicates: int


class OnchainSecret(Struct):
    secret: str
    signature: str


class Nonce(Struct, rename="camel"):
    nonce: str
    expires_in: int


class Linked(Struct, rename="camel"):
    linked: str
    user_id: str


class Recommendation(Struct, rename="camel"):
    decision_id: str
    placement: str
    strategy: str | None
    variant: str | None
    propensity: float
    fallback: str | None
    items: list[dict[str, Any]]
    html: str | None = None  # /render only
    text: str | None = None


class Recommendations(Struct):
    """One entry per recipient: a ``Recommendation`` and ``recipient``, or ``recipient`` and an
    ``error`` ({code, message}) for one the engine cannot answer (an erased person)."""

    results: list[dict[str, Any]]


class RefreshRequested(Struct):
    """``POST /v1/recommendations/refresh``: asked; the worker recomputes at its next pass."""

    requested: bool
    lists: int  # candidate lists cached now (before the refresh)
    message: str


class AuditChange(Struct):
    """One path of a definition that changed (absent on one side: null there)."""

    path: str
    before: Any = None
    after: Any = None


class AuditEntry(Struct):
    """Who changed what, when, how and from where; the definition before and after."""

    id: str
    time: datetime
    actor: str  # key:<name>, user:<email>, config:file, webhook:feedback
    via: str  # api, dashboard, cli, config
    address: str  # the client's IP
    action: str  # create, update, delete, start, pause, resume, cancel, erase, …
    resource: str
    key: str
    before: Any
    after: Any
    changes: list[AuditChange]


class AuditPage(Struct):
    """``GET /v1/audit``: entries newest first; ``next_cursor`` is null on the last page."""

    entries: list[AuditEntry]
    next_cursor: str | None


class Health(Struct):
    status: str
    redis: str | None = None
    clickhouse: str | None = None
    spool: dict[str, Any] | None = None


class UserShown(Struct):
    """A dashboard user (``edge.access.users``): never their password or its hash."""

    email: str
    role: str
    created: int  # unix seconds
    password_changed: int
    sessions: int  # live ones
    sessions_ended: int | None = None  # a PUT: the sessions a new password ended


class UserList(Struct):
    users: list[UserShown]


class UserDeleted(Struct):
    email: str
    deleted: bool
    sessions_ended: int


class SessionShown(Struct):
    """A dashboard session (``edge.access.sessions``): its id signs no one in."""

    id: str
    user: str  # an email, or "secret key" (the break-glass admin)
    kind: str  # "user" or "bootstrap"
    created: int  # unix seconds
    seen: int
    expires: int
    agent: str | None = None
    address: str | None = None


class SessionList(Struct):
    sessions: list[SessionShown]


class KeyShown(Struct):
    """A named key as listed: never the key itself, only its first characters."""

    name: str
    scopes: list[str]
    created: int  # unix seconds
    prefix: str
    last_used: int | None  # unix seconds, up to the revocation delay behind; None: never
    origins: list[str] = []
    networks: list[str] = []
    expires: int = 0  # unix seconds; 0: never


class KeyCreated(KeyShown):
    key: str = ""  # the key: shown this once, never again


class KeyList(Struct):
    keys: list[KeyShown]
    revocation_delay_seconds: float  # how long a revoked key may still work on other instances


class KeyRevoked(Struct):
    name: str
    revoked: bool
    revocation_delay_seconds: float


ANSWERS = [
    Error,
    UserShown,
    UserList,
    UserDeleted,
    SessionShown,
    SessionList,
    KeyCreated,
    KeyList,
    KeyRevoked,
    BroadcastStatus,
    BroadcastShown,
    BroadcastList,
    BroadcastDryRun,
    BroadcastResults,
    EmailTemplateShown,
    EmailTemplateList,
    EmailPreview,
    Accepted,
    QueryResult,
    Saved,
    Deleted,
    RefreshRequested,
    PlacementList,
    PlacementShown,
    Results,
    EvaluationResult,
    LogEvaluationResult,
    Profile,
    ProfileEvents,
    ProfileExport,
    Erasure,
    SegmentShown,
    SegmentList,
    Members,
    Models,
    ItemShown,
    ItemPage,
    Upserted,
    JourneyList,
    JourneyShown,
    JourneyStats,
    JourneyResults,
    Simulation,
    Templates,
    SubscriptionList,
    SubscriptionGroup,
    GroupSaved,
    ProfileSubscriptions,
    SuppressionShown,
    SuppressionDeleted,
    FeedbackRecorded,
    OnchainAccepted,
    OnchainSecret,
    Nonce,
    Linked,
    Recommendation,
    Recommendations,
    AuditPage,
    Health,
]
