-- Authorise a reader and return one page of a task's events.
-- KEYS[1] meta hash, KEYS[2] event stream.  ARGV: token digest, start ('-' or '(' .. id), count.
-- Returns {'notfound'} | {'denied'} | {'ok', last id or '', entries}. The caller checks that
-- its resume point is not after `last` (ids are compared in Python, where they are exact).
local meta = KEYS[1]
local token = redis.call('HGET', meta, 'token')
if not token then return {'notfound'} end
if token ~= ARGV[1] then return {'denied'} end
local last = redis.call('HGET', meta, 'last') or ''
return {'ok', last, redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])}
