"""The collector: Segment-compatible intake, the spool, and the ClickHouse sink."""

from collector.errors import InvalidInput, SpoolFull, Unauthorized
from collector.intake import Intake, read_request
from collector.schema import migrate
from collector.sink import Sink
from collector.spool import STATS, STREAM, Appended, Entry, Spool, SpoolReader, spool_state
from collector.store import connect, embedded_url

__all__ = [
    "STATS",
    "STREAM",
    "Appended",
    "Entry",
    "Intake",
    "InvalidInput",
    "Sink",
    "Spool",
    "SpoolFull",
    "SpoolReader",
    "Unauthorized",
    "connect",
    "embedded_url",
    "migrate",
    "read_request",
    "spool_state",
]
