-- One failed sign-in: count it in its window; at the limit, lock for a while.
-- KEYS[1]: the failures counter, KEYS[2]: the lock. ARGV: window s, limit, lock s.
-- Returns the seconds the lock holds if this failure set it, else 0.
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
if n >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  return tonumber(ARGV[3])
end
return 0
