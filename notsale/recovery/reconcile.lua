-- reconcile.lua: make one sale's Redis state what PostgreSQL stored, in chunks.
--
-- KEYS: the seven keys of sale.lua (hold, hexp, sold, code, users, outbox, ready), then
--       8 lease  string: the token of the one rebuild of this sale under way
-- ARGV: 1 unix ms at which the sale's keys expire  2 the lease's token  3 "1" on the last
--       chunk: mark the sale ready under this server's id and end the lease  4 the user
--       limit; then operations, each kind after the ones above it:
--         "p", item_id, user_id, code, purchased_ms, seq   a stored purchase
--         "f", item_id                 sold in Redis alone: PostgreSQL refused or never got
--                                      it, so the item is free again
--         "u", user_id, bought, seqs   a user's stored purchases: how many, and their seqs
--                                      when they are not 1..bought ("" when they are)
--         "x", code                    paid in Redis alone: its hold comes back while it
--                                      lasts, its item is free and its user below the
--                                      limit; else the code expires
-- Returns the number of purchases Redis did not know (or knew sold to someone else), or
-- {"lost"} (nothing done) when the lease is no longer this rebuild's: it took too long, or
-- Redis restarted and may have lost the earlier chunks.
-- The sale is not ready while this runs, so nothing decides on it between chunks; live
-- holds are kept.

local HOLD, HEXP, SOLD, CODE, USERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('GET', KEYS[8]) ~= ARGV[2] then
  return {'lost'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A user's state without its first part (bought and seqs): the holds, "" or ",...".
local function holds_of(user)
  local state = redis.call('HGET', USERS, user)
  return state and string.match(state, '^[^,]*(.*)$') or ''
end

-- A hold on the item no longer counted for the user (it was bought, by them or another).
local function drop_hold(user, item)
  local state = redis.call('HGET', USERS, user)
  if state then
    local kept = {}
    for part in string.gmatch(state, '[^,]+') do
      if #kept == 0 or string.match(part, '^(%d+):') ~= item then
        kept[#kept + 1] = part
      end
    end
    redis.call('HSET', USERS, user, table.concat(kept, ','))
  end
end

-- Whether a user's bought and live held items reach the limit.
local function at_limit(user)
  local state = redis.call('HGET', USERS, user) or '0'
  local count = tonumber(string.match(state, '^(%d+)'))
  for expires in string.gmatch(state, ':(%d+)') do
    if tonumber(expires) > now then
      count = count + 1
    end
  end
  return count >= tonumber(ARGV[4])
end

local restored, i = 0, 5
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'p' then
    local item, user, code, paid, seq = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5]
    if redis.call('HGET', SOLD, item) ~= user then
      redis.call('HSET', SOLD, item, user)
      restored = restored + 1
    end
    -- Bought: no longer held, by anyone (Redis may have lost the purchase, not the hold).
    local held = redis.call('HGET', HOLD, item)
    if held then
      drop_hold(string.match(held, '^(.-)\t'), item)
      redis.call('HDEL', HOLD, item)
      redis.call('ZREM', HEXP, item)
    end
    drop_hold(user, item)
    redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. paid .. '\t' .. paid .. '\t'
      .. seq)
    i = i + 6
  elseif op == 'f' then
    redis.call('HDEL', SOLD, ARGV[i + 1])
    i = i + 2
  elseif op == 'x' then
    local code = ARGV[i + 1]
    local item, user, expires = string.match(redis.call('HGET', CODE, code) or '',
      '^(%d+)\t(.-)\t(%d+)\t')
    if item then
      local held = redis.call('HGET', HOLD, item)
      local held_exp = held and tonumber(string.match(held, '\t(%d+)$')) or 0
      if tonumber(expires) > now and redis.call('HEXISTS', SOLD, item) == 0
          and held_exp <= now and not at_limit(user) then
        redis.call('HSET', HOLD, item, user .. '\t' .. code .. '\t' .. expires)
        redis.call('ZADD', HEXP, expires, item)
        local state = redis.call('HGET', USERS, user) or '0'
        redis.call('HSET', USERS, user, state .. ',' .. item .. ':' .. expires)
      else
        expires = '0'
      end
      redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. expires .. '\t0\t0')
    end
    i = i + 2
  else
    local user, bought, seqs = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    if seqs ~= '' then
      bought = bought .. '/' .. seqs
    end
    redis.call('HSET', USERS, user, bought .. holds_of(user))
    i = i + 4
  end
end
for k = 1, 5 do
  redis.call('PEXPIREAT', KEYS[k], ARGV[1])
end
if ARGV[3] == '1' then
  local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  redis.call('SET', KEYS[7], server, 'PXAT', ARGV[1])
  redis.call('DEL', KEYS[8])
end
return restored
