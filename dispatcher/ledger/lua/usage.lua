-- Interim usage (ARGV[3] = JSON delta): what exceeds the charge so far is debited now.
local now = clock()
local raw = redis.call('GET', KEYS[3])
if not raw then return redis.error_reply('NORES') end
local rec = cjson.decode(raw)
if not (is_open(rec) or rec.state == 'abandoned') then
  return redis.error_reply('STATE ' .. rec.state)
end
local delta = cjson.decode(ARGV[3])
local pool, save = family_pools(4)
for _, id in ipairs(rec.pools) do
  if not pool(id) then return redis.error_reply('NOPOOL ' .. id) end
end
rec.usage = {requests = rec.usage.requests + delta.requests,
             input_tokens = rec.usage.input_tokens + delta.input_tokens,
             output_tokens = rec.usage.output_tokens + delta.output_tokens}
for _, id in ipairs(rec.pools) do
  local P = pool(id)
  local need = usage_cost(P, rec.usage)
  local over = sub(cmax(need, rec.charged[id]), rec.charged[id])
  refresh(P, now)
  debit(P, over, false)
  rec.charged[id] = add(rec.charged[id], over)
end
if rec.state == 'reserved' then rec.state = 'in_flight' end
save_res(KEYS[3], rec)
save()
journal('usage', now, rec.rid, rec.pools, {delta = delta, usage = rec.usage, charged = rec.charged})
return cjson.encode({ok = rec})
