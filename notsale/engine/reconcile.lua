-- reconcile.lua: make one sale's Redis state agree with what PostgreSQL stored.
--
-- KEYS: the seven keys of sale.lua (hold, hexp, sold, code, users, outbox, ready).
-- ARGV: 1 unix ms at which the sale's keys expire  2 "1" to mark the sale ready at the end,
--       then operations back to back:
--         "p", item_id, user_id, code, purchased_ms   a stored purchase
--         "u", user_id, bought                        a user's stored purchase count
-- Returns the number of purchases Redis did not know yet.
-- Live holds are kept (a hold on an item found sold is dropped), and a user's bought count
-- never goes down, so running it again, or while sales go on, is harmless.

local HOLD, HEXP, SOLD, CODE, USERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local restored, i = 0, 3
while i <= #ARGV do
  if ARGV[i] == 'p' then
    local item, user, code, paid = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    if redis.call('HSETNX', SOLD, item, user) == 1 then
      restored = restored + 1
      redis.call('HDEL', HOLD, item)
      redis.call('ZREM', HEXP, item)
    end
    redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. paid .. '\t' .. paid)
    i = i + 5
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
if ARGV[2] == '1' then
  redis.call('SET', KEYS[7], '1', 'PXAT', ARGV[1])
end
return restored
