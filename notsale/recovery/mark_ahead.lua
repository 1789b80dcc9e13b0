-- mark_ahead.lua: mark a sale ready before it starts, so that it opens even while PostgreSQL is
-- down: nothing of a sale that has not started can be in PostgreSQL, so there is nothing to
-- rebuild. Once it has started (on Redis' clock) only a rebuild may mark it (reconcile.lua).
--
-- KEYS: 1 ready (as in sale.lua)
-- ARGV: 1 the sale's start, unix ms  2 unix ms at which the key expires
-- Returns 1 when marked (or already marked under this server's id), 0 when the sale has started.
-- Every worker calls it every WATCH_EVERY_S: it writes (and so appends to the AOF) only when
-- the mark is missing or names another server.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(ARGV[1]) then
  return 0
end
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
if redis.call('GET', KEYS[1]) ~= server then
  redis.call('SET', KEYS[1], server, 'PXAT', ARGV[2])
end
return 1
