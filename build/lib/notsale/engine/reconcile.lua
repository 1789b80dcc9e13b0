-- reconcile.lua: make one sale's Redis state agree with what PostgreSQL stored.
--
-- KEYS: the seven keys of sale.lua (hold, hexp, sold, code, users, outbox, ready).
-- ARGV: 1 unix ms at which the sale's keys expire  2 the Redis server id to mark the sale
--       ready under at the end ("" = not yet: more chunks follow), then operations:
--         "p", item_id, user_id, code, purchased_ms, seq   a stored purchase
--         "u", user_id, bought                              a user's highest stored seq
-- Returns the number of purchases Redis did not know (or knew sold to someone else).
-- PostgreSQL wins: an item it has sold is sold to its buyer here too (a hold on it is
-- dropped). Live holds are kept, and a user's bought count never goes down, so running it
-- again, or while sales go on, is harmless.

local HOLD, HEXP, SOLD, CODE, USERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local restored, i = 0, 3
while i <= #ARGV do
  if ARGV[i] == 'p' then
    local item, user, code, paid, seq = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5]
    if redis.call('HGET', SOLD, item) ~= user then
      redis.call('HSET', SOLD, item, user)
      restored = restored + 1
      redis.call('HDEL', HOLD, item)
      redis.call('ZREM', HEXP, item)
    end
    redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. paid .. '\t' .. paid .. '\t'
      .. seq)
    i = i + 6
  else
    local user, bought = ARGV[i + 1], tonumber(ARGV[i + 2])
    local state = redis.call('HGET', USERS, user)
    local holds = ''
    if state then
      local known = tonumber(string.match(state, '^(%d+)'))
      if known > bought then
        bought = known
      end
      holds = string.match(state, '^%d+(.*)$')
    end
    redis.call('HSET', USERS, user, bought .. holds)
    i = i + 3
  end
end
for k = 1, 5 do
  redis.call('PEXPIREAT', KEYS[k], ARGV[1])
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[7], ARGV[2], 'PXAT', ARGV[1])
end
return restored
