-- Write scores.* (HSET of ARGV pairs) only if the profile exists: a score computed from old
-- data must not bring back a profile erased or merged meanwhile.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
