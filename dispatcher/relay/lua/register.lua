-- Create a task's result stream, or confirm a retried registration.
-- KEYS[1] meta hash.  ARGV: token digest, ttl ms.
-- Returns 'new', 'same' (already registered with this token) or 'taken'.
local meta = KEYS[1]
local existing = redis.call('HGET', meta, 'token')
if existing then
  if existing == ARGV[1] then return 'same' end
  return 'taken'
end
redis.call('HSET', meta, 'token', ARGV[1], 'bytes', 0)
redis.call('PEXPIRE', meta, ARGV[2])
return 'new'
