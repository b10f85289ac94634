-- Serve the merge of the partitions' learned states, unless one already served is newer for
-- some partition (two workers publishing at once: the later read wins, never the older).
-- KEYS: the served state, its sources (hash: partition -> position merged).
-- ARGV: the state (JSON), then (partition, position) pairs.
for i = 2, #ARGV, 2 do
  local served = redis.call('HGET', KEYS[2], ARGV[i])
  if served and served > ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
