-- Give back RESERVED (never dispatched) reservations in full. Idempotent. Releases of one
-- quota family arriving together are decided in one step, each on its own, in order.
-- KEYS: journal, leases, one reservation key per release (ARGV[3] of them), then the
-- family's pools in ARGV[2] order.
-- Returns JSON: per release {ok = record} (given back now) | {replay = record} (already
-- released) | {err = 'NORES'} | {err = 'STATE <state>'}.
local now = clock()
local n = tonumber(ARGV[3])
local pool, save = family_pools(3 + n)
-- Every pool first: a missing one is reseeded and the whole batch sent again, which must
-- not find some of its releases already done.
for _, id in ipairs(cjson.decode(ARGV[2])) do
  if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
end

local function release(key)
  local raw = redis.call('GET', key)
  if not raw then return {err = 'NORES'} end
  local rec = cjson.decode(raw)
  if rec.state == 'released' then return {replay = rec} end
  if rec.state ~= 'reserved' then return {err = 'STATE ' .. rec.state} end
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
  save_res(key, rec)
  journal('released', now, rec.rid, rec.pools, {refunded = refunded})
  return {ok = rec}
end

local out = {}
for i = 1, n do out[i] = release(KEYS[2 + i]) end
save()
return cjson.encode(out)
