-- Change or remove one dashboard user, unless it would leave the other users without an admin.
-- KEYS[1]: the users hash. ARGV[1]: the email, ARGV[2]: the new record's JSON ('' removes it).
-- Returns 1 when written, 0 when there is no such user, -1 when the user is the last admin and
-- other users remain (make another admin first).
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
local demoted = ARGV[2] == '' or cjson.decode(ARGV[2]).role ~= 'admin'
if demoted and cjson.decode(old).role == 'admin' and redis.call('HLEN', KEYS[1]) > 1 then
  local admins = 0
  for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
    if cjson.decode(raw).role == 'admin' then
      admins = admins + 1
    end
  end
  if admins == 1 then
    return -1
  end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
