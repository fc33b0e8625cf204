-- Prolong an open lease to now + ARGV[3] seconds.
local now = clock()
local raw = redis.call('GET', KEYS[3])
if not raw then return redis.error_reply('NORES') end
local rec = cjson.decode(raw)
if not is_open(rec) then return redis.error_reply('STATE ' .. rec.state) end
rec.exp = now + tonumber(ARGV[3])
save_res(KEYS[3], rec)
redis.call('ZADD', KEYS[2], num(rec.exp), rec.rid)
journal('extended', now, rec.rid, rec.pools, {lease_expires_at = rec.exp})
return cjson.encode({ok = rec})
