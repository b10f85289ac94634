"""The commands beyond running the engine: ``kairos sql``, ``kairos report`` and ``kairos recs
refresh`` (through a running engine's API), ``kairos simulate``, ``kairos ltv`` and ``kairos
evaluate`` (long work, with a progress bar)."""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from edge.cli.progress import Progress
from edge.runtime.keys import KEY_ENV, find_key

__all__ = [
    "evaluate",
    "key_action",
    "keys",
    "ltv",
    "recs_refresh",
    "report",
    "simulate",
    "sql",
    "user_agent",
]


class Failed(Exception):
    pass


def user_agent() -> str:
    """What the CLI's API calls say they are: the audit log records their changes as ``cli``
    (``edge.access.audit.CLI_AGENT``)."""
    try:
        version = importlib.metadata.version("kairos")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"kairos-cli/{version}"


def _api(args: argparse.Namespace, path: str, body: Any = None, method: str | None = None) -> Any:
    """Call the engine's API with the secret key; Failed says why not, in one line."""
    secret = find_key("secret_key", args.secret_key, args.data_dir)
    if not secret:
        raise Failed(f"no secret key: set KAIROS_SECRET_KEY, pass --secret-key, or run from "
                     f"where {args.data_dir / 'keys.json'} exists")  # fmt: skip
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {secret}",
            "User-Agent": user_agent(),
        },
        method=method,
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            raise Failed(f"{problem.get('code')}: {problem.get('message')}") from None
        except ValueError:
            raise Failed(str(exc)) from None
    except urllib.error.URLError as exc:
        raise Failed(f"cannot reach the engine at {args.url}: {exc.reason}") from None


def sql(args: argparse.Namespace) -> int:
    try:
        result = _api(args, "/v1/sql", {"query": args.query})
    except Failed as exc:
        print(f"kairos sql: {exc}", file=sys.stderr)
        return 1
    _print_result(result, args.format)
    return 0


def report(args: argparse.Namespace) -> int:
    query = {k: getattr(args, k) for k in ("metric", "since", "until", "segment")
             if getattr(args, k) is not None}  # fmt: skip
    for bound in ("since", "until"):
        if bound in query:
            query[bound] = _moment(query[bound])
    path = f"/v1/placements/{urllib.parse.quote(args.placement)}/results"
    try:
        found = _api(args, path + "?" + urllib.parse.urlencode(query))
    except Failed as exc:
        print(f"kairos report: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    print(f"{found['placement']} · policy {found['policy']} · metric {found['metric']} · "
          f"control {found['control']}")  # fmt: skip
    columns = ["variant", "units", "conversions", "rate", "lift", "95% interval", "p-value",
               "sequential p", "chance to beat", "expected loss"]  # fmt: skip
    rows = []
    for v in found["variants"]:
        control = v["variant"] == found["control"]
        rows.append([
            v["variant"] + (" (control)" if control else ""), v["units"], v["conversions"],
            f"{v['rate']:.2%}", "" if control else f"{v['lift']:+.1%}",
            "" if control else f"[{v['liftCI'][0]:+.1%}, {v['liftCI'][1]:+.1%}]",
            "" if control else f"{v['pValue']:.4f}",
            "" if control else f"{v['sequential']['pValue']:.4f}",
            "" if control or v["chanceToBeatControl"] is None
            else f"{v['chanceToBeatControl']:.1%}",
            "" if control or v["expectedLoss"] is None else f"{v['expectedLoss']:.4g}",
        ])  # fmt: skip
    _print_result({"columns": columns, "rows": rows}, "table")
    if found.get("srmPValue") is not None:
        verdict = "MISMATCH: check the assignment" if found["srm"] else "ok"
        print(f"sample ratio: p = {found['srmPValue']:.4g} ({verdict})")
    for note in found["method"]:
        print(f"  · {note}")
    return 0


def _moment(text: str) -> str:
    """An ISO date as the start of that day in UTC, else the time as given: ``--since`` and
    ``--until`` take either, the API only times (RFC 3339).

    Examples:
        >>> _moment("2026-11-01"), _moment("2026-11-01T08:00:00+01:00")
        ('2026-11-01T00:00:00Z', '2026-11-01T08:00:00+01:00')
    """
    return f"{text}T00:00:00Z" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text


def recs_refresh(args: argparse.Namespace) -> int:
    try:
        found = _api(args, "/v1/recommendations/refresh", {})
    except Failed as exc:
        print(f"kairos recs refresh: {exc}", file=sys.stderr)
        return 1
    print(f"asked: the recommendations worker recomputes the candidate lists at its next pass "
          f"({found['lists']} cached now)")  # fmt: skip
    return 0


