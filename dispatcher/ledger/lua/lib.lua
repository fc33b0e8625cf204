-- Shared prelude of every ledger script (prepended by redis_backend.py; Redis has no include).
-- Mirrors dispatcher/ledger/bucket.py: same dimensions, refill, fit and reconcile rules.
-- Time comes from the server (TIME); ARGV[1] is a test-only override, empty in production.

local DIMS = {'rpm', 'tpm', 'input_tpm', 'output_tpm', 'tpd'}
local WINDOW = {rpm = 60, tpm = 60, input_tpm = 60, output_tpm = 60, tpd = 86400}
local FIELD = {rpm = 'requests', tpm = 'tokens', input_tpm = 'input_tokens',
               output_tpm = 'output_tokens', tpd = 'tokens'}
local COST_FIELDS = {'requests', 'tokens', 'input_tokens', 'output_tokens'}
local RAISE_FRACTION = 0.25
local RETENTION_S = 86400  -- closed reservations stay this long for idempotent replays

local function clock()
  local forced = tonumber(ARGV[1])
  if forced then return forced end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function num(x) return string.format('%.17g', x) end

-- Pools ------------------------------------------------------------------------------------

-- Hash field names per dimension, spelled out: constants cost nothing per call, while
-- concatenating them per field was a visible share of every script's time.
local KEY = {
  rpm = {lim = 'rpm.lim', obs = 'rpm.obs', lvl = 'rpm.lvl', t = 'rpm.t', held = 'rpm.held'},
  tpm = {lim = 'tpm.lim', obs = 'tpm.obs', lvl = 'tpm.lvl', t = 'tpm.t', held = 'tpm.held'},
  input_tpm = {lim = 'input_tpm.lim', obs = 'input_tpm.obs', lvl = 'input_tpm.lvl',
               t = 'input_tpm.t', held = 'input_tpm.held'},
  output_tpm = {lim = 'output_tpm.lim', obs = 'output_tpm.obs', lvl = 'output_tpm.lvl',
                t = 'output_tpm.t', held = 'output_tpm.held'},
  tpd = {lim = 'tpd.lim', obs = 'tpd.obs', lvl = 'tpd.lvl', t = 'tpd.t', held = 'tpd.held'},
}

local function load_pool(key, id)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local P = {key = key, id = id, mode = h.mode, burst = tonumber(h.burst), sf = tonumber(h.sf),
             ow = tonumber(h.ow), refund = h.refund == '1', blocked = tonumber(h.blocked) or 0,
             obs_at = tonumber(h.obs_at), dims = {}, dirty = false}
  for _, d in ipairs(DIMS) do
    local k = KEY[d]
    local lim = h[k.lim]
    if lim then
      P.dims[d] = {lim = tonumber(lim), obs = tonumber(h[k.obs]), lvl = tonumber(h[k.lvl]),
                   t = tonumber(h[k.t]), held = tonumber(h[k.held]) or 0}
    end
  end
  return P
end

local function save_pool(P)
  local args = {'mode', P.mode, 'burst', num(P.burst), 'sf', num(P.sf), 'ow', num(P.ow),
                'refund', P.refund and '1' or '0', 'blocked', num(P.blocked)}
  if P.obs_at then table.insert(args, 'obs_at'); table.insert(args, num(P.obs_at)) end
  for _, d in ipairs(DIMS) do
    local s = P.dims[d]
    if s then
      for _, kv in ipairs({{'lim', s.lim}, {'obs', s.obs}, {'lvl', s.lvl}, {'t', s.t},
                           {'held', s.held}}) do
        if kv[2] then table.insert(args, d .. '.' .. kv[1]); table.insert(args, num(kv[2])) end
      end
    end
  end
  redis.call('DEL', P.key)  -- a dimension dropped by set_limits must not linger
  redis.call('HSET', P.key, unpack(args))
end

-- Reserve, settle, release and expiry move levels only (refresh, debit, credit, hold):
-- write those fields alone, not the whole pool (no DEL, a third of the fields).
local function save_levels(P)
  local args = {}
  for _, d in ipairs(DIMS) do
    local s = P.dims[d]
    if s then
      local k, n = KEY[d], #args
      args[n + 1], args[n + 2] = k.lvl, num(s.lvl)
      args[n + 3], args[n + 4] = k.t, num(s.t)
      args[n + 5], args[n + 6] = k.held, num(s.held)
    end
  end
  if #args > 0 then redis.call('HSET', P.key, unpack(args)) end
end

local function cap(P, d)
  local s = P.dims[d]
  local eff = s.lim
  if s.obs and s.obs < eff then eff = s.obs end
  return eff * P.sf
end

local function maxlvl(P, d)
  if P.mode == 'fixed_minute' then return cap(P, d) end
  return cap(P, d) * P.burst / 60
end

local function refresh(P, now)
  for _, d in ipairs(DIMS) do
    local s = P.dims[d]
    if s and now > s.t then
      local top = maxlvl(P, d)
      if P.mode == 'fixed_minute' then
        local passed = math.floor(now / WINDOW[d]) - math.floor(s.t / WINDOW[d])
        if passed > 0 then s.lvl = math.min(top, math.min(s.lvl, 0) + passed * cap(P, d)) end
      else
        s.lvl = math.min(top, s.lvl + cap(P, d) / WINDOW[d] * (now - s.t))
      end
      s.t = now
      P.dirty = true
    end
  end
