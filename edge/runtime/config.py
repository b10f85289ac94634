"""The engine's config file (TOML): lead scoring, segments, consent, placements, models.

``kairos up --config kairos.toml`` (or ``KAIROS_CONFIG``); without one, ``kairos.toml`` in the
data dir is read if it exists. Every section is optional. Example::

    [lead_score]
    half_life_days = 30
    rules = [
      { event = "Page Viewed", properties = { path = "/pricing*" }, points = 10 },
      { event = "Webinar Signed Up", points = 25 },
    ]

    [consent]
    mode = "anonymize"          # or "drop": what happens to events that deny analytics

    [identity]                  # decisions.identity
    verification = "required"   # or "off": take a browser's userId without its userHash

    [segments.repeat_buyers]
    name = "Repeat buyers"
    rule = { field = "computed.orders", op = "gte", value = 2 }

    [placements.home_hero]
    default = "classic"
    policy = { kind = "thompson" }
    reward = { kind = "click" }
    variants = [
      { key = "classic", content = { image = "/img/hero-classic.jpg" } },
      { key = "sale", template = "<h1>Hello {{ first_name or 'there' }}, 20% off today</h1>" },
    ]

    [journeys.abandoned_cart]   # the journeys API's JSON, as TOML (journeys.spec)
    trigger = { kind = "event", event = "Product Added" }
    exit = [{ event = "Order Completed" }]
    start = "wait"
    steps.wait = { type = "wait", duration = "1h", next = "remind" }
    steps.remind = { type = "webhook", url = "https://mail.example/cart", next = "end" }
    steps.end = { type = "end" }

    [email]                     # sending email (journeys.smtp.EmailSettings)
    url = "smtp://user:password@smtp.example.com:587"   # KAIROS_SMTP_URL wins
    from_address = "Shop <shop@example.com>"
    public_url = "https://kairos.example.com"           # where links in messages point

    [messaging]                 # send-time rules for every channel (journeys.mailer.SendPolicy)
    frequency_cap = 3           # messages per person per cap_days (0: no cap)
    quiet_hours = "21:00-08:00" # in the person's timezone trait: messages wait until it ends

    [channels]                  # the journeys' discord and telegram steps (journeys.community)
    discord_url = "https://discord.com/api"     # the default; a test or a proxy may differ
    telegram_url = "https://api.telegram.org"   # the default
    telegram_token = "123456789:AAE..."         # the bot's; KAIROS_TELEGRAM_TOKEN wins

    [access]                    # the dashboard's sign-in (edge.access.settings)
    secret_key_sign_in = false  # users' email and password only (default true: a new install)

    [limits]                    # rate and size limits (edge.api.limits); 0 turns one off
    per_ip = 200.0              # requests/s per client IP, sustained
    per_key = 5000.0            # requests/s per key (write or secret)
    burst = 2.0                 # seconds of that rate a client may spend at once
    max_body_kb = 2048          # a larger request body answers 413
    trusted_proxies = ["127.0.0.1", "::1"]  # whose X-Forwarded-For names the client

    [models]                    # the learner's predictive models (profiles.learner)
    estimator = "logistic"      # or "forest", "tree"; per target: [models.estimators]
    churn_days = 30
    ltv_horizon_days = 90

Placements and journeys from the file are installed at start (by the rewards and the journeys
worker) and may be changed through the admin API afterwards; the file wins again at the next
start if it differs.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from collector.consent import ConsentPolicy
from collector.errors import expected
from collector.schema import StoreSettings
from decisions.identity import IdentityPolicy
from decisions.placements import Placement
from edge.access.settings import AccessSettings
from edge.api.limits import Limits
from journeys.community import ChannelSettings
from journeys.mailer import SendPolicy
from journeys.smtp import EmailSettings
from journeys.spec import Journey
from profiles.learner import ModelSettings
from profiles.scoring import LeadScoring
from profiles.segments import Segment
from profiles.strategies import Settings as RecommendationSettings

__all__ = ["Config", "ConfigError", "load_config"]


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lead_score: LeadScoring = msgspec.field(default_factory=LeadScoring)
    consent: ConsentPolicy = msgspec.field(default_factory=ConsentPolicy)
    segments: dict[str, Segment] = msgspec.field(default_factory=dict)
    placements: dict[str, Placement] = msgspec.field(default_factory=dict)
    journeys: dict[str, Journey] = msgspec.field(default_factory=dict)
    models: ModelSettings = msgspec.field(default_factory=ModelSettings)
    recommendations: RecommendationSettings = msgspec.field(default_factory=RecommendationSettings)
    limits: Limits = msgspec.field(default_factory=Limits)
    identity: IdentityPolicy = msgspec.field(default_factory=IdentityPolicy)
    clickhouse: StoreSettings = msgspec.field(default_factory=StoreSettings)
    email: EmailSettings = msgspec.field(default_factory=EmailSettings)
    messaging: SendPolicy = msgspec.field(default_factory=SendPolicy)
    channels: ChannelSettings = msgspec.field(default_factory=ChannelSettings)
    access: AccessSettings = msgspec.field(default_factory=AccessSettings)


class ConfigError(Exception):
    pass


def load_config(path: Path | None) -> Config:
    """The config at ``path`` (None: the defaults); ConfigError names the file and the field."""
    if path is None:
        return Config()
    try:
        return msgspec.toml.decode(path.read_bytes(), type=Config)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}{expected(str(exc), Config)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
