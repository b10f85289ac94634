-- Claim a due action for delivery: one holder at a time, even while a partition's lease moves
-- (the former holder, woken late, finds it claimed or gone). A claim lapses at its time, or at
-- once for the same holder (a restarted process resends what was in flight).
-- KEYS: outbox, claims (the partition's slot). ARGV: action key, holder, now, until (ms).
-- Returns 1 when the action is the caller's to deliver.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[3]) then return 0 end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local holder, lapses = string.match(held, '^(.*)|(%d+)$')
  if holder ~= ARGV[2] and tonumber(lapses) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[4])
return 1
