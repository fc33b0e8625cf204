-- Seed pools from configuration. KEYS: pool keys; ARGV[2] JSON [{id, mode, burst, sf, ow,
-- refund, limits = [[dim, limit]...]}]. Limits are seeded only for a pool Redis does not hold
-- yet (afterwards set_limits owns them); static parameters always follow the configuration.
local now = clock()
for i, s in ipairs(cjson.decode(ARGV[2])) do
  local P = load_pool(KEYS[i], s.id)
  local seed = P == nil
  if seed then P = {key = KEYS[i], id = s.id, blocked = 0, dims = {}} else refresh(P, now) end
  P.mode, P.burst, P.sf, P.ow, P.refund = s.mode, s.burst, s.sf, s.ow, s.refund
  if seed then
    for _, kv in ipairs(s.limits) do
      P.dims[kv[1]] = {lim = kv[2], lvl = 0, t = now, held = 0}
      P.dims[kv[1]].lvl = maxlvl(P, kv[1])
    end
  end
  clamp(P)
  save_pool(P)
end
return 1
