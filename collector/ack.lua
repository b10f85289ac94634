-- Acknowledge a batch of one partition and bump its counters, only while the lease is ours
-- (the fencing check: an instance that lost the partition never acknowledges for it).
-- KEYS: stream, stats hash, lease. ARGV: group, holder, id count, ids…, then (name, value)
-- pairs: integers by HINCRBY, the rest by HINCRBYFLOAT.
local lease = redis.call('GET', KEYS[3])
if lease ~= ARGV[2] then return 0 end
local n = tonumber(ARGV[3])
if n > 0 then
  for s = 4, 3 + n, 1000 do
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, s, math.min(s + 999, 3 + n)))
  end
end
for i = 4 + n, #ARGV, 2 do
  local value = ARGV[i + 1]
  if string.find(value, '^-?%d+$') then
    redis.call('HINCRBY', KEYS[2], ARGV[i], value)
  else
    redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], value)
  end
end
return 1
