-- Give back a RESERVED (never dispatched) reservation in full. Idempotent.
local now = clock()
local raw = redis.call('GET', KEYS[3])
if not raw then return redis.error_reply('NORES') end
local rec = cjson.decode(raw)
if rec.state == 'released' then return cjson.encode({replay = rec}) end
if rec.state ~= 'reserved' then return redis.error_reply('STATE ' .. rec.state) end
local pool, save = family_pools(4)
for _, id in ipairs(rec.pools) do
  if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
end
local refunded = {}
for _, id in ipairs(rec.pools) do
  local P = pool(id)
  refresh(P, now)
  credit(P, rec.charged[id])
  unhold(P, rec.cost[id])
  refunded[id] = rec.charged[id]
  rec.charged[id] = ZERO
end
rec.state = 'released'
save_res(KEYS[3], rec)
save()
journal('released', now, rec.rid, rec.pools, {refunded = refunded})
return cjson.encode({ok = rec})