def keys(args: argparse.Namespace) -> int:
    found = {name: find_key(name, None, args.data_dir) for name in KEY_ENV}
    if not (found["write_key"] and found["secret_key"]):
        print(f"kairos keys: no keys yet: start the engine once (`kairos up`), or set "
              f"{', '.join(KEY_ENV.values())}; looked in {args.data_dir / 'keys.json'}",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.env:
        print(f"KAIROS_URL={args.url}")
        for name, env in KEY_ENV.items():
            if found[name]:  # a data dir from before the identity secret: its next start
                print(f"{env}={found[name]}")
        return 0
    print(f"url         {args.url}")
    print(f"write key   {found['write_key']}   (public: browsers and SDKs)")
    print(f"secret key  {found['secret_key']}   (private: servers, the dashboard)")
    identity = found["identity_secret"] or "none yet (the next `kairos up` makes it)"
    print(f"identity    {identity}   (private: your server signs userHash with it)")
    return 0


def key_action(args: argparse.Namespace) -> int:
    """``kairos keys create|list|revoke``."""
    try:
        if args.action == "create":
            found = _api(args, "/v1/keys", _key_ask(args))
        elif args.action == "list":
            found = _api(args, "/v1/keys")
        else:
            found = _api(args, f"/v1/keys/{urllib.parse.quote(args.name)}", method="DELETE")
    except (Failed, ValueError) as exc:
        print(f"kairos keys {args.action}: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(found, indent=2))
    elif args.action == "create":
        print(found["key"])
        print(f"the key {found['name']!r} ({', '.join(found['scopes'])}): copy it now, it is "
              "not shown again", file=sys.stderr)  # fmt: skip
    elif args.action == "list":
        rows = [[k["name"], k["prefix"] + "…", " ".join(k["scopes"]),
                 " ".join(k.get("origins", []) + k.get("networks", [])) or "anywhere",
                 f"{k['rate']:g}/s" if k.get("rate") else "default",
                 _day(k["created"]), _day(k["last_used"]) if k["last_used"] else "never",
                 _day(k["expires"]) if k.get("expires") else "never"]
                for k in found["keys"]]  # fmt: skip
        columns = ["name", "key", "scopes", "from", "rate", "created", "last used", "expires"]
        _print_result({"columns": columns, "rows": rows}, "table")
    else:
        print(f"revoked {args.name!r}: it stops working on every instance within "
              f"{found['revocation_delay_seconds']:g} s")  # fmt: skip
    return 0


def _key_ask(args: argparse.Namespace) -> dict[str, Any]:
    ask: dict[str, Any] = {"name": args.name, "scopes": args.scope, "origins": args.origin,
                           "networks": args.network, "rate": args.rate}  # fmt: skip
    if args.expires:
        moment = datetime.fromisoformat(_moment(args.expires).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ask["expires"] = int(moment.timestamp())
    return ask


def _day(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def simulate(args: argparse.Namespace) -> int:
    """History as events, then (with the secret key, for the placements there are) live
    sessions through /v1/decide: decisions cannot be made in the past."""
    from profiles.shoppers import ShopperStream, send

    write_key = find_key("write_key", args.write_key, args.data_dir)
    if not write_key:
        print("kairos simulate: no write key: set KAIROS_WRITE_KEY or pass --write-key",
              file=sys.stderr)  # fmt: skip
        return 2
    start = datetime.now(UTC) - timedelta(days=args.days)
    stream = ShopperStream(args.shoppers, args.days, args.seed, start)
    print(f"simulating {args.shoppers:,} shoppers over {args.days:g} days …", file=sys.stderr)
    messages = list(stream.messages())
    bar = Progress(len(messages), "sending")
    try:
        sent = send(messages, args.url, write_key, progress=bar.advance)
        orders = sum(s.orders for s in stream.shoppers)
        buyers = sum(1 for s in stream.shoppers if s.orders)
        sent += _live(args, stream.shoppers, write_key)
    except httpx.HTTPError as exc:
        print(f"\nkairos simulate: {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"sent {sent:,} events: {orders:,} orders from {buyers:,} buyers", file=sys.stderr)
    return 0


def _live(args: argparse.Namespace, shoppers: list[Any], write_key: str) -> int:
    """``--live`` sessions of ``shoppers`` now, deciding every placement the engine has (they
    are listed with the secret key); the events they sent."""
    from profiles.live import LiveShop, slots_from_api

    if args.live <= 0:
        return 0
    secret = find_key("secret_key", args.secret_key, args.data_dir)
    if not secret:
        print("no secret key (KAIROS_SECRET_KEY, --secret-key, or keys.json in --data-dir) to "
              "list the placements with: events only, no decisions", file=sys.stderr)  # fmt: skip
        return 0
    try:
        slots = slots_from_api(args.url, secret)
    except httpx.HTTPStatusError as exc:
        answer = exc.response
        print(f"the placements could not be listed ({answer.status_code}: {answer.text[:200]}): "
              "events only, no decisions", file=sys.stderr)  # fmt: skip
        return 0
    if not slots:
        print("no placements yet (PUT /v1/placements/{key}): events only, no decisions",
              file=sys.stderr)  # fmt: skip
        return 0
    if any(slot.reward == "items" for slot in slots):  # recommendations from this history
        try:
            _api(args, "/v1/recommendations/refresh", {})
        except Failed as exc:  # an older engine: its lists catch up on their own
            print(f"recommendation lists not refreshed: {exc}", file=sys.stderr)
    print(f"live: {args.live:,} sessions deciding {', '.join(s.key for s in slots)} …",
          file=sys.stderr)  # fmt: skip
    signing = find_key("identity_secret", None, args.data_dir) or ""  # as the shop's server
    live = LiveShop(shoppers, slots, args.seed).run(args.url, write_key, args.live, signing)
    print(f"live: {live.decisions:,} decisions, {live.clicks:,} clicks, {live.orders:,} orders",
          file=sys.stderr)  # fmt: skip
    return live.events


def ltv(args: argparse.Namespace) -> int:
    import redis

    from collector.store import QueryFailed, StoreUnavailable, open_store
    from edge.runtime.config import ConfigError
    from edge.runtime.embedded_redis import EmbeddedRedis
    from edge.runtime.logs import setup_logging
    from edge.runtime.stores import clickhouse_url, reads_url, redis_client
    from edge.runtime.up import _config
    from profiles.valuation import refit

    setup_logging(args.log_format, args.log_level)
    data_dir = args.data_dir.resolve()
    try:
        _, config = _config(args, data_dir)
    except ConfigError as exc:
        print(f"kairos ltv: {exc}", file=sys.stderr)
        return 2
    store_url = reads_url(data_dir, clickhouse_url(data_dir, args.clickhouse_url))
    client = redis_client(args.redis_url or EmbeddedRedis(data_dir).url)
    horizon = args.horizon_days or config.models.ltv_horizon_days
    bars: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(Progress(total, "writing scores"))
        bars[0].advance(done - bars[0].done)

    try:
        fit = refit(open_store(store_url), client, horizon, progress=progress)
    except ValueError as exc:
        print(f"kairos ltv: {exc}", file=sys.stderr)
        return 1
    except (StoreUnavailable, QueryFailed, redis.RedisError) as exc:
        print(f"kairos ltv: is the engine running? {exc}", file=sys.stderr)
        return 1
    print(f"fitted on {fit['customers']:,} buyers ({fit['repeat_customers']:,} repeat) in "
          f"{fit['seconds']} s")  # fmt: skip
    print("BG/NBD " + " ".join(f"{k}={v:.3f}" for k, v in fit["beta_geo"].items()))
    print("Gamma-Gamma " + " ".join(f"{k}={v:.3f}" for k, v in fit["gamma_gamma"].items()))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``kairos evaluate --log FILE``: off-policy evaluation on a logged-bandit file, here."""
    import msgspec

    from collector.errors import with_path
    from decisions.logfile import LogFileError, read_log
    from decisions.offline import Prior, evaluate_log

    problem = None
    if args.draws < 1:
        problem = f"--draws must be at least 1, got {args.draws}"
    elif not 0.0 <= args.train_share < 1.0:
        problem = f"--train-share must lie in [0, 1), got {args.train_share}"
    if problem:
        print(f"kairos evaluate: {problem}", file=sys.stderr)
        return 2
    try:
        rounds = read_log(args.log.read_text(encoding="utf-8"))
        prior = None
        if args.prior is not None:
            prior = msgspec.json.decode(args.prior.read_bytes(), type=Prior)
    except OSError as exc:
        print(f"kairos evaluate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except LogFileError as exc:
        print(f"kairos evaluate: {args.log}: {exc}", file=sys.stderr)
        return 1
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"kairos evaluate: {args.prior}: {with_path(str(exc), of=Prior)}", file=sys.stderr)
        return 1
    bar = Progress(args.draws, "posterior rankings")
    try:
        found = evaluate_log(rounds, args.policy, prior, args.draws, args.seed, args.train_share,
                             progress=bar.advance)  # fmt: skip
    except ValueError as exc:
        print(f"kairos evaluate: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    rounds_of = found["rounds"]
    print(f"{args.log}: {rounds_of['evaluate']:,} rounds judged ({rounds_of['train']:,} learned "
          f"from), {found['arms']} arms × {found['positions']} positions, "
          f"{found['context']} context features; mean reward {found['mean_reward']}")  # fmt: skip
    print(f"candidate: {found['policy']}" + (" with the prior" if found["prior"] else "")
          + f", {found['draws']:,} posterior rankings, seed {found['seed']}")  # fmt: skip
    columns = ["estimator", "value", "95% interval", "relative", "effective rounds"]
    rows = [[name, e["value"], f"[{e['low']}, {e['high']}]", e["relative"],
             e["effective_decisions"]] for name, e in found["estimates"].items()]  # fmt: skip
    _print_result({"columns": columns, "rows": rows}, "table")
    print("  · relative: the estimate over the log's mean reward (1: as good as the logging "
          "policy)")  # fmt: skip
    return 0


def _print_result(result: dict[str, Any], fmt: str) -> None:
    columns, rows = result["columns"], result["rows"]
    if fmt == "json":
        print(json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str))
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(" " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print(line)
    for row in cells:
        print(
            " " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths))
        )
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
