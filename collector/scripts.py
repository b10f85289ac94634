"""The one registry of the engine's Lua scripts.

Each script lives in a ``.lua`` file beside the module that owns its keys and is loaded once per
process with ``lua(__file__, "apply.lua")`` (several files are joined in order, so scripts can
share helper functions). Scripts go to Redis by hash (EVALSHA) and are loaded when Redis does not
know them — after a restart, a failover or ``SCRIPT FLUSH``:

- a single call (``script(client, keys, args)``) loads the script on NOSCRIPT and runs it again;
- a redis-py pipeline (``script.queue(pipe, keys, args)``) and the streaming
  ``collector.coalesce.Pipeline`` send ``SCRIPT LOAD`` ahead of the script's first call in each
  round trip, so a call in a pipeline never meets NOSCRIPT and replies stay in order; a Redis
  Cluster pipeline cannot carry a keyless ``SCRIPT LOAD`` (which node would it go to?), so there
  the call is an ``EVAL`` of the source, which the node caches;
- the asyncio ``collector.coalesce.Coalescer`` loads and retries the one call that met NOSCRIPT.

Scripts keep every key they touch in one hash slot (``{…}`` tags), as Redis Cluster requires.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

__all__ = ["Script", "lua"]


class Script:
    """A Lua script and its SHA1."""

    def __init__(self, source: str, name: str = "script"):
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:10]})"

    def __call__(self, client: redis.Redis, keys: list[Any], args: list[Any]) -> Any:
        """Run it now (blocking client), loading it first if Redis does not know it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        """Queue it on a redis-py pipeline, preceded by its ``SCRIPT LOAD`` (once per pipeline:
        the load's reply is among the pipeline's replies, before the script's own)."""
        if isinstance(pipe, ClusterPipeline):
            pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)
            return
        loaded: set[str] = pipe.__dict__.setdefault("_kairos_loaded", set())
        if self.sha not in loaded:
            pipe.execute_command("SCRIPT", "LOAD", self.source)
            loaded.add(self.sha)
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


@cache
def _load(path: Path, *more: Path) -> Script:
    return Script("".join(p.read_text() for p in (path, *more)), name=" + ".join(
        p.name for p in (path, *more)))  # fmt: skip


def lua(module_file: str, *names: str) -> Script:
    """The script made of the ``.lua`` files ``names``, beside ``module_file``, joined in order
    (the same files give the same ``Script``: the registry)."""
    folder = Path(module_file).resolve().parent
    paths = [folder / name for name in names]
    return _load(*paths)
