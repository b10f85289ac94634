"""Every operation of the public HTTP contract: method, path, summary, who may call it, what it
takes and what it answers. ``edge.openapi.document`` assembles them into the OpenAPI document.

Request bodies are the msgspec Structs the endpoints decode with; JSON answers are the Structs of
``edge.openapi.types``. Every operation may also answer 413 (body over ``[limits]
max_body_kb``) and 429 (over a ``[limits]`` rate); ``edge.openapi.document`` adds those, and 401
to every operation that takes a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector import wire
from collector.audit import RESOURCES, VIAS
from collector.onchain import OnchainBatch
from decisions.choice import Answer, Ask
from decisions.placements import KEY, Placement
from edge.access.keys import NAME, KeyAsk
from edge.access.users import MIN_PASSWORD, UserAsk, UserChange
from edge.routes.evaluation import LogEvaluation
from edge.routes.journeys import SimulateAsk
from edge.routes.placements import Evaluation
from edge.routes.products import Bulk
from edge.routes.recommendations import MAX_ITEMS, TEMPLATES
from edge.routes.recommendations import Batch as RecommendationBatch
from edge.routes.sql import SqlRequest
from edge.routes.subscriptions import Feedback, Group
from edge.routes.templates import PreviewAsk
from edge.routes.wallets import Link
from journeys.broadcasts import Broadcast
from journeys.emails import EmailTemplate
from journeys.spec import Journey
from profiles.products import Item
from profiles.segments import Segment

__all__ = ["BODIES", "Operation", "operations"]

BODIES = [wire.Batch, wire.Track, wire.Page, wire.Screen, wire.Identify, wire.Alias, wire.Group,
          Ask, Answer, SqlRequest, Placement, Evaluation, Segment, Item, Bulk, Journey,
          SimulateAsk, OnchainBatch, RecommendationBatch, Link, EmailTemplate,
          PreviewAsk, Broadcast, Group, Feedback, KeyAsk, LogEvaluation, UserAsk,
          UserChange]  # fmt: skip

WRITE, SECRET, SIGNED, SESSION = "writeKey", "secretKey", "onchainSignature", "dashboardSession"
FEEDBACK_SIGNED = "feedbackSignature"
_KEY = {"type": "string", "pattern": f"^{KEY.pattern}$"}


@dataclass
class Operation:
    """One method on one path. ``answers`` maps a status to (description, body) where the body
    is a component name (JSON), a media type ("text/html"), or None (no body)."""

    method: str
    path: str
    summary: str
    tag: str
    security: tuple[str, ...] = ()
    body: str | None = None  # a component name
    media: tuple[str, ...] = ("application/json",)  # what the body may be sent as
    body_required: bool = True
    parameters: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    scope: str = ""  # what the caller's key (or dashboard user's role) must hold; "" = none


def path(name: str, schema: dict[str, Any] | None = None, about: str = "") -> dict[str, Any]:
    found = {"name": name, "in": "path", "required": True,
             "schema": schema or {"type": "string", "minLength": 1}}  # fmt: skip
    return {**found, "description": about} if about else found


def query(name: str, schema: dict[str, Any], about: str = "", required: bool = False) -> Any:
    found = {"name": name, "in": "query", "required": required, "schema": schema}
    return {**found, "description": about} if about else found


_CURSOR = query("cursor", {"type": "string"}, "next_cursor of the previous page")
_PLACEMENT_KEY = path("key", _KEY, "the placement's key")
_SEGMENT_KEY = path("key", _KEY, "the segment's key")
_JOURNEY_KEY = path("key", _KEY, "the journey's key")
_PROFILE_ID = path("id", {"type": "string", "minLength": 1},
                   "a profile id (p_…) or user_id:…, anonymous_id:…, email:…, wallet:…, "
                   "external:<type>:<id>")  # fmt: skip
_ITEM_ID = path("id", {"type": "string", "minLength": 1, "maxLength": 200}, "the item's id")
_SINCE_UNTIL = [
    query("since", {"type": "string", "format": "date-time"}, "start of the window (ISO 8601)"),
    query("until", {"type": "string", "format": "date-time"}, "end of the window (ISO 8601)"),
]
_RECOMMEND = [
    query("placement", _KEY, "a recommendation placement", required=True),
    query("n", {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS}, "how many items"),
]

_OK_STORED = {200: ("Durable in the spool", "Accepted")}
_BAD = {400: ("Invalid input; the message leads with the field path", "Error")}
_MISSING = {404: ("No such resource", "Error")}
_STORE_DOWN = {503: ("A store is unavailable or the spool is full; retry after Retry-After",
                     "Error")}  # fmt: skip
_HTML = "text/html"
# Every change is recorded in the audit log before it answers (edge.access.audit).
_LOGGED = {503: ("The change was made, but the audit log could not take its entry "
                 "(audit_unavailable); retry after Retry-After", "Error")}  # fmt: skip
_SAVED = {200: ("Replaced", "Saved"), 201: ("Created", "Saved"), **_BAD, **_LOGGED}


def _tracking() -> list[Operation]:
    found = [Operation("post", "/v1/batch", "Segment batch: up to 500 KB, each message up to "
                       "32 KB; atomic (a 400 lists every invalid message)", "tracking", (WRITE,),
                       "Batch", ("application/json", "text/plain"),
                       answers={**_OK_STORED, **_BAD, **_STORE_DOWN}, scope="track")]  # fmt: skip
    for cls in (wire.Track, wire.Page, wire.Screen, wire.Identify, wire.Alias, wire.Group):
        tag = cls.__struct_config__.tag
        found.append(Operation("post", f"/v1/{tag}", f"One Segment {tag} message (up to 32 KB)",
                               "tracking", (WRITE,), cls.__name__,
                               ("application/json", "text/plain"),
                               answers={**_OK_STORED, **_BAD, **_STORE_DOWN},
                               scope="track"))  # fmt: skip
    return found


def _deciding() -> list[Operation]:
    return [
        Operation("post", "/v1/decide", "Choose each placement's variant for one visitor "
                  "(the write key may travel in the body as writeKey). With the write key a "
                  "userId counts only with its userHash (hex HMAC-SHA256 of the userId under "
                  "the identity secret); the secret key (a server) is trusted as it is",
                  "decide", (WRITE, SECRET),
                  "Ask", answers={200: ("The decisions; placements that do not exist are named "
                                        "in errors", "Answer"), **_BAD,
                                  404: ("None of the placements exists", "Error")}, scope="decide"),
    ]  # fmt: skip


def _placements() -> list[Operation]:
    one = [_PLACEMENT_KEY]
    results = [query("metric", {"type": "string", "minLength": 1, "maxLength": 200},
                     "reward (default) or an event name"), *_SINCE_UNTIL,
               query("segment", _KEY, "count only this segment's members")]  # fmt: skip
    evaluate = [query("kind", {"type": "string"}, "the candidate policy's kind (its other "
                      "parameters, as in PolicySpec, may follow as query parameters)"),
                query("features", {"type": "string"}, "comma-separated feature names"),
                *_SINCE_UNTIL,
                query("train_share", {"type": "number", "exclusiveMinimum": 0,
                                      "exclusiveMaximum": 1})]  # fmt: skip
    return [
        Operation("get", "/v1/placements", "Every placement", "placements", (SECRET,),
                  answers={200: ("The placements", "PlacementList")}, scope="read"),
        Operation("put", "/v1/placements/{key}", "Create or replace a placement", "placements",
                  (SECRET,), "Placement", parameters=one,
                  answers=_SAVED,
                  scope="placements:write"),
        Operation("get", "/v1/placements/{key}", "A placement and what its policy learned",
                  "placements", (SECRET,), parameters=one,
                  answers={200: ("The placement", "PlacementShown"), **_BAD, **_MISSING},
                  scope="read"),
        Operation("delete", "/v1/placements/{key}", "Delete a placement", "placements",
                  (SECRET,), parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="placements:write"),
        Operation("get", "/v1/placements/{key}/evaluate", "Off-policy evaluation of a candidate "
                  "policy on the placement's decision log", "placements", (SECRET,),
                  parameters=[*one, *evaluate],
                  answers={200: ("Estimates", "EvaluationResult"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="placements:write"),
        Operation("post", "/v1/placements/{key}/evaluate", "Off-policy evaluation (the candidate "
                  "as a JSON body)", "placements", (SECRET,), "Evaluation", parameters=one,
                  answers={200: ("Estimates", "EvaluationResult"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="placements:write"),
        Operation("post", "/v1/evaluate", "Off-policy evaluation of a candidate policy on a "
                  "logged-bandit file (CSV text in the body; rounds another system logged)",
                  "placements", (SECRET,), "LogEvaluation",
                  answers={200: ("Estimates", "LogEvaluationResult"), **_BAD}, scope="read"),
        Operation("get", "/v1/placements/{key}/results", "Experiment results per variant",
                  "placements", (SECRET,), parameters=[*one, *results],
                  answers={200: ("Results", "Results"), **_BAD, **_MISSING, **_STORE_DOWN},
                  scope="read"),
    ]  # fmt: skip


def _profiles() -> list[Operation]:
    one = [_PROFILE_ID]
    events = [query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}), _CURSOR]
    return [
        Operation("get", "/v1/profiles/{id}", "A profile: identities, traits, computed traits, "
                  "scores, segments", "profiles", (SECRET,), parameters=one,
                  answers={200: ("The profile", "Profile"), **_BAD, **_MISSING},
                  scope="profiles:read"),
        Operation("delete", "/v1/profiles/{id}", "Erase a person (GDPR): profile, identities, "
                  "events", "profiles", (SECRET,), parameters=one,
                  answers={202: ("Erasure under way", "Erasure"), **_BAD, **_MISSING, **_LOGGED},
                  scope="profiles:erase"),
        Operation("get", "/v1/profiles/{id}/events", "A person's events, newest first",
                  "profiles", (SECRET,), parameters=[*one, *events],
                  answers={200: ("A page of events", "ProfileEvents"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="profiles:read"),
        Operation("get", "/v1/profiles/{id}/export", "Everything about a person (GDPR export)",
                  "profiles", (SECRET,), parameters=one,
                  answers={200: ("The export", "ProfileExport"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="profiles:read"),
    ]  # fmt: skip


def _segments() -> list[Operation]:
    one = [_SEGMENT_KEY]
    return [
        Operation("get", "/v1/segments", "Every segment and its size", "segments", (SECRET,),
                  answers={200: ("The segments", "SegmentList")}, scope="read"),
        Operation("put", "/v1/segments/{key}", "Create or replace a segment (queues its "
                  "backfill)", "segments", (SECRET,), "Segment", parameters=one,
                  answers=_SAVED,
                  scope="segments:write"),
        Operation("get", "/v1/segments/{key}", "A segment", "segments", (SECRET,),
                  parameters=one,
                  answers={200: ("The segment", "SegmentShown"), **_BAD, **_MISSING}, scope="read"),
        Operation("delete", "/v1/segments/{key}", "Delete a segment", "segments", (SECRET,),
                  parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="segments:write"),
        Operation("get", "/v1/segments/{key}/members", "A page of the segment's profile ids",
                  "segments", (SECRET,), parameters=[*one, _CURSOR],
                  answers={200: ("Members", "Members"), **_BAD}, scope="read"),
    ]  # fmt: skip


def _catalog() -> list[Operation]:
    one = [_ITEM_ID]
    return [
        Operation("get", "/v1/catalog/items", "A page of the product catalog", "catalog",
                  (SECRET,), parameters=[_CURSOR],
                  answers={200: ("Items", "ItemPage"), **_BAD}, scope="read"),
        Operation("post", "/v1/catalog/items", "Upsert up to 1,000 items, all or nothing",
                  "catalog", (SECRET,), "Bulk",
                  answers={200: ("Upserted", "Upserted"), **_BAD, **_LOGGED},
                  scope="catalog:write"),
        Operation("put", "/v1/catalog/items/{id}", "Create or replace an item", "catalog",
                  (SECRET,), "Item", parameters=one,
                  answers={200: ("Replaced", "ItemShown"), 201: ("Created", "ItemShown"),
                           **_BAD, **_LOGGED}, scope="catalog:write"),
        Operation("get", "/v1/catalog/items/{id}", "An item", "catalog", (SECRET,),
                  parameters=one,
                  answers={200: ("The item", "ItemShown"), **_BAD, **_MISSING}, scope="read"),
        Operation("delete", "/v1/catalog/items/{id}", "Delete an item", "catalog", (SECRET,),
                  parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="catalog:write"),
    ]  # fmt: skip


def _journeys() -> list[Operation]:
    one = [_JOURNEY_KEY]
    return [
        Operation("get", "/v1/journeys", "Every journey, and the secret webhooks are signed "
                  "with", "journeys", (SECRET,), answers={200: ("Journeys", "JourneyList")},
                  scope="read"),
        Operation("get", "/v1/journeys/templates", "Journey templates to start from",
                  "journeys", (SECRET,), answers={200: ("Templates", "Templates")}, scope="read"),
        Operation("get", "/v1/journeys/{key}/stats", "Entered, active per step, completed, "
                  "exited, converted", "journeys", (SECRET,), parameters=one,
                  answers={200: ("Counts", "JourneyStats"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="read"),
        Operation("get", "/v1/journeys/{key}/results", "Treated against held-out people: "
                  "conversion and revenue lift", "journeys", (SECRET,),
                  parameters=[*one, *_SINCE_UNTIL],
                  answers={200: ("Results", "JourneyResults"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="read"),
        Operation("post", "/v1/journeys/{key}/simulate", "Dry run over past events (sends "
                  "nothing)", "journeys", (SECRET,), "SimulateAsk", parameters=one,
                  body_required=False,
                  answers={200: ("What would have happened", "Simulation"),
                           **_BAD, **_MISSING, **_STORE_DOWN}, scope="journeys:write"),
        Operation("put", "/v1/journeys/{key}", "Create or replace a journey", "journeys",
                  (SECRET,), "Journey", parameters=one,
                  answers=_SAVED,
                  scope="journeys:write"),
        Operation("get", "/v1/journeys/{key}", "A journey's definition", "journeys", (SECRET,),
                  parameters=one,
                  answers={200: ("The journey", "JourneyShown"), **_BAD, **_MISSING}, scope="read"),
        Operation("delete", "/v1/journeys/{key}", "Delete a journey", "journeys", (SECRET,),
                  parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="journeys:write"),
    ]  # fmt: skip


def _messaging() -> list[Operation]:
    one = [path("key", _KEY, "the template's key")]
    token = [path("token", {"type": "string", "minLength": 10}, "a signed link token")]
    return [
        Operation("get", "/v1/templates", "Every email template", "messaging", (SECRET,),
                  answers={200: ("Templates", "EmailTemplateList")}, scope="read"),
        Operation("put", "/v1/templates/{key}", "Create or replace an email template",
                  "messaging", (SECRET,), "EmailTemplate", parameters=one,
                  answers=_SAVED,
                  scope="messaging:write"),
        Operation("get", "/v1/templates/{key}", "An email template", "messaging", (SECRET,),
                  parameters=one,
                  answers={200: ("The template", "EmailTemplateShown"), **_BAD, **_MISSING},
                  scope="read"),
        Operation("delete", "/v1/templates/{key}", "Delete an email template", "messaging",
                  (SECRET,), parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="messaging:write"),
        Operation("post", "/v1/templates/{key}/preview", "The template rendered for one "
                  "person (their recommendations and offer included)", "messaging", (SECRET,),
                  "PreviewAsk", parameters=one,
                  answers={200: ("The message as they would get it", "EmailPreview"), **_BAD,
                           **_MISSING, 409: ("A block cannot be had", "Error"),
                           503: ("The engine's API is unavailable", "Error")},
                  scope="messaging:write"),
        *_broadcasts(),
        Operation("get", "/v1/m/c/{token}", "Tracked link of a sent message: records Email "
                  "Clicked and redirects", "messaging", parameters=token,
                  answers={302: ("To the link's URL", None),
                           404: ("Not a link of a message from here", "Error")}),
        Operation("get", "/v1/m/o/{token}.gif", "Open pixel of a sent message (records Email "
                  "Opened)", "messaging", parameters=token,
                  answers={200: ("A 1×1 GIF", "image/gif")}),
    ]  # fmt: skip


def _broadcasts() -> list[Operation]:
    one = [path("key", _KEY, "the broadcast's key")]
    running = {409: ("Not allowed in the broadcast's status (the message says which)", "Error")}
    acts = [
        Operation(
            "post",
            f"/v1/broadcasts/{{key}}/{action}",
            summary,
            "messaging",
            (SECRET,),
            parameters=one,
            body_required=False,
            answers={
                200: ("Its status now", "BroadcastStatus"),
                **_BAD,
                **_MISSING,
                **running,
                **_LOGGED,
            },
            scope="messaging:send",
        )
        for action, summary in (
            ("start", "Start sending (a draft)"),
            ("pause", "Pause the feed where it is"),
            ("resume", "Resume a paused broadcast"),
            ("cancel", "Cancel: what has not been fed is dropped"),
        )
    ]
    return [
        Operation("get", "/v1/broadcasts", "Every broadcast, with its progress", "messaging",
                  (SECRET,), answers={200: ("Broadcasts", "BroadcastList")}, scope="read"),
        Operation("put", "/v1/broadcasts/{key}", "Create or replace a broadcast (a draft)",
                  "messaging", (SECRET,), "Broadcast", parameters=one,
                  answers={200: ("Replaced", "Saved"), 201: ("Created", "Saved"), **_BAD,
                           **running, **_LOGGED}, scope="messaging:write"),
        Operation("get", "/v1/broadcasts/{key}", "A broadcast and its progress", "messaging",
                  (SECRET,), parameters=one,
                  answers={200: ("The broadcast", "BroadcastShown"), **_BAD, **_MISSING},
                  scope="read"),
        Operation("delete", "/v1/broadcasts/{key}", "Delete a broadcast (not while it runs)",
                  "messaging", (SECRET,), parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **running, **_LOGGED},
                  scope="messaging:write"),
        *acts,
        Operation("post", "/v1/broadcasts/{key}/dry-run", "Who would receive it now (sends "
                  "nothing)", "messaging", (SECRET,), parameters=one, body_required=False,
                  answers={200: ("The audience", "BroadcastDryRun"), **_BAD, **_MISSING},
                  scope="read"),
        Operation("get", "/v1/broadcasts/{key}/results", "Outcomes per variant and the "
                  "holdout", "messaging", (SECRET,), parameters=one,
                  answers={200: ("Results", "BroadcastResults"), **_BAD, **_MISSING,
                           **_STORE_DOWN}, scope="read"),
    ]  # fmt: skip


def _subscriptions() -> list[Operation]:
    one = [path("key", _KEY, "the subscription group's key")]
    email = [path("email", {"type": "string", "minLength": 1, "maxLength": 320},
                  "an email address")]  # fmt: skip
    token = [path("token", {"type": "string", "minLength": 1}, "a signed link's token")]
    page = {200: ("The page", _HTML)}
    invalid = {404: ("Not a valid link (forged, mangled, or its person erased)", _HTML)}
    return [
        Operation("get", "/v1/subscriptions", "Every subscription group, the suppression "
                  "list's size and the feedback webhook's secret", "subscriptions", (SECRET,),
                  answers={200: ("The groups", "SubscriptionList")}, scope="read"),
        Operation("put", "/v1/subscriptions/{key}", "Create or replace a subscription group",
                  "subscriptions", (SECRET,), "SubscriptionDefinition", parameters=one,
                  answers={200: ("Replaced", "GroupSaved"), 201: ("Created", "GroupSaved"),
                           **_BAD, **_LOGGED}, scope="messaging:write"),
        Operation("get", "/v1/subscriptions/{key}", "A subscription group", "subscriptions",
                  (SECRET,), parameters=one,
                  answers={200: ("The group", "SubscriptionGroup"), **_BAD, **_MISSING},
                  scope="read"),
        Operation("delete", "/v1/subscriptions/{key}", "Delete a subscription group",
                  "subscriptions", (SECRET,), parameters=one,
                  answers={200: ("Deleted", "Deleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="messaging:write"),
        Operation("get", "/v1/profiles/{id}/subscriptions", "A person's state in every group",
                  "subscriptions", (SECRET,), parameters=[_PROFILE_ID],
                  answers={200: ("The states", "ProfileSubscriptions"), **_BAD, **_MISSING},
                  scope="profiles:read"),
        Operation("put", "/v1/profiles/{id}/subscriptions", "Subscribe or unsubscribe a person "
                  '({"<group>": "subscribed" | "unsubscribed"}); a double opt-in group waits '
                  "as pending and gets a confirmation email", "subscriptions", (SECRET,),
                  "StateChange", parameters=[_PROFILE_ID],
                  answers={200: ("The states now", "ProfileSubscriptions"), **_BAD,
                           **_MISSING, **_LOGGED}, scope="messaging:send"),
        Operation("get", "/v1/suppressions/{email}", "An address's suppression entry",
                  "subscriptions", (SECRET,), parameters=email,
                  answers={200: ("The entry", "SuppressionShown"), **_BAD, **_MISSING},
                  scope="profiles:read"),
        Operation("delete", "/v1/suppressions/{email}", "Take an address off the suppression "
                  "list", "subscriptions", (SECRET,), parameters=email,
                  answers={200: ("Taken off", "SuppressionDeleted"), **_BAD, **_MISSING, **_LOGGED},
                  scope="messaging:send"),
        Operation("post", "/v1/messaging/feedback", "A bounce or complaint from the email "
                  "provider (X-Kairos-Signature under the feedback secret, or the secret key)",
                  "subscriptions", (SECRET, FEEDBACK_SIGNED), "Feedback",
                  answers={200: ("Recorded", "FeedbackRecorded"), **_BAD, **_LOGGED},
                  scope="messaging:send"),
        Operation("get", "/v1/preferences/{token}", "A person's preference page (signed link)",
                  "subscriptions", parameters=token, answers={**page, **invalid}),
        Operation("post", "/v1/preferences/{token}", "Save the preference page's toggles "
                  "(form: g=<group>…, or all=email)", "subscriptions", parameters=token,
                  body="PreferencesForm", media=("application/x-www-form-urlencoded",),
                  body_required=False, answers={**page, **invalid}),
        Operation("get", "/v1/unsubscribe/{token}", "The unsubscribe link's page: a button "
                  "(scanners fetch links; a GET changes nothing)", "subscriptions",
                  parameters=token, answers={**page, **invalid}),
        Operation("post", "/v1/unsubscribe/{token}", "RFC 8058 one-click unsubscribe (body "
                  "List-Unsubscribe=One-Click)", "subscriptions", parameters=token,
                  body="OneClickForm", media=("application/x-www-form-urlencoded",
                                              "multipart/form-data"),
                  body_required=False,
                  answers={**page, **invalid,
                           400: ("Not List-Unsubscribe=One-Click: nothing changed", _HTML)}),
        Operation("get", "/v1/subscriptions/confirm/{token}", "The double opt-in link's page: "
                  "a button", "subscriptions", parameters=token, answers={**page, **invalid}),
        Operation("post", "/v1/subscriptions/confirm/{token}", "Confirm a double opt-in "
                  "subscription", "subscriptions", parameters=token, body="ConfirmForm",
                  media=("application/x-www-form-urlencoded",), body_required=False,
                  answers={**page, **invalid}),
    ]  # fmt: skip


def _wallets_and_chain() -> list[Operation]:
    return [
        Operation("post", "/v1/onchain", "Normalised on-chain events from an indexer (secret key, "
                  "or X-Kairos-Signature under the on-chain secret)", "onchain",
                  (SECRET, SIGNED), "OnchainBatch",
                  answers={200: ("In the spool", "OnchainAccepted"), **_BAD, **_STORE_DOWN},
                  scope="onchain"),
        Operation("get", "/v1/onchain", "The on-chain webhook secret", "onchain", (SECRET,),
                  answers={200: ("The secret", "OnchainSecret")}, scope="admin"),
        Operation("post", "/v1/wallets/nonce", "A nonce for one Sign-In with Ethereum proof",
                  "wallets", (WRITE,), answers={200: ("The nonce", "Nonce")}, scope="decide"),
        Operation("post", "/v1/wallets/link", "Link a wallet to a user by its SIWE signature",
                  "wallets", (WRITE,), "Link",
                  answers={200: ("Linked", "Linked"), **_BAD}, scope="decide"),
    ]  # fmt: skip


def _recommendations() -> list[Operation]:
    one = [_PROFILE_ID]
    template = query("template", {"type": "string", "enum": TEMPLATES}, "the email template")
    unavailable = {503: ("Placements not loaded yet, or Redis unavailable", "Error")}
    return [
        Operation("post", "/v1/recommendations/batch", "Recommendations for up to 1,000 "
                  "recipients", "recommendations", (SECRET,), "Batch_1",
                  answers={200: ("One result per recipient", "Recommendations"),
                           **_BAD, **_MISSING, **unavailable}, scope="recommendations"),
        Operation("post", "/v1/recommendations/refresh", "Recompute the candidate lists now "
                  "(the recommendations worker does it at its next pass)", "recommendations",
                  (SECRET,), answers={202: ("Asked; not yet done", "RefreshRequested"), **_LOGGED},
                  scope="catalog:write"),
        Operation("get", "/v1/recommendations/{id}/render", "Recommendations rendered as an "
                  "email block (html and text)", "recommendations", (SECRET,),
                  parameters=[*one, *_RECOMMEND, template],
                  answers={200: ("The rendered block", "Recommendation"),
                           **_BAD, **_MISSING, **unavailable}, scope="recommendations"),
        Operation("get", "/v1/recommendations/{id}", "Recommendations for one person",
                  "recommendations", (SECRET,), parameters=[*one, *_RECOMMEND],
                  answers={200: ("The items", "Recommendation"),
                           **_BAD, **_MISSING, **unavailable}, scope="recommendations"),
        Operation("get", "/v1/r/{decision}/{item}", "Click-tracking redirect to an item's URL "
                  "(records Decision Clicked)", "recommendations",
                  parameters=[path("decision", {"type": "string", "pattern": "^d_[0-9a-f]{24}$"}),
                              path("item"), query("to", {"type": "string"},
                                                  "must be the item's own URL")],
                  answers={302: ("To the item's URL", None), **_BAD, **_MISSING}),
        Operation("get", "/v1/o/{decision}.gif", "Open pixel (records Email Opened)",
                  "recommendations", parameters=[path("decision")],
                  answers={200: ("A 1×1 GIF", "image/gif")}),
    ]  # fmt: skip


def _audit() -> list[Operation]:
    text = {"type": "string", "minLength": 1, "maxLength": 320}
    filters = [
        query("resource", {"type": "string", "enum": list(RESOURCES)}, "what was changed"),
        query("key", text, "the resource's key (a suppression's: the address, or its hash)"),
        query("actor", text, "who: key:<name>, user:<email>, config:file"),
        query("via", {"type": "string", "enum": list(VIAS)}, "how"),
        query(
            "action",
            {"type": "string", "pattern": "^[a-z_]{1,32}$"},
            "create, update, delete, start, pause, resume, cancel, erase, …",
        ),
        *_SINCE_UNTIL,
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 500},
            "entries per page (default 100)",
        ),
        _CURSOR,
    ]
    return [
        Operation("get", "/v1/audit", "The audit log: who changed what, when, how and from "
                  "where, newest first", "audit", (SECRET,), parameters=filters,
                  answers={200: ("A page of entries", "AuditPage"), **_BAD, **_STORE_DOWN},
                  scope="admin"),
    ]  # fmt: skip


def _operations_and_sdk() -> list[Operation]:
    script = {200: ("The script", "application/javascript")}
    cached = {304: ("Not modified (If-None-Match)", None)}
    return [
        Operation("post", "/v1/sql", "Read-only SQL over the event store", "sql", (SECRET,),
                  "SqlRequest", answers={200: ("columns, types, rows", "QueryResult"),
                                         **_BAD, **_STORE_DOWN}, scope="sql"),
        Operation("get", "/v1/models", "The learner's models and how well they predict",
                  "models", (SECRET,), answers={200: ("Models", "Models")}, scope="read"),
        Operation("get", "/healthz", "Stores and spool lag", "operations",
                  answers={200: ("Healthy", "Health"), 503: ("Degraded", "Health")}),
        Operation("get", "/metrics", "Prometheus metrics", "operations",
                  answers={200: ("Prometheus text", "text/plain")}),
        Operation("get", "/openapi.json", "This document", "operations",
                  answers={200: ("OpenAPI 3.1", "application/json")}),
        Operation("get", "/sdk/kairos.js", "The browser SDK (latest)", "sdk",
                  answers={**script, **cached}),
        Operation("get", "/sdk/{version}/kairos.js", "The browser SDK: v<major> or an exact "
                  "version", "sdk", parameters=[path("version")],
                  answers={**script, **cached,
                           404: ("No such version", "application/javascript")}),
    ]  # fmt: skip


def _accounts() -> list[Operation]:
    email = [path("email", {"type": "string", "minLength": 1, "maxLength": 254},
                  "the user's email")]  # fmt: skip
    session = [path("id", {"type": "string", "minLength": 1}, "the session's id (32 hex "
                    "digits, as GET /v1/sessions lists it)")]  # fmt: skip
    last_admin = {409: ("The user is the last admin and other users remain (last_admin): make "
                        "another user admin first", "Error")}  # fmt: skip
    return [
        Operation("get", "/v1/users", "Every dashboard user (no password, no hash) and their "
                  "live sessions", "access", (SECRET,), scope="admin",
                  answers={200: ("The users", "UserList")}),
        Operation("post", "/v1/users", "Add a dashboard user (email, role, password of at "
                  f"least {MIN_PASSWORD} characters)", "access", (SECRET,), "UserAsk",
                  scope="admin",
                  answers={201: ("Added", "UserShown"), **_BAD, **_LOGGED,
                           409: ("The email has an account already", "Error")}),
        Operation("put", "/v1/users/{email}", "Change a user's role (from their next page) or "
                  "password (their sessions end)", "access", (SECRET,), "UserChange",
                  parameters=email, scope="admin",
                  answers={200: ("Changed", "UserShown"), **_BAD, **_MISSING, **_LOGGED,
                           **last_admin}),
        Operation("delete", "/v1/users/{email}", "Remove a user: their sessions end",
                  "access", (SECRET,), parameters=email, scope="admin",
                  answers={200: ("Removed", "UserDeleted"), **_BAD, **_MISSING, **_LOGGED,
                           **last_admin}),
        Operation("get", "/v1/sessions", "Every live dashboard session, the newest first",
                  "access", (SECRET,), scope="admin",
                  parameters=[query("user", {"type": "string"}, "one user's (an email)")],
                  answers={200: ("The sessions", "SessionList")}),
        Operation("delete", "/v1/sessions/{id}", "Revoke a session: it ends at its next page",
                  "access", (SECRET,), parameters=session, scope="admin",
                  answers={200: ("Revoked", "Deleted"), **_BAD, **_MISSING, **_LOGGED}),
    ]  # fmt: skip


def _pages() -> list[Operation]:
    page = {200: ("The page", _HTML)}
    away = {303: ("Not signed in: to /dashboard/login", None)}
    denied = {403: ("Signed in, but the role lacks the scope (the page names the roles that "
                    "have it)", _HTML)}  # fmt: skip
    redis_down = {503: ("Redis is unavailable", _HTML)}
    users_back = {303: ("Done: to /dashboard/users, which says so; not signed in: to "
                        "/dashboard/login", None)}  # fmt: skip
    last_admin = {409: ("The user is the last admin and other users remain: the page says so",
                        _HTML)}  # fmt: skip
    dashboard = [
        Operation("get", "/", "Nothing of its own: to the dashboard", "dashboard",
                  answers={303: ("To /dashboard (which asks to sign in)", None)}),
        Operation("get", "/dashboard", "Overview: placements with a verdict, models",
                  "dashboard", (SESSION,), answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/placements/{key}", "A placement's results and charts",
                  "dashboard", (SESSION,), parameters=[path("key")],
                  answers={**page, **away, 404: ("No such placement", _HTML)}, scope="read"),
        Operation("get", "/dashboard/profiles", "Profile lookup (a viewer: contact fields "
                  "hidden, no lookup by email)", "dashboard", (SESSION,),
                  parameters=[query("id", {"type": "string"}, "a profile id or identity")],
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/live", "The newest events", "dashboard", (SESSION,),
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/models", "Model metrics", "dashboard", (SESSION,),
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/policies", "Choosing a policy: which for which situation, "
                  "and each policy's regret on the bench's scenarios", "dashboard", (SESSION,),
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/journeys", "Journeys as funnels", "dashboard", (SESSION,),
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/subscriptions", "Subscriptions: people per group and "
                  "state, unsubscribes, the suppression list", "dashboard", (SESSION,),
                  answers={**page, **away}, scope="read"),
        Operation("get", "/dashboard/templates", "Email templates, and one previewed for a "
                  "person", "dashboard", (SESSION,), scope="read",
                  parameters=[query("key", {"type": "string"}, "the template to preview"),
                              query("person", {"type": "string"},
                                    "a profile id or identity to render it for (needs "
                                    "profiles:read)")],
                  answers={**page, **away, **denied, 404: ("No such template", _HTML)}),
        Operation("get", "/dashboard/broadcasts", "Broadcasts with their progress, and one's "
                  "results", "dashboard", (SESSION,), scope="read",
                  parameters=[query("key", {"type": "string"}, "the broadcast to show")],
                  answers={**page, **away, 404: ("No such broadcast", _HTML)}),
        *(Operation("post", f"/dashboard/broadcasts/{{key}}/{action}", f"{action.capitalize()} "
                    "a broadcast from its page (form: csrf)", "dashboard", (SESSION,),
                    parameters=[path("key")], body="Form",
                    media=("application/x-www-form-urlencoded",),
                    answers={303: ("Back to the broadcast's page, or not signed in: to "
                                   "/dashboard/login", None),
                             400: ("The form's token is missing or stale", _HTML), **denied,
                             404: ("No such broadcast", _HTML),
                             409: ("Not allowed in the broadcast's status", _HTML)},
                    scope="messaging:send")
          for action in ("start", "pause", "resume", "cancel")),
        Operation("get", "/dashboard/audit", "The audit log, filtered (the admin role)",
                  "dashboard", (SESSION,),
                  parameters=[query(name, {"type": "string"}, about) for name, about in (
                      ("resource", "what was changed"), ("key", "the resource's key"),
                      ("actor", "who"), ("via", "api, dashboard, cli or config"),
                      ("since", "ISO 8601"), ("until", "ISO 8601"),
                      ("cursor", "the next page's"))],
                  answers={**page, **away, 400: ("A filter is invalid: the page says which",
                                                 _HTML)}, scope="admin"),
        Operation("get", "/dashboard/users", "Every dashboard user, with forms to add one, "
                  "change a role or password, and remove one (the admin role)", "dashboard",
                  (SESSION,), answers={**page, **away, **denied}, scope="admin"),
        Operation("post", "/dashboard/users", "Add a user (form: email, role, password, csrf)",
                  "dashboard", (SESSION,), body="Form",
                  media=("application/x-www-form-urlencoded",),
                  answers={**users_back, **denied, 400: ("A field is wrong, or the form "
                                                         "expired: the page says which", _HTML),
                           409: ("The email has an account already", _HTML)}, scope="admin"),
        Operation("post", "/dashboard/users/{email}", "Change a user's role and/or password "
                  "(form: role, password, csrf; an empty password keeps it)", "dashboard",
                  (SESSION,), parameters=[path("email")], body="Form",
                  media=("application/x-www-form-urlencoded",),
                  answers={**users_back, **denied, 400: ("A field is wrong, or the form "
                                                         "expired: the page says which", _HTML),
                           404: ("No such user", _HTML), **last_admin}, scope="admin"),
        Operation("post", "/dashboard/users/{email}/remove", "Remove a user: their sessions "
                  "end (form: csrf)", "dashboard", (SESSION,), parameters=[path("email")],
                  body="Form", media=("application/x-www-form-urlencoded",),
                  answers={**users_back, **denied, 400: ("The form expired", _HTML),
                           404: ("No such user", _HTML), **last_admin}, scope="admin"),
        Operation("get", "/dashboard/login", "The sign-in form", "dashboard",
                  answers={**page, **redis_down}),
        Operation("post", "/dashboard/login", "Sign in with an email and password (form: "
                  "email, password, csrf), or with the secret key (form: key, csrf) unless "
                  "[access] secret_key_sign_in = false", "dashboard", body="Form",
                  media=("application/x-www-form-urlencoded",),
                  answers={**page, 303: ("Signed in: to /dashboard", None),
                           400: ("The form expired", _HTML), **redis_down}),
        Operation("post", "/dashboard/logout", "Sign out (form: csrf)", "dashboard", (SESSION,),
                  body="Form", media=("application/x-www-form-urlencoded",),
                  answers={303: ("Signed out, or not signed in: to /dashboard/login", None),
                           400: ("The form expired", _HTML)}),
        Operation("get", "/dashboard/sessions", "Where you are signed in (an admin: every "
                  "session), with revoke buttons", "dashboard", (SESSION,),
                  answers={**page, **away}),
        Operation("post", "/dashboard/sessions/{id}/revoke", "Revoke a session: one's own, or "
                  "(an admin) anyone's (form: csrf)", "dashboard", (SESSION,),
                  parameters=[path("id")], body="Form",
                  media=("application/x-www-form-urlencoded",),
                  answers={303: ("To the sessions page; one's own session: signed out, to "
                                 "/dashboard/login; not signed in: to /dashboard/login", None),
                           400: ("The form's token is missing or stale", _HTML),
                           404: ("No such session of yours", _HTML)}),
    ]  # fmt: skip
    demo = [
        Operation("get", "/demo", "Demo shop: home", "demo", answers={**page}),
        Operation("get", "/demo/login", "Demo shop: the sign-in form", "demo",
                  answers={**page}),
        Operation("post", "/demo/login", "Demo shop: sign in (form: first_name, email); the "
                  "pages after it carry the shopper's userId and userHash", "demo",
                  body="DemoForm", media=("application/x-www-form-urlencoded",),
                  body_required=False,
                  answers={303: ("Signed in: to /demo", None),
                           400: ("A field is missing or wrong: the form again", _HTML),
                           503: ("The spool is full or Redis is down", _HTML)}),
        Operation("post", "/demo/logout", "Demo shop: sign out", "demo",
                  answers={303: ("Signed out: to /demo", None)}),
        Operation("get", "/demo/c/{name}", "Demo shop: a category", "demo",
                  parameters=[path("name")],
                  answers={**page, 404: ("No such category", _HTML)}),
        Operation("get", "/demo/products/{id}", "Demo shop: a product", "demo",
                  parameters=[path("id")],
                  answers={**page, 404: ("No such product", _HTML)}),
        Operation("get", "/demo/cart", "Demo shop: the cart", "demo", answers={**page}),
        Operation("get", "/demo/checkout", "Demo shop: checkout", "demo", answers={**page}),
        Operation("get", "/demo/img/{id}.svg", "Demo shop: a product picture", "demo",
                  parameters=[path("id")], answers={200: ("The picture", "image/svg+xml")}),
    ]  # fmt: skip
    return dashboard + demo


def _access() -> list[Operation]:
    name = [path("name", {"type": "string", "pattern": f"^{NAME.pattern}$"}, "the key's name")]
    return [
        Operation("post", "/v1/keys", "Make a named key with scopes (shown once: only its "
                  "digest is kept)", "access", (SECRET,), "KeyAsk",
                  answers={201: ("The key, shown this once", "KeyCreated"), **_BAD, **_LOGGED,
                           409: ("A key of that name exists", "Error")}, scope="admin"),
        Operation("get", "/v1/keys", "Every named key (never the key itself)", "access",
                  (SECRET,), answers={200: ("The keys", "KeyList")}, scope="admin"),
        Operation("delete", "/v1/keys/{name}", "Revoke a named key: at once here, within the "
                  "revocation delay on every other instance", "access", (SECRET,),
                  parameters=name,
                  answers={200: ("Revoked", "KeyRevoked"), **_BAD, **_MISSING, **_LOGGED},
                  scope="admin"),
    ]  # fmt: skip


def operations() -> list[Operation]:
    return [*_tracking(), *_deciding(), *_placements(), *_profiles(), *_segments(), *_catalog(),
            *_journeys(), *_messaging(), *_subscriptions(), *_wallets_and_chain(),
            *_recommendations(), *_access(), *_accounts(), *_audit(),
            *_operations_and_sdk(), *_pages()]  # fmt: skip
