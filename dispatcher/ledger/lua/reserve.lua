-- Decide a batch of reservations of one quota family, each in order, in one atomic step.
-- KEYS: journal, leases, the family's pools (ARGV[2].pools order), one reservation key per
-- request. ARGV[2]: {pools = [id...], reqs = [{rid, req, lease, cands = [{id, p = [pool
-- index...], i = input tokens, o = max output tokens}]}]}.
-- Returns JSON: per request {ok = record} | {replay = record} | {deny = {retry?, reasons, never}},
-- each item's text built here (a record's is the text stored for it), joined into one list.

local function admit(r, ci, c, costs, pools, key, now)
  local pids, cost = {}, {}
  for _, pi in ipairs(c.p) do
    local P = pools[pi]
    debit(P, costs[pi], true)
    table.insert(pids, P.id)
    cost[P.id] = costs[pi]
  end
  local rec = {rid = r.rid, req = r.req, ci = ci - 1, cid = c.id, pools = pids, cost = cost,
               charged = cost, state = 'reserved', exp = now + r.lease, at = now,
               usage = {requests = 0, input_tokens = 0, output_tokens = 0}}
  if ci > 1 then rec.spill = r.cands[1].id end
  local text = save_res(key, rec)
  redis.call('ZADD', KEYS[2], num(rec.exp), r.rid)
  journal('reserved', now, r.rid, pids, {
    request_id = r.req, candidate_id = c.id, candidate_index = ci - 1,
    spilled_from = rec.spill or cjson.null, cost = cost, lease_expires_at = rec.exp})
  return tagged('ok', text)
end

local function decide(r, key, pools, now)
  local reasons, retry = {}, nil
  for ci, c in ipairs(r.cands) do
    local costs, worst, never, why = {}, 0, false, {}
    for _, pi in ipairs(c.p) do
      costs[pi] = cost_of(pools[pi], c.i, c.o)
      local w, reason, nv = fit(pools[pi], costs[pi], now)
      if w > worst then worst = w end
      never = never or nv
      if reason then table.insert(why, reason) end
    end
    if worst == 0 then return admit(r, ci, c, costs, pools, key, now) end
    reasons[c.id] = table.concat(why, '; ')
    if not never and (retry == nil or worst < retry) then retry = worst end
  end
  return cjson.encode({deny = {retry = retry, reasons = reasons, never = retry == nil}})
end

local now = clock()
local batch = cjson.decode(ARGV[2])
-- Every pool must exist before anything is written (a script keeps the writes it made before
-- an error), but a pool is read only when a candidate needs it: most requests fit their first
-- candidate, and loading and saving the pools of spillover candidates nobody reached was
-- half of this script's time.
local pool_keys = {}
for i = 1, #batch.pools do pool_keys[i] = KEYS[2 + i] end
if redis.call('EXISTS', unpack(pool_keys)) < #pool_keys then
  for i, id in ipairs(batch.pools) do
    if redis.call('EXISTS', pool_keys[i]) == 0 then return redis.error_reply('NOPOOL ' .. id) end
  end
end
local pools = setmetatable({}, {__index = function(loaded, i)
  local P = load_pool(pool_keys[i], batch.pools[i])
  refresh(P, now)
  loaded[i] = P
  return P
end})
local out = {}
for n, r in ipairs(batch.reqs) do
  local key = KEYS[2 + #batch.pools + n]
  local existing = redis.call('GET', key)
  if existing then
    out[n] = tagged('replay', existing)
  else
    out[n] = decide(r, key, pools, now)
  end
end
for _, P in pairs(pools) do
  if P.dirty then save_levels(P) end
end
return json_list(out)
