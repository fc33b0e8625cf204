-- Final usage (ARGV[3] JSON total) and outcome (ARGV[4]). Idempotent; accepted after ABANDONED.
local now = clock()
local raw = redis.call('GET', KEYS[3])
if not raw then return redis.error_reply('NORES') end
local rec = cjson.decode(raw)
if rec.settled then return cjson.encode({replay = rec}) end
if rec.state == 'released' then return redis.error_reply('STATE released') end
local usage = cjson.decode(ARGV[3])
local pool, save = family_pools(4)
for _, id in ipairs(rec.pools) do
  if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
end
local charged, adjustment = {}, {}
for _, id in ipairs(rec.pools) do
  local P = pool(id)
  local actual = usage_cost(P, usage)
  charged[id] = P.refund and actual or cmax(actual, rec.cost[id])
  adjustment[id] = sub(charged[id], rec.charged[id])
  refresh(P, now)
  credit(P, sub(ZERO, adjustment[id]))
  if is_open(rec) then unhold(P, rec.cost[id]) end
end
local late = rec.state == 'abandoned'
rec.charged, rec.usage, rec.state = charged, usage, 'settled'
rec.settled = {outcome = ARGV[4], charged = charged, adjustment = adjustment, late = late}
save_res(KEYS[3], rec)
save()
journal('settled', now, rec.rid, rec.pools, {outcome = ARGV[4], usage = usage, charged = charged,
        adjustment = adjustment, late = late})
return cjson.encode({ok = rec})
