-- Save the models and empty the redo log they now hold, only if they are the models Redis
-- holds (the round of learning the caller restored or last recorded).
-- KEYS: state, checkpoint, redo log. ARGV: round, the checkpoint. Returns 1, or 0.
if tonumber(redis.call('HGET', KEYS[1], 'round') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
