-- Apply a partition's staged batch to the {learn} slot: examples into the queue, the labels it
-- settled, its churn deadlines, then its position, serial, watermark and scaler, and drop the
-- outbox; only if it is the partition's next batch and the outbox is still the caller's (one
-- taken over applies nothing: its new owner does).
-- KEYS: state, queue, labels, deadlines, scaler, outbox.
-- ARGV: owner, serial field, serial, position field, position ('': none yet), watermark
-- field, watermark, scaler, then six lists, each a count and its items: queue (score, member)
-- pairs, labels (id, label) pairs, deadlines (score, profile) pairs, profiles leaving the
-- deadlines, members leaving the queue, ids leaving the labels. Returns 1, or 0.
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if applied + 1 ~= tonumber(ARGV[3]) then return 0 end
if redis.call('HGET', KEYS[6], 'owner') ~= ARGV[1]
    or tonumber(redis.call('HGET', KEYS[6], 'serial') or '0') ~= applied + 1 then
  return 0
end
local at = 9
local function items(width)
  local n = tonumber(ARGV[at])
  local first = at + 1
  at = first + n * width
  return first, at - 1
end
local a, b = items(2)
for i = a, b, 2 do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1]) end
a, b = items(2)
for i = a, b, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
a, b = items(2)
for i = a, b, 2 do redis.call('ZADD', KEYS[4], ARGV[i], ARGV[i + 1]) end
a, b = items(1)
for i = a, b do redis.call('ZREM', KEYS[4], ARGV[i]) end
a, b = items(1)
for i = a, b do redis.call('ZREM', KEYS[2], ARGV[i]) end
a, b = items(1)
for i = a, b do redis.call('HDEL', KEYS[3], ARGV[i]) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
redis.call('SET', KEYS[5], ARGV[8])
redis.call('DEL', KEYS[6])
return 1
