-- read.lua: a consistent read of one sale, on Redis' clock: its counters, or the status of
-- a run of its items (one grid page of the buyers' page in one call).
--
-- KEYS: 1 hold  2 hexp  3 sold  4 ready (as in sale.lua)
-- ARGV: 1 the first item, or "" for the whole sale  2 how many items from the first (at
--       most a few hundred)
-- Returns {sold_count, live_hold_count} for the sale, or one status per item, each one of
-- available, held, sold; {"unready"} when the sale's state is not known complete under this
-- server's id (Redis lost it, or no checkout prepared it yet): PostgreSQL answers instead.

if redis.call('GET', KEYS[4]) ~= string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') then
  return {'unready'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == '' then
  return {redis.call('HLEN', KEYS[3]), redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')}
end
local items = {}
for i = 0, tonumber(ARGV[2]) - 1 do
  items[#items + 1] = tonumber(ARGV[1]) + i
end
local sold = redis.call('HMGET', KEYS[3], unpack(items))
local expires = redis.call('ZMSCORE', KEYS[2], unpack(items))
local statuses = {}
for i = 1, #items do
  if sold[i] then
    statuses[i] = 'sold'
  elseif expires[i] and tonumber(expires[i]) > now then
    statuses[i] = 'held'
  else
    statuses[i] = 'available'
  end
end
return statuses
