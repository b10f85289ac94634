-- Write a person's learner record only if it is still at the version it was read at (another
-- partition's learner may have written it since), and with it the scores it sets on the
-- profile (only if the profile exists: a score from old data must not bring back a profile
-- erased or merged meanwhile). The version leads the record's JSON: {"version":N,...
-- KEYS: the record, the profile. ARGV: the version read (0: none), the record, then the
-- scores' (field, value) pairs. Returns 1, or 0 when the record moved on (nothing written).
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(string.match(current, '^{"version":(%d+)') or '0') end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if #ARGV > 2 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 3))
end
return 1
