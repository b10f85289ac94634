"""Profiles in Redis: the key layout, the scripts that change a profile, and reading one.

Every key of one profile shares the hash tag ``{p:<id>}``, so each script touches one slot and
the same code runs on Redis Cluster:

    {p:ID}            hash   scalars: first_seen, last_seen, sessions, session_last, page_views,
                             orders, revenue, lead_score, lead_score_at, user_id, applied;
                             h:<contract> (tokens held, from on-chain events);
                             bought (JSON: product id -> ms of the newest order with it,
                             the last ``BOUGHT_MAX`` products);
                             t:<trait> / tt:<trait> (value, event time), f:<first-touch trait>,
                             c:<event> (count); merged_into (a forwarding pointer after a merge)
    {p:ID}:viewed     list   last viewed product ids, newest first (bounded)
    {p:ID}:cart       hash   product id -> JSON item with quantity
    {p:ID}:daily      hash   "<event>|<day>" -> count (day = ms since epoch // 86400000)
    {p:ID}:ids        set    "<kind>:<value>" identities (user_id, anonymous_id, email, ...)
    {p:ID}:segments   set    segment keys the profile is in
    {p:ID}:merged     set    ids of profiles merged into this one (their events stay theirs)
    {id:<kind>:<value>} string  the profile id an identity resolves to (its own hash tag)

Applying a message is idempotent: the script records the message's spool position in
``applied`` and skips positions at or below it (one updater consumes the spool in order).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from collector.coalesce import Pipeline, Script
from profiles.computed import Update

__all__ = [
    "ProfileStore",
    "Snapshot",
    "entry_position",
    "identity_key",
    "position",
    "profile_keys",
    "SET_SCORES",
]

VIEWED_MAX = 20
BOUGHT_MAX = 50
SESSION_GAP_MS = 30 * 60 * 1000
DAILY_KEEP_DAYS = 120

# Lua: the ``max`` newest entries of a product id -> ms table (the ``bought`` field).
_NEWEST = """
local function newest(map, max)
  local ids = {}
  for id in pairs(map) do ids[#ids + 1] = id end
  if #ids <= max then return map end
  table.sort(ids, function(a, b) return map[a] > map[b] end)
  local kept = {}
  for k = 1, max do kept[ids[k]] = map[ids[k]] end
  return kept
end
"""

_APPLY = (
    _NEWEST
    + """
-- Apply a profile's messages of one batch, in spool order, skipping those already applied.
-- KEYS: profile, viewed, cart, daily, ids. ARGV: viewed max, session gap ms, half-life ms,
-- days of daily counts to keep, bought max, then per message: position, update JSON,
-- identities JSON, trait count, and that many (name, JSON value) pairs.
-- One read and (mostly) one write for the whole group: each command in a script costs.
local p, viewed, cart, daily, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local vmax, gap, hl, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local bmax = tonumber(ARGV[5])
local cur = redis.call('HMGET', p, 'merged_into', 'applied', 'first_seen', 'last_seen',
  'session_last', 'lead_score', 'lead_score_at', 'daily_from', 'f:landing_page', 'sessions',
  'page_views', 'user_id', 'bought')
if cur[1] then return -1 end
local applied, first_seen, last_seen = cur[2], tonumber(cur[3]), tonumber(cur[4])
local session_last, sessions = tonumber(cur[5] or '0'), tonumber(cur[10] or '0')
local score, score_at = tonumber(cur[6] or '0'), tonumber(cur[7])
local daily_from, has_first, page_views = tonumber(cur[8]), cur[9], tonumber(cur[11] or '0')
local user_id = cur[12]
local bought = nil  -- product id -> ms, decoded on the first order of the batch
local counts, days, traits, newids = {}, {}, {}, {}
local done = 0
local i = 6
while i <= #ARGV do
  local pos, u, nt = ARGV[i], cjson.decode(ARGV[i + 1]), tonumber(ARGV[i + 3])
  local first_trait = i + 4
  local identities = ARGV[i + 2]
  i = first_trait + 2 * nt
  if not applied or pos > applied then
    applied, done = pos, done + 1
    local ts = u.ts
    if not first_seen or ts < first_seen then first_seen = ts end
    if not last_seen or ts > last_seen then last_seen = ts end
    if u.first and not has_first then
      for k, v in pairs(u.first) do redis.call('HSETNX', p, 'f:' .. k, v) end
      has_first = true
    end
    if u.event then
      if session_last == 0 or ts - session_last > gap then sessions = sessions + 1 end
      if ts > session_last then session_last = ts end
      counts[u.event] = (counts[u.event] or 0) + 1
      local key = u.event .. '|' .. u.day
      days[key] = (days[key] or 0) + 1
      if not daily_from or u.day < daily_from then daily_from = u.day end
    end
    if u.page_view then page_views = page_views + 1 end
    if u.holding and u.holding[2] ~= 0 then
      redis.call('HINCRBY', p, 'h:' .. u.holding[1], u.holding[2])
    end
    if u.revenue then
      redis.call('HINCRBY', p, 'orders', 1)
      redis.call('HINCRBYFLOAT', p, 'revenue', u.revenue)
    end
    if u.cart then
      local op = u.cart[1]
      if op == 'clear' then
        redis.call('DEL', cart)
      elseif op == 'add' then
        local item = u.cart[4]
        local current = redis.call('HGET', cart, u.cart[2])
        item.quantity = u.cart[3] + (current and cjson.decode(current).quantity or 0)
        redis.call('HSET', cart, u.cart[2], cjson.encode(item))
      elseif op == 'remove' then
        local current = redis.call('HGET', cart, u.cart[2])
        if current then
          local item = cjson.decode(current)
          if u.cart[3] <= 0 or u.cart[3] >= item.quantity then
            redis.call('HDEL', cart, u.cart[2])
          else
            item.quantity = item.quantity - u.cart[3]
            redis.call('HSET', cart, u.cart[2], cjson.encode(item))
          end
        end
      end
    end
    if u.bought then
      bought = bought or (cur[13] and cjson.decode(cur[13]) or {})
      for _, id in ipairs(u.bought) do
        if not bought[id] or bought[id] < ts then bought[id] = ts end
      end
    end
    if u.viewed then
      redis.call('LREM', viewed, 0, u.viewed)
      redis.call('LPUSH', viewed, u.viewed)
    end
    if u.points and u.points ~= 0 then
      if not score_at or ts >= score_at then
        score = score * math.pow(0.5, (ts - (score_at or ts)) / hl) + u.points
        score_at = ts
      else
        score = score + u.points * math.pow(0.5, (score_at - ts) / hl)
      end
    end
    if u.uid and not user_id then user_id = u.uid end
    if identities ~= '[]' then
      for _, id in ipairs(cjson.decode(identities)) do newids[#newids + 1] = id end
    end
    for t = first_trait, first_trait + 2 * nt - 1, 2 do
      local seen = traits[ARGV[t]]
      if not seen or ts >= seen[2] then traits[ARGV[t]] = {ARGV[t + 1], ts} end
    end
  end
end
if done == 0 then return 0 end
local set = {'applied', applied, 'first_seen', first_seen, 'last_seen', last_seen,
  'session_last', session_last, 'sessions', sessions, 'page_views', page_views}
local function put(k, v) set[#set + 1] = k; set[#set + 1] = v end
if score_at then put('lead_score', score); put('lead_score_at', score_at) end
if user_id then put('user_id', user_id) end
if bought then put('bought', cjson.encode(newest(bought, bmax))) end
local events = {}
for event in pairs(counts) do events[#events + 1] = event end
if #events > 0 then
  local fields = {}
  for k, event in ipairs(events) do fields[k] = 'c:' .. event end
  local stored = redis.call('HMGET', p, unpack(fields))
  for k, event in ipairs(events) do put(fields[k], (tonumber(stored[k]) or 0) + counts[event]) end
  for key, n in pairs(days) do redis.call('HINCRBY', daily, key, n) end
  local today = 0
  for key in pairs(days) do today = math.max(today, tonumber(string.match(key, '|(%d+)$'))) end
  if today - daily_from > keep + 7 then  -- now and then, drop counts too old to matter
    for _, f in ipairs(redis.call('HKEYS', daily)) do
      if tonumber(string.match(f, '|(%d+)$')) < today - keep then redis.call('HDEL', daily, f) end
    end
    daily_from = today - keep
  end
  put('daily_from', daily_from)
end
local names = {}
for name in pairs(traits) do names[#names + 1] = name end
if #names > 0 then
  local fields = {}
  for k, name in ipairs(names) do fields[k] = 'tt:' .. name end
  local stored = redis.call('HMGET', p, unpack(fields))
  for k, name in ipairs(names) do
    local value = traits[name]
    if not stored[k] or value[2] >= tonumber(stored[k]) then
      put('t:' .. name, value[1]); put(fields[k], value[2])
    end
  end
end
if #newids > 0 then redis.call('SADD', ids, unpack(newids)) end
redis.call('LTRIM', viewed, 0, vmax - 1)
redis.call('HSET', p, unpack(set))
return done
"""
)

_MERGE = (
    _NEWEST
    + """
local p, viewed, cart, daily, ids, merged = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local src = ARGV[1]
if redis.call('SISMEMBER', merged, src) == 1 then return 0 end
local s = cjson.decode(ARGV[2])
local t = {}
local flat = redis.call('HGETALL', p)
for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
local function num(v) return tonumber(v or '0') or 0 end
local src_first = num(s.first_seen)
local tgt_first = num(t.first_seen)
local earlier = src_first > 0 and (tgt_first == 0 or src_first < tgt_first)
for k, v in pairs(s) do
  local head = string.sub(k, 1, 2)
  if head == 'c:' or head == 'h:' or k == 'page_views' or k == 'sessions' or k == 'orders' then
    redis.call('HINCRBY', p, k, v)
  elseif k == 'revenue' then
    redis.call('HINCRBYFLOAT', p, k, v)
  elseif head == 't:' then
    local name = string.sub(k, 3)
    local when = num(s['tt:' .. name])
    if t['tt:' .. name] == nil or when > num(t['tt:' .. name]) then
      redis.call('HSET', p, k, v, 'tt:' .. name, when)
    end
  elseif head == 'f:' then
    if earlier then redis.call('HSET', p, k, v) else redis.call('HSETNX', p, k, v) end
  elseif k == 'bought' then
    local both = t.bought and cjson.decode(t.bought) or {}
    for id, ms in pairs(cjson.decode(v)) do
      if not both[id] or both[id] < ms then both[id] = ms end
    end
    redis.call('HSET', p, k, cjson.encode(newest(both, tonumber(ARGV[10]))))
  end
end
if src_first > 0 then
  if earlier then redis.call('HSET', p, 'first_seen', src_first) end
  for _, k in ipairs({'last_seen', 'session_last', 'daily_from'}) do
    local better = (k == 'daily_from') and math.min or math.max
    if s[k] then redis.call('HSET', p, k, t[k] and better(num(t[k]), num(s[k])) or s[k]) end
  end
end
if s.lead_score then
  local hl = tonumber(ARGV[8])
  local sa, ta = num(s.lead_score_at), num(t.lead_score_at)
  local at = math.max(sa, ta)
  local score = num(s.lead_score) * math.pow(0.5, (at - sa) / hl)
    + num(t.lead_score) * math.pow(0.5, (at - ta) / hl)
  redis.call('HSET', p, 'lead_score', score, 'lead_score_at', at)
end
if s.applied and (t.applied == nil or s.applied > t.applied) then
  redis.call('HSET', p, 'applied', s.applied)
end
if s.user_id then redis.call('HSETNX', p, 'user_id', s.user_id) end
local have = {}
for _, id in ipairs(redis.call('LRANGE', viewed, 0, -1)) do have[id] = true end
for _, id in ipairs(cjson.decode(ARGV[3])) do
  if not have[id] then redis.call('RPUSH', viewed, id) end
end
redis.call('LTRIM', viewed, 0, tonumber(ARGV[7]) - 1)
for id, raw in pairs(cjson.decode(ARGV[4])) do
  local item = cjson.decode(raw)
  local current = redis.call('HGET', cart, id)
  if current then item.quantity = item.quantity + cjson.decode(current).quantity end
  redis.call('HSET', cart, id, cjson.encode(item))
end
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HINCRBY', daily, k, v) end
local src_ids = cjson.decode(ARGV[6])
if #src_ids > 0 then redis.call('SADD', ids, unpack(src_ids)) end
local src_merged = cjson.decode(ARGV[9])
redis.call('SADD', merged, src, unpack(src_merged))
return 1
"""
)


_APPLY_SCRIPT = Script(_APPLY)
_encode = msgspec.json.Encoder().encode


# Write ``scores.*`` (HSET of ARGV pairs) only if the profile exists: a score computed from old
# data must not bring back a profile erased or merged meanwhile.
SET_SCORES = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
"""


def profile_keys(pid: str) -> list[str]:
    """The keys of profile ``pid``: hash, viewed, cart, daily, ids, segments, merged, and the
    learner's record of it (``profiles.learner``)."""
    tag = f"{{p:{pid}}}"
    return [
        tag,
        f"{tag}:viewed",
        f"{tag}:cart",
        f"{tag}:daily",
        f"{tag}:ids",
        f"{tag}:segments",
        f"{tag}:merged",
        f"{tag}:learn",
    ]


def identity_key(kind: str, value: str) -> str:
    return f"{{id:{kind}:{value}}}"


def position(entry_id: str, index: int) -> str:
    """A message's place in the spool as a string that sorts like the spool does."""
    return f"{entry_position(entry_id)}{index:06d}"


def entry_position(entry_id: str) -> str:
    """The part of ``position`` an entry's messages share."""
    ms, _, seq = entry_id.partition("-")
    return f"{int(ms):014d}-{int(seq or 0):08d}-"


def new_profile_id(at: str) -> str:
    """Deterministic from the spool position that created it: a replay creates the same one."""
    return "p_" + hashlib.blake2b(at.encode(), digest_size=8).hexdigest()


@dataclass
class Snapshot:
    """One profile as read from Redis."""

    id: str
    fields: dict[str, str]
    viewed: list[str]
    cart: dict[str, Any]
    daily: dict[str, int]
    identities: list[str]
    segments: list[str]
    merged_from: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return "first_seen" in self.fields or bool(self.identities)

    def traits(self) -> dict[str, Any]:
        return {k[2:]: msgspec.json.decode(v) for k, v in self.fields.items() if k.startswith("t:")}

    def first_touch(self) -> dict[str, str]:
        return {k[2:]: v for k, v in self.fields.items() if k.startswith("f:")}

    def counts(self) -> dict[str, int]:
        return {k[2:]: int(v) for k, v in self.fields.items() if k.startswith("c:")}

    def number(self, name: str) -> float:
        return float(self.fields.get(name, 0) or 0)

    def count_since(self, event: str, since_day: int) -> int:
        total = 0
        for key, count in self.daily.items():
            name, _, day = key.rpartition("|")
            if name == event and int(day) >= since_day:
                total += count
        return total


class ProfileStore:
    """Reads and changes profiles (blocking client: the updater and the API's threads)."""

    def __init__(self, client: redis.Redis, half_life_ms: float = 30 * 86_400_000):
        self.client = client
        self.half_life_ms = half_life_ms
        self._merge = client.register_script(_MERGE)
        self.load_scripts()

    def load_scripts(self) -> None:
        """(Re)load the scripts ``apply`` sends by hash: at start, and after Redis restarts."""
        _APPLY_SCRIPT.load(self.client)

    def apply(self, pipe: Pipeline, pid: str, items: list[tuple[str, Update, list[str]]]) -> None:
        """Queue one apply script on ``pipe`` for a profile's messages, in spool order: each
        item is (spool position, update, identities to add)."""
        args: list[Any] = [VIEWED_MAX, SESSION_GAP_MS, self.half_life_ms, DAILY_KEEP_DAYS,
                           BOUGHT_MAX]  # fmt: skip
        for at, update, identities in items:
            traits = update.traits or {}
            if traits:
                update = msgspec.structs.replace(update, traits=None)
            args += [at, _encode(update), _encode(identities), len(traits)]
            for name, raw in traits.items():
                args += [name, bytes(raw)]
        pipe.script(_APPLY_SCRIPT, profile_keys(pid)[:5], args)

    def merge(self, source: Snapshot, target: str) -> bool:
        """Fold ``source`` into profile ``target`` (once: a repeat is a no-op)."""
        keys = profile_keys(target)
        args = [
            source.id,
            msgspec.json.encode(source.fields),
            msgspec.json.encode(source.viewed),
            msgspec.json.encode(
                {k: msgspec.json.encode(v).decode() for k, v in source.cart.items()}
            ),
            msgspec.json.encode(source.daily),
            msgspec.json.encode(source.identities),
            VIEWED_MAX,
            self.half_life_ms,
            msgspec.json.encode(source.merged_from),
            BOUGHT_MAX,
        ]
        return bool(self._merge(keys=[*keys[:5], keys[6]], args=args))

    def forward(self, source: str, target: str) -> None:
        """Leave only a pointer to ``target`` where ``source`` was."""
        keys = profile_keys(source)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.hset(keys[0], "merged_into", target)
        pipe.execute()

    def read(self, pid: str) -> Snapshot:
        return self.read_many([pid])[0]

    def read_many(self, pids: list[str]) -> list[Snapshot]:
        pipe = self.client.pipeline(transaction=False)
        for pid in pids:
            profile, viewed, cart, daily, ids, segments, merged, _ = profile_keys(pid)
            pipe.hgetall(profile)
            pipe.lrange(viewed, 0, -1)
            pipe.hgetall(cart)
            pipe.hgetall(daily)
            pipe.smembers(ids)
            pipe.smembers(segments)
            pipe.smembers(merged)
        replies = pipe.execute()
        snapshots = []
        for i, pid in enumerate(pids):
            fields, viewed, cart, daily, ids, segments, merged = replies[i * 7 : i * 7 + 7]
            snapshots.append(
                Snapshot(
                    id=pid,
                    fields={_s(k): _s(v) for k, v in fields.items()},
                    viewed=[_s(v) for v in viewed],
                    cart={_s(k): msgspec.json.decode(v) for k, v in cart.items()},
                    daily={_s(k): int(v) for k, v in daily.items()},
                    identities=sorted(_s(v) for v in ids),
                    segments=sorted(_s(v) for v in segments),
                    merged_from=sorted(_s(v) for v in merged),
                )
            )
        return snapshots

    def resolve(self, pid: str) -> str:
        """Follow merge pointers from ``pid`` to the profile that holds its data now."""
        return self.resolve_many([pid])[pid]

    def resolve_many(self, pids: list[str], hops: int = 16) -> dict[str, str]:
        """``resolve`` for many profiles, one round trip per hop."""
        final = {pid: pid for pid in pids}
        pending = sorted(set(pids))
        for _ in range(hops):
            if not pending:
                break
            pipe = self.client.pipeline(transaction=False)
            for pid in pending:
                pipe.hget(profile_keys(pid)[0], "merged_into")
            moved = {pid: _s(t) for pid, t in zip(pending, pipe.execute()) if t is not None}
            for start, now in final.items():
                if now in moved:
                    final[start] = moved[now]
            pending = sorted(set(moved.values()))
        return final

    def lookup(self, identities: list[str]) -> dict[str, str]:
        """Profile ids of the given "kind:value" identities (those that have one)."""
        if not identities:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for identity in identities:
            kind, _, value = identity.partition(":")
            pipe.get(identity_key(kind, value))
        return {i: _s(p) for i, p in zip(identities, pipe.execute()) if p is not None}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
