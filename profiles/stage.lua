-- Stage a partition's next batch in its outbox, before any of its records is written: the
-- records, scores, examples, labels and deadlines it makes, for whoever finishes it. Only for
-- the partition's next batch (its serial), and not over another instance's live outbox (that
-- one is taken over first, take.lua).
-- KEYS: the outbox, state. ARGV: owner, serial field, serial, the outbox.
-- Returns 1; 0: another's outbox is live; -1: the batch is applied already.
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if applied + 1 ~= tonumber(ARGV[3]) then return -1 end
local live = tonumber(redis.call('HGET', KEYS[1], 'serial') or '0') == applied + 1
if live and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'serial', ARGV[3], 'body', ARGV[4])
return 1
