-- One address's suppression entry (KEYS[1], {sup}:a:<hash>) and the set of listed addresses
-- (KEYS[2], {sup}:all), changed together. ARGV: the hash, how many fields to set, those
-- field/value pairs, then the fields to delete. Listed: a block or a group entry remains.
local n = tonumber(ARGV[2])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[3 + 2 * i], ARGV[4 + 2 * i]) end
for i = 3 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
local listed = false
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f == 'block' or string.sub(f, 1, 2) == 'g:' then listed = true break end
end
if listed then redis.call('SADD', KEYS[2], ARGV[1]) else redis.call('SREM', KEYS[2], ARGV[1]) end
return listed and 1 or 0
