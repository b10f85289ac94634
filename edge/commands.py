"""``kairos simulate`` and ``kairos ltv``: long-running tools with a progress bar."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

import httpx

from edge.cli import key
from edge.progress import Progress

__all__ = ["ltv", "simulate"]


def simulate(args: argparse.Namespace) -> int:
    from profiles.shoppers import ShopperStream, send

    write_key = key(args, "write_key")
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
    except httpx.HTTPError as exc:
        print(f"\nkairos simulate: {args.url}: {exc}", file=sys.stderr)
        return 1
    orders = sum(s.orders for s in stream.shoppers)
    print(f"sent {sent:,} events: {orders:,} orders from "
          f"{sum(1 for s in stream.shoppers if s.orders):,} buyers", file=sys.stderr)  # fmt: skip
    return 0


def ltv(args: argparse.Namespace) -> int:
    import redis

    from collector import embedded_url
    from collector.store import QueryFailed, StoreUnavailable, open_store
    from edge.config import ConfigError
    from edge.logs import setup_logging
    from edge.redis_server import EmbeddedRedis
    from edge.up import _config
    from profiles.valuation import refit

    setup_logging(args.log_format, args.log_level)
    data_dir = args.data_dir.resolve()
    try:
        _, config = _config(args, data_dir)
    except ConfigError as exc:
        print(f"kairos ltv: {exc}", file=sys.stderr)
        return 2
    clickhouse_url = args.clickhouse_url or embedded_url(data_dir)
    store_url = (f"unix://{data_dir / 'run' / 'store.sock'}"
                 if clickhouse_url.startswith("chdb://") else clickhouse_url)  # fmt: skip
    client = redis.Redis.from_url(args.redis_url or EmbeddedRedis(data_dir).url)
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
