-- Append one event to a task's stream: sequence check, end check, byte cap and append in one
-- atomic step, then a wake-up for every dispatcher process waiting on the task.
-- KEYS[1] meta hash, KEYS[2] event stream, KEYS[3] sequence -> event id hash (one hash tag).
-- ARGV: kind, payload, content type, sequence, max bytes, ttl ms, wake channel, task id.
-- Returns {'ok', id} | {'dup', id} | {'closed', kind, id} | {'toolarge'} | {'notfound'}.
local meta, stream, seqs = KEYS[1], KEYS[2], KEYS[3]
local kind, payload, ctype, seq = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', meta) == 0 then return {'notfound'} end
local known = redis.call('HGET', seqs, seq)
if known then return {'dup', known} end
local final = redis.call('HMGET', meta, 'final_kind', 'final')
if final[1] then return {'closed', final[1], final[2]} end
local stored = tonumber(redis.call('HGET', meta, 'bytes') or '0') + string.len(payload)
if stored > tonumber(ARGV[5]) then return {'toolarge'} end
local id = redis.call('XADD', stream, '*', 'k', kind, 'p', payload, 'c', ctype)
redis.call('HSET', seqs, seq, id)
redis.call('HSET', meta, 'bytes', stored, 'last', id)
if kind ~= 'progress' then redis.call('HSET', meta, 'final_kind', kind, 'final', id) end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[6]) end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'ok', id}
