-- One person's state in one group (KEYS[1], {p:<id>}:subs), set only if the change is not
-- older than the one held: a replayed event or a late-arriving older one changes nothing.
-- ARGV: group, "<state>|<ms>|<source>", ms. Returns {applied, what was held ('' if nothing)}.
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local at = tonumber(string.match(held, '^[^|]*|(%d+)|')) or 0
  if at > tonumber(ARGV[3]) then return {0, held} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, held or ''}
