local p, viewed, cart, daily, ids, merged = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local subs = KEYS[7]
local src = ARGV[1]
if redis.call('SISMEMBER', merged, src) == 1 then return 0 end
if redis.call('HEXISTS', p, 'merged_into') == 1 then return -1 end  -- sealed: merge further on
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
for k, v in pairs(s) do  -- the position applied, per spool partition: the later
  if (k == 'applied' or string.sub(k, 1, 8) == 'applied:') and (t[k] == nil or v > t[k]) then
    redis.call('HSET', p, k, v)
  end
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
-- Subscriptions ("<state>|<ms>|<source>" per group): the newer change of each group wins, so
-- an unsubscribe on one device is not undone by an older subscribe on another.
local function changed_at(v) return tonumber(string.match(v, '^[^|]*|(%d+)|')) or 0 end
for group, v in pairs(cjson.decode(ARGV[11])) do
  local mine = redis.call('HGET', subs, group)
  if not mine or changed_at(v) > changed_at(mine) then redis.call('HSET', subs, group, v) end
end
local src_merged = cjson.decode(ARGV[9])
redis.call('SADD', merged, src, unpack(src_merged))
return 1
