-- RESERVED -> IN_FLIGHT. KEYS/ARGV: see family_pools in lib.lua.
local now = clock()
local raw = redis.call('GET', KEYS[3])
if not raw then return redis.error_reply('NORES') end
local rec = cjson.decode(raw)
if rec.state == 'in_flight' then return cjson.encode({replay = rec}) end
if rec.state ~= 'reserved' then return redis.error_reply('STATE ' .. rec.state) end
rec.state = 'in_flight'
save_res(KEYS[3], rec)
journal('dispatched', now, rec.rid, rec.pools, {})
return cjson.encode({ok = rec})
