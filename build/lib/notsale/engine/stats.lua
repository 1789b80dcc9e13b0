-- stats.lua: a consistent read of one sale's counters, on Redis' clock.
--
-- KEYS: 1 hold  2 hexp  3 sold  4 ready (as in sale.lua)
-- ARGV: 1 item_id, or "" for the whole sale  2 the Redis server id the worker sees now
-- Returns {sold_count, live_hold_count} for the sale, or {status} for one item,
-- status one of available, held, sold; {"unready"} when the sale's state is not known
-- complete under this server id (new sale, or Redis lost data): the caller prepares it and asks again.

if redis.call('GET', KEYS[4]) ~= ARGV[2] then
  return {'unready'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == '' then
  return {redis.call('HLEN', KEYS[3]), redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')}
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'sold'}
end
local exp = redis.call('ZSCORE', KEYS[2], ARGV[1])
if exp and tonumber(exp) > now then
  return {'held'}
end
return {'available'}
