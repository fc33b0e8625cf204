-- Change configured limits of one pool. KEYS: journal, pool. ARGV[2] pool id, ARGV[3] JSON
-- [[dim, limit]...] where a limit <= 0 stops enforcing that dimension.
local now = clock()
local P = load_pool(KEYS[2], ARGV[2])
if not P then return redis.error_reply('NOPOOL ' .. ARGV[2]) end
refresh(P, now)
local limits = {}
for _, kv in ipairs(cjson.decode(ARGV[3])) do
  local d, v = kv[1], kv[2]
  if v <= 0 then
    P.dims[d], limits[d] = nil, cjson.null
  elseif P.dims[d] then
    P.dims[d].lim, limits[d] = v, v
  else
    P.dims[d], limits[d] = {lim = v, lvl = 0, t = now, held = 0}, v
    P.dims[d].lvl = maxlvl(P, d)  -- a newly enforced dimension starts full
  end
end
clamp(P)
save_pool(P)
journal('limits_set', now, nil, {P.id}, {limits = limits})
return 1
