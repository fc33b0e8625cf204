-- Give back RESERVED (never dispatched) reservations in full. Idempotent. Releases of one
-- quota family arriving together are decided in one step, each on its own, in order.
-- KEYS: journal, leases, one reservation key per release (ARGV[3] of them), then the
-- family's pools in ARGV[2] order.
-- Returns JSON: per release {ok = record} (given back now) | {replay = record} (already
-- released) | {err = 'NORES'} | {err = 'STATE <state>'}; a record's text is the one stored.
local now = clock()
local n = tonumber(ARGV[3])
local pool, save = family_pools(3 + n)

-- Each record is read and decoded once, by key: the same id twice in one batch shares one
-- entry, so the second sees the first's release. Everything is checked before anything is
-- written: a script that errors after a write keeps the write (Redis has no rollback),
-- which would release some of the batch without saving the pools they credit.
local found = {}
for i = 1, n do
  local key = KEYS[2 + i]
  if found[key] == nil then
    local raw = redis.call('GET', key)
    found[key] = raw and {rec = cjson.decode(raw), text = raw} or false
  end
  local entry = found[key]
  if entry and entry.rec.state == 'reserved' then
    for _, id in ipairs(entry.rec.pools) do
      if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
    end
  end
end

local function release(key, entry)
  if not entry then return cjson.encode({err = 'NORES'}) end
  local rec = entry.rec
  if rec.state == 'released' then return tagged('replay', entry.text) end
  if rec.state ~= 'reserved' then return cjson.encode({err = 'STATE ' .. rec.state}) end
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
  entry.text = save_res(key, rec)
  journal('released', now, rec.rid, rec.pools, {refunded = refunded})
  return tagged('ok', entry.text)
end

local out = {}
for i = 1, n do
  local key = KEYS[2 + i]
  out[i] = release(key, found[key])
end
save()
return json_list(out)
