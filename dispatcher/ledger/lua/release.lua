-- Give back RESERVED (never dispatched) reservations in full. Idempotent. Releases of one
-- quota family arriving together are decided in one step, each on its own, in order.
-- KEYS: journal, leases, one reservation key per release (ARGV[3] of them), then the
-- family's pools in ARGV[2] order.
-- Returns JSON: per release {ok = record} (given back now) | {replay = record} (already
-- released) | {err = 'NORES'} | {err = 'STATE <state>'}.
local now = clock()
local n = tonumber(ARGV[3])
local pool, save = family_pools(3 + n)

-- Everything is checked before anything is written: a script that errors after a write
-- keeps the write (Redis has no rollback), which would release some of the batch without
-- saving the pools they credit.
for i = 1, n do
  local raw = redis.call('GET', KEYS[2 + i])
  if raw then
    local rec = cjson.decode(raw)
    if rec.state == 'reserved' then
      for _, id in ipairs(rec.pools) do
        if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
      end
    end
  end
end

local function release(key, rec)
  if not rec then return {err = 'NORES'} end
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
for i = 1, n do
  local key = KEYS[2 + i]
  -- The same id twice in one batch: the second sees the first's release.
  local raw = redis.call('GET', key)
  out[i] = release(key, raw and cjson.decode(raw) or nil)
end
save()
return cjson.encode(out)
