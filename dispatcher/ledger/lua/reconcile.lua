-- Apply a provider observation (DESIGN 7.3) to one pool. KEYS: journal, pool. ARGV[2] pool id,
-- ARGV[3] JSON {at, lim_requests?, rem_requests?, lim_tokens?, rem_tokens?, rl, ra?} holding
-- only known values. Returns 0 (older than the last applied: no-op) or 1.
local now = clock()
local P = load_pool(KEYS[2], ARGV[2])
if not P then return redis.error_reply('NOPOOL ' .. ARGV[2]) end
local o = cjson.decode(ARGV[3])
if P.obs_at and o.at < P.obs_at then return 0 end
refresh(P, now)
P.obs_at = o.at
for _, pair in ipairs({{'rpm', 'requests'}, {'tpm', 'tokens'}}) do
  local d, s = pair[1], P.dims[pair[1]]
  if s then
    local limit = o['lim_' .. pair[2]]
    if limit and limit > 0 then
      if limit < s.lim then s.obs = limit else s.obs = nil end
      clamp(P)
    end
    local remaining = o['rem_' .. pair[2]]
    if o.rl and not o.ra then remaining = 0 end  -- a bare 429: treat as empty
    if remaining then
      local target = math.min(remaining * P.sf, maxlvl(P, d))
      local gap = target - s.lvl
      if gap < 0 then s.lvl = target else s.lvl = s.lvl + gap * RAISE_FRACTION end
    end
  end
end
if o.rl and o.ra then P.blocked = math.max(P.blocked, math.min(o.at, now) + o.ra) end
save_pool(P)
local levels = {}
for d, s in pairs(P.dims) do levels[d] = s.lvl end
journal('reconciled', now, nil, {P.id},
        {observed_at = o.at, levels = levels, blocked_until = P.blocked})
return 1
