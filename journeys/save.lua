-- Save one person's runs and the actions they reached, unless the runs changed since they were
-- read (a compare-and-set on the person's version): instances holding different partitions can
-- change one person's runs at once, and an action exists only if the run that reached it did.
-- KEYS: runs hash, version, actions hash (the person's slot).
-- ARGV: the version read, how many runs, (journey, run JSON) pairs, then (action key, JSON)
-- pairs (kept if already there: the same run reaching the same step adds nothing).
-- Returns the new version, or 0 when another save came first (read again and redo).
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if version ~= tonumber(ARGV[1]) then return 0 end
local last = 2 + 2 * tonumber(ARGV[2])
for i = 3, last, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = last + 1, #ARGV, 2 do redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1]) end
return redis.call('INCR', KEYS[2])
