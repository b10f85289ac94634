"""The collector: Segment-compatible intake, the spool, and the ClickHouse sink."""

from collector.errors import InvalidInput, SpoolFull, Unauthorized
from collector.intake import Intake, read_request
from collector.partitions import Layout, layout_of
from collector.reader import Entry, SpoolReader, spool_state
from collector.schema import migrate
from collector.sink import Sink
from collector.spool import STATS, Appended, Spool, spool_stats
from collector.store import connect, embedded_url

__all__ = [
    "STATS",
    "Appended",
    "Entry",
    "Intake",
    "InvalidInput",
    "Layout",
    "Sink",
    "Spool",
    "SpoolFull",
    "SpoolReader",
    "Unauthorized",
    "connect",
    "embedded_url",
    "layout_of",
    "migrate",
    "read_request",
    "spool_state",
    "spool_stats",
]
