-- Hold the trainer's role: keep it while it is ours, take it when it is free.
-- KEYS: the role. ARGV: holder, lease ms. Returns 1 when held, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
