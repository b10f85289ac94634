"""Messaging benchmark: email sent per second through Kairos against bare SMTP, in one run.

On a private Redis, with a real SMTP server (aiosmtpd) on loopback and ``--people`` shoppers
(profiles built by the profile updater from identify calls, each with an address):

1. smtp       the baseline: a message composed and handed to the server per recipient, as
              journeys.smtp does it (a connection per message), nothing else;
2. mailer     journeys.mailer for each person: the send-time checks (subscription, suppression,
              frequency cap), the template rendered for them, every link signed and tracked,
              the message composed and handed over, the cap counted;
3. broadcast  a broadcast to all of them through the journeys worker as it runs: the segment
              read in pages, the throttle (set far above what is reached), each message fed to
              its partition's outbox, claimed, sent once and recorded — from start to the
              last message received.

A message the server did not accept, or any outcome but sent, is an error: the run fails.
Prints a table and writes bench/reports/messaging.md.

    python bench/messaging.py --people 2000
    python bench/messaging.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402

from bench.harness import Verdict, add_options, machine, parse, publish  # noqa: E402
from bench.profiles import fill, run_updater  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.runtime.config import Config  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from edge.runtime.stores import redis_client  # noqa: E402
from edge.runtime.workers import Needs, start  # noqa: E402
from journeys.broadcasts import BROADCAST, control, put_broadcast, state_of  # noqa: E402
from journeys.emails import TEMPLATE, put_template  # noqa: E402
from journeys.mailer import Mailer, SendPolicy  # noqa: E402
from journeys.smtp import EmailSettings, compose, deliver  # noqa: E402
from profiles import ProfileStore  # noqa: E402
from profiles.membership import DEFS as SEGMENTS  # noqa: E402
from profiles.membership import member_key  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "messaging.md"
QUICK = {"people": 60}
TEMPLATE_BODY = (
    b'{"subject": "{{ traits.first_name }}, spring is here",'
    b' "html": "<p>Hello {{ traits.first_name }}</p>'
    b'<p><a href=\\"https://shop.example/spring\\">Shop the sale</a></p>'
    b'<p><a href=\\"https://shop.example/new\\">New in</a></p>'
    b'<p><a href=\\"{{ unsubscribe_url }}\\">Unsubscribe</a></p>"}'
)


class _Inbox:
    def __init__(self) -> None:
        self.count = 0
        self.refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        return "250 Message accepted"


def _smtp() -> tuple[Controller, _Inbox, int]:
    inbox = _Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox, port


def shoppers(url: str, people: int) -> list[str]:
    messages: list[dict[str, object]] = [
        {"type": "identify", "anonymousId": f"s{i}", "messageId": f"m-{i}",
         "traits": {"email": f"s{i}@example.org", "first_name": f"S{i}"}}
        for i in range(people)]  # fmt: skip
    fill(url, messages)
    client = redis_client(url)
    run_updater(client, people)
    found = ProfileStore(client).lookup([f"anonymous_id:s{i}" for i in range(people)])
    return sorted(found.values())


def baseline(settings: EmailSettings, people: int, verdict: Verdict) -> float:
    sender = settings.sender()
    assert sender is not None
    loop = asyncio.new_event_loop()
    failed = 0
    started = time.perf_counter()
    progress = Progress(people, "   smtp     ")
    for i in range(people):
        to = f"s{i}@example.org"
        message = compose(sender, to, f"S{i}, spring is here", f"<p>Hello S{i}</p>",
                          f"Hello S{i}", key=f"bench-{i}",
                          unsubscribe_url="https://kairos.example/u")  # fmt: skip
        answer = loop.run_until_complete(deliver(sender, to, message))
        failed += answer.status != "sent"
        progress.advance()
    loop.close()
    verdict.answers("smtp", people, failed, "messages not accepted")
    return people / (time.perf_counter() - started)


def through_mailer(url: str, settings: EmailSettings, pids: list[str], verdict: Verdict) -> float:
    client = redis_client(url)
    mailer = Mailer(client, settings, settings.sender(), SendPolicy(frequency_cap=100), None,
                    lambda: int(time.time() * 1000))  # fmt: skip
    snapshots = ProfileStore(client).read_many(pids)
    failed = 0
    started = time.perf_counter()
    progress = Progress(len(pids), "   mailer   ")
    for n, snapshot in enumerate(snapshots):
        said: list[Any] = []
        sent = mailer.send(snapshot, "spring", f"bench|{snapshot.id}|{n}|mail", None,
                           int(time.time() * 1000), said)  # fmt: skip
        failed += sent.status != "sent"
        progress.advance()
    mailer.close()
    verdict.answers("mailer", len(pids), failed, "messages not sent")
    return len(pids) / (time.perf_counter() - started)


def broadcast(url: str, settings: EmailSettings, pids: list[str], inbox: _Inbox,
              verdict: Verdict) -> float:  # fmt: skip
    client = redis_client(url)
    client.hset(SEGMENTS, "everyone", b'{"rule": {"field": "traits.email", "op": "exists"}}')
    client.sadd(member_key("everyone"), *pids)
    put_broadcast(client, "spring", BROADCAST.decode(
        b'{"segment": "everyone", "template": "spring", "throttle": 10000}'))  # fmt: skip
    stop = threading.Event()
    needs = Needs(redis=client, consumer="bench", config=Config(email=settings))
    thread = start("journeys", needs, stop, interval=0.01)
    before = inbox.count
    time.sleep(1.0)  # the worker has its leases and has polled every partition once
    started = time.perf_counter()
    control(client, "spring", "start", int(time.time() * 1000))
    progress = Progress(len(pids), "   broadcast")
    deadline = time.monotonic() + 60 + len(pids) / 5
    while inbox.count - before < len(pids) and time.monotonic() < deadline:
        progress.advance(inbox.count - before - progress.done)
        time.sleep(0.05)
    progress.advance(inbox.count - before - progress.done)
    elapsed = time.perf_counter() - started
    time.sleep(0.5)  # anything sent twice would arrive now
    stop.set()
    thread.join(timeout=30)
    received = inbox.count - before
    status = state_of(client, "spring")["status"]
    verdict.answers(
        "broadcast",
        len(pids),
        abs(len(pids) - received) + (status != "completed"),
        f"messages missing or repeated ({received:,} received, status {status})",
    )
    return len(pids) / elapsed


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[0],
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--people", type=int, default=2_000, help="recipients (default %(default)s)"
    )
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-messaging-"))
    server = EmbeddedRedis(work / "data", "everysec")
    controller, inbox, port = _smtp()
    verdict = Verdict(error="message not sent")
    try:
        url = server.start()
        client = redis_client(url)
        put_template(client, "spring", TEMPLATE.decode(TEMPLATE_BODY))
        settings = EmailSettings(url=f"smtp://127.0.0.1:{port}", from_address="shop@example.com",
                                 public_url="https://kairos.example.com")  # fmt: skip
        print(f"1. {args.people:,} shoppers through the profile updater", flush=True)
        pids = shoppers(url, args.people)
        print("2. phases", flush=True)
        rates = {"smtp": baseline(settings, args.people, verdict),
                 "mailer": through_mailer(url, settings, pids, verdict),
                 "broadcast": broadcast(url, settings, pids, inbox, verdict)}  # fmt: skip
    finally:
        controller.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = [f"| {name} | {rate:,.0f} | {verdict.ratio(rate, rates['smtp'], name, 'smtp')} | "
            f"{verdict.errors(name)} |" for name, rate in rates.items()]  # fmt: skip
    publish(args.report, [
        "# Messaging: email per second through Kairos against bare SMTP", "",
        f"{args.people:,} recipients, a real SMTP server (aiosmtpd) on loopback, one "
        "connection per message. " + machine() + ".", "",
        "| phase | messages/s | × smtp | errors |", "|---|---|---|---|", *rows, "",
        *verdict.lines(), "",
        "- smtp: compose and hand over per recipient (the floor any sender pays).",
        "- mailer: checks, render, tracked links, compose, hand over, count towards the cap.",
        "- broadcast: the worker end to end, from start to the last message received.",
    ])  # fmt: skip
    return verdict.exit_code()


if __name__ == "__main__":
    sys.exit(main())
