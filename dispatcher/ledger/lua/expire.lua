-- Abandon due leases. KEYS: journal, leases, every pool of the family (ARGV[2] ids), then the
-- reservation keys of the earliest leases (ARGV[3] = their count, ARGV[4..] their ids).
-- RESERVED ones are refunded, IN_FLIGHT ones not. Stops at the first lease not yet due.
-- Returns JSON {abandoned = [rid...], due = entries handled}.
local now = clock()
local npools = #cjson.decode(ARGV[2])
local pool, save = family_pools(3)
local abandoned, due = {}, 0
for j = 1, tonumber(ARGV[3]) do
  local k = 2 + npools + j
  local raw = redis.call('GET', KEYS[k])
  local rec = raw and cjson.decode(raw)
  if rec and is_open(rec) and rec.exp > now then break end
  due = due + 1
  if rec and is_open(rec) then
    local was = rec.state
    for _, id in ipairs(rec.pools) do
      local P = pool(id)
      if P then
        refresh(P, now)
        if was == 'reserved' then credit(P, rec.charged[id]) end
        unhold(P, rec.cost[id])
      end
      if was == 'reserved' then rec.charged[id] = ZERO end
    end
    rec.state = 'abandoned'
    save_res(KEYS[k], rec)
    journal('abandoned', now, rec.rid, rec.pools, {from_state = was, refunded = was == 'reserved'})
    table.insert(abandoned, rec.rid)
  else
    redis.call('ZREM', KEYS[2], ARGV[3 + j])  -- closed meanwhile, or its record expired
  end
end
save()
return cjson.encode({abandoned = abandoned, due = due})