end

local function wait(P, d, need, now)
  local s = P.dims[d]
  if s.lvl >= need then return 0 end
  if P.mode ~= 'fixed_minute' then return (need - s.lvl) / (cap(P, d) / WINDOW[d]) end
  local w, c = WINDOW[d], cap(P, d)
  local next_start = (math.floor(now / w) + 1) * w
  local next_level = math.min(c, math.min(s.lvl, 0) + c)
  local extra = math.max(0, math.ceil((need - next_level) / c))
  return next_start - now + extra * w
end

-- Returns wait seconds (0 = fits now), the reason, and whether it can never fit.
local function fit(P, cost, now)
  local worst, why = 0, nil
  for _, d in ipairs(DIMS) do
    if P.dims[d] then
      local need, top = cost[FIELD[d]], maxlvl(P, d)
      if need > top then
        return math.huge, string.format('pool %s: never_fits %s (%g > %g)', P.id, d, need, top), true
      end
      local w = wait(P, d, need, now)
      if w > worst then worst, why = w, 'pool ' .. P.id .. ': ' .. d .. ' exhausted' end
    end
  end
  if P.blocked > now and P.blocked - now > worst then
    worst, why = P.blocked - now, 'pool ' .. P.id .. ': blocked by provider 429'
  end
  return worst, why, false
end

local function debit(P, cost, hold)
  for d, s in pairs(P.dims) do
    s.lvl = s.lvl - cost[FIELD[d]]
    if hold then s.held = s.held + cost[FIELD[d]] end
  end
  P.dirty = true
end

local function credit(P, cost)  -- a negative cost charges more (debt)
  for d, s in pairs(P.dims) do s.lvl = math.min(maxlvl(P, d), s.lvl + cost[FIELD[d]]) end
  P.dirty = true
end

local function unhold(P, cost)
  for d, s in pairs(P.dims) do s.held = math.max(0, s.held - cost[FIELD[d]]) end
  P.dirty = true
end

local function clamp(P)
  for d, s in pairs(P.dims) do s.lvl = math.min(s.lvl, maxlvl(P, d)) end
  P.dirty = true
end

-- Costs ------------------------------------------------------------------------------------

local function cost_of(P, input, max_out)
  local out = max_out * P.ow
  return {requests = 1, tokens = input + out, input_tokens = input, output_tokens = out}
end

local function usage_cost(P, u)
  local out = u.output_tokens * P.ow
  return {requests = u.requests, tokens = u.input_tokens + out, input_tokens = u.input_tokens,
          output_tokens = out}
end

local function combine(a, b, f)
  local r = {}
  for _, k in ipairs(COST_FIELDS) do r[k] = f(a[k], b[k]) end
  return r
end
local function sub(a, b) return combine(a, b, function(x, y) return x - y end) end
local function add(a, b) return combine(a, b, function(x, y) return x + y end) end
local function cmax(a, b) return combine(a, b, math.max) end
local ZERO = {requests = 0, tokens = 0, input_tokens = 0, output_tokens = 0}

-- Journal and reservations -----------------------------------------------------------------

local function journal(kind, now, rid, pids, data)
  redis.call('XADD', KEYS[1], '*', 'kind', kind, 'at', num(now), 'rid', rid or '',
             'pools', table.concat(pids, ','), 'data', cjson.encode(data))
end

-- Returns the record's JSON: the batch scripts reply with that same text rather than
-- encode the record a second time (cjson was the larger part of their time).
local function save_res(key, rec)
  local text = cjson.encode(rec)
  if rec.state == 'reserved' or rec.state == 'in_flight' then
    redis.call('SET', key, text)
  else
    redis.call('SET', key, text, 'EX', RETENTION_S)
    redis.call('ZREM', KEYS[2], rec.rid)
  end
  return text
end

-- One reply item of a batch script, {"<tag>": <record JSON>}, from the record's stored text.
local function tagged(tag, text) return '{"' .. tag .. '":' .. text .. '}' end

-- A batch script's reply: its items' texts as one JSON list.
local function json_list(items) return '[' .. table.concat(items, ',') .. ']' end

-- Single-reservation scripts: KEYS = journal, leases, reservation, then every pool of the
-- family; ARGV[2] = JSON list of those pools' ids, in KEYS order.
local function family_pools(first)
  local ids, pools = cjson.decode(ARGV[2]), {}
  local loader = {}
  for i, id in ipairs(ids) do loader[id] = first + i - 1 end
  return function(id)
    if not loader[id] then return nil end
    if not pools[id] then
      local P = load_pool(KEYS[loader[id]], id)
      if not P then return nil end
      pools[id] = P
    end
    return pools[id]
  end, function()
    for _, P in pairs(pools) do if P.dirty then save_levels(P) end end
  end
end

local function is_open(rec) return rec.state == 'reserved' or rec.state == 'in_flight' end
