-- An event that changes no quota (a breaker transition, a session handover), stamped with
-- the server's clock like every other journal entry. KEYS[1]: the journal stream.
-- ARGV[2] kind, ARGV[3] reservation id ('' for none), ARGV[4] pool ids joined by ',',
-- ARGV[5] data as JSON.
local now = clock()
redis.call('XADD', KEYS[1], '*', 'kind', ARGV[2], 'at', num(now), 'rid', ARGV[3],
           'pools', ARGV[4], 'data', ARGV[5])
return 1
