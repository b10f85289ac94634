-- Record what the trainer learned, only if the models it learned on are those Redis holds (the
-- round of learning it restored or last recorded): a trainer that lost its role, or that
-- started from other models, records nothing, restores and learns again. Every member must
-- still wait in the queue (an erasure may have taken one meanwhile): else nothing either.
-- KEYS: state, queue, labels, redo log.
-- ARGV: round, watermark, n, then n queue members, their n example ids (labels), m, m redo
-- lines, then (target, count) pairs. Returns 1; 0: the round moved on; -1: a member is gone.
if tonumber(redis.call('HGET', KEYS[1], 'round') or '0') ~= tonumber(ARGV[1]) then return 0 end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then return -1 end
end
local function chunks(first, last, command, key)
  for s = first, last, 1000 do
    redis.call(command, key, unpack(ARGV, s, math.min(s + 999, last)))
  end
end
chunks(4, 3 + n, 'ZREM', KEYS[2])
chunks(4 + n, 3 + 2 * n, 'HDEL', KEYS[3])
local m = tonumber(ARGV[4 + 2 * n])
chunks(5 + 2 * n, 4 + 2 * n + m, 'RPUSH', KEYS[4])
for i = 5 + 2 * n + m, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 'learned:' .. ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'round', tonumber(ARGV[1]) + 1, 'trained', ARGV[2])
return 1
