-- Record a batch of cluster heartbeats atomically, by the server's clock (DESIGN §7.5).
--
-- KEYS[1..5]: the info, load, meta, counters and drain hashes (field = cluster id);
-- KEYS[5 + i]: the TTL'd liveness key of report i.
-- ARGV[1]: minimum gap between reports in ms (flood), ARGV[2]: liveness TTL in ms, then
-- 8 per report: cluster_id, boot_id, info_json|'', load_json|'', counters_json|'',
-- admin_state|'', weight|'' (0 clears), exempt_from_flood '1'|'0'.
--
-- meta (JSON array): boot_id, previous_boot_id, boot_changes, admin_state, weight (-1: none),
-- last_seen_ms, load_at_ms.
-- Returns per report {status, now_ms, boot_changed, previous_counters_json, drain_reason|''}
-- with status 'ok', 'unknown' (first report without announce), 'flood' or
-- 'backwards:<field>:<version>'.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gap = tonumber(ARGV[1])
local ttl = ARGV[2]
local INFO, LOAD, META, COUNTERS, DRAIN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local FIELDS = {'started', 'succeeded', 'failed', 'slow'}

local function went_backwards(previous, current)
  for version, values in pairs(current) do
    local before = previous[version]
    if before then
      for j = 1, 4 do
        if values[j] < before[j] then return FIELDS[j] .. ':' .. version end
      end
    end
  end
  return nil
end

local function record(id, boot, info, load, counters, admin, weight, exempt, live_key)
  local meta_raw = redis.call('HGET', META, id)
  local meta
  local changed = 0
  local previous = {}
  if not meta_raw then
    if info == '' then return {'unknown', now, 0, '{}', ''} end
    meta = {boot, '', 0, 'ready', -1, now, 0}
  else
    meta = cjson.decode(meta_raw)
    if meta[1] ~= boot then
      changed = 1
      meta[2] = meta[1]
      meta[1] = boot
      meta[3] = meta[3] + 1
    else
      local state_change = admin ~= '' and admin ~= meta[4]
      if exempt ~= '1' and not state_change and now - meta[6] < gap then
        return {'flood', now, 0, '{}', ''}
      end
      previous = cjson.decode(redis.call('HGET', COUNTERS, id) or '{}')
    end
  end
  local current = {}
  if counters ~= '' then
    current = cjson.decode(counters)
    local bad = went_backwards(previous, current)
    if bad then return {'backwards:' .. bad, now, 0, '{}', ''} end
  end
  local previous_json = cjson.encode(previous)
  meta[6] = now
  if info ~= '' then redis.call('HSET', INFO, id, info) end
  if load ~= '' then
    redis.call('HSET', LOAD, id, load)
    meta[7] = now
  end
  if admin ~= '' then meta[4] = admin end
  if weight ~= '' then meta[5] = tonumber(weight) end
  if counters ~= '' or changed == 1 then
    for version, values in pairs(current) do previous[version] = values end
    redis.call('HSET', COUNTERS, id, cjson.encode(previous))
  end
  redis.call('HSET', META, id, cjson.encode(meta))
  redis.call('SET', live_key, '1', 'PX', ttl)
  local reason = redis.call('HGET', DRAIN, id)
  if reason then return {'ok', now, changed, previous_json, 'd' .. reason} end
  return {'ok', now, changed, previous_json, ''}
end

local out = {}
local n = (#ARGV - 2) / 8
for i = 0, n - 1 do
  local a = 3 + i * 8
  out[i + 1] = record(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], KEYS[6 + i])
end
return out
