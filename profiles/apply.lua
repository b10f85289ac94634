-- Apply a profile's messages of one batch, in spool order, skipping those already applied.
-- KEYS: profile, viewed, cart, daily, ids. ARGV: viewed max, session gap ms, half-life ms,
-- days of daily counts to keep, bought max, the field holding the position applied in this
-- spool partition, then per message: position, update JSON, identities JSON, trait count, and
-- that many (name, JSON value) pairs.
-- Returns -1 when the profile was merged into another (sealed): apply there instead.
-- One read and (mostly) one write for the whole group: each command in a script costs.
local p, viewed, cart, daily, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local vmax, gap, hl, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local bmax = tonumber(ARGV[5])
local afield = ARGV[6]
local cur = redis.call('HMGET', p, 'merged_into', afield, 'first_seen', 'last_seen',
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
local i = 7
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
local set = {afield, applied, 'first_seen', first_seen, 'last_seen', last_seen,
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
