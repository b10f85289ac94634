-- KEYS: stream, stats hash, dedup sets (current first)
-- ARGV: packed ids, spool limit, ttl of the current set, bytes per id, duplicates seen, payload
local packed, size = ARGV[1], tonumber(ARGV[4])
local n = #packed / size
local ids = {}
for i = 1, n do ids[i] = string.sub(packed, (i - 1) * size + 1, i * size) end
local dups = {}
for k = 3, #KEYS do
  for s = 1, n, 1000 do
    local e = math.min(s + 999, n)
    local hit = redis.call('SMISMEMBER', KEYS[k], unpack(ids, s, e))
    for j = 1, #hit do
      if hit[j] == 1 then dups[#dups + 1] = s + j - 2 end
    end
  end
end
if #dups > 0 then return {0, dups} end
local limit = tonumber(ARGV[2])
if limit > 0 then
  local length = redis.call('XLEN', KEYS[1])
  if length >= limit then return {-1, length} end
end
for s = 1, n, 1000 do
  redis.call('SADD', KEYS[3], unpack(ids, s, math.min(s + 999, n)))
end
redis.call('EXPIRE', KEYS[3], ARGV[3])
local id = redis.call('XADD', KEYS[1], '*', 'n', n, 'e', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'accepted', n)
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', ARGV[5]) end
return {1, id}
