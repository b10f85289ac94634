-- Take over a partition's live outbox (its batch staged, not yet applied): from now on only
-- the new owner may stage or apply it. KEYS: the outbox, state. ARGV: owner, serial field.
-- Returns the outbox, or false when none is live.
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if tonumber(redis.call('HGET', KEYS[1], 'serial') or '0') ~= applied + 1 then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return redis.call('HGET', KEYS[1], 'body')
