"""Engine settings: command-line options over environment variables over defaults (keys:
``edge.runtime.keys``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collector.consent import ConsentPolicy
from edge.access.settings import AccessSettings
from edge.api.limits import Limits
from journeys.mailer import SendPolicy
from journeys.smtp import EmailSettings

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """What the HTTP app needs; the CLI builds it, tests build it directly."""

    redis_url: str
    store_url: str  # where reads go: a ClickHouse URL, or unix://… of the store process
    write_key: str = field(repr=False)  # kept out of reprs: tracebacks, debuggers, logs
    secret_key: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    spool_limit: int = 100_000  # stream entries (one per accepted request); 0 = no limit
    spool_replicas: int = 0  # replicas that must have an append before its 200 (WAIT)
    spool_partitions: int | None = None  # a new spool's partitions (None: as created, or 1)
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    cors_origins: tuple[str, ...] = ("*",)  # origins whose pages may call the browser API
    limits: Limits = field(default_factory=Limits)  # rate and size limits (edge.api.limits)
    decide_timeout: float = 0.05  # seconds /v1/decide waits on Redis before answering defaults
    seed: int | None = None  # the decide path's random choices (tests fix it)
    # What signs a browser's userId (decisions.identity); empty: no userHash verifies.
    identity_secret: str = field(default="", repr=False)
    identity_verification: Literal["required", "off"] = "required"  # [identity] verification
    email: EmailSettings = field(default_factory=EmailSettings)  # [email]: sender, public URL
    messaging: SendPolicy = field(default_factory=SendPolicy)  # [messaging]: send-time rules
    access: AccessSettings = field(default_factory=AccessSettings)  # [access]: the sign-in
