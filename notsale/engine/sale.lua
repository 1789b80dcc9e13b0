-- sale.lua: decide a batch of checkouts and purchases of one sale, atomically, in order,
-- and log every decision to the sale's outbox. One run carries all the operations a worker
-- gathered while its previous batch was on the wire.
--
-- KEYS: 1 hold   hash  item -> user \t code \t expires_ms
--       2 hexp   zset  item scored by its hold's expires_ms (counts live holds)
--       3 sold   hash  item -> user
--       4 code   hash  code -> item \t user \t expires_ms \t purchased_ms (0 = not bought)
--                      \t seq (the purchase's place among its user's purchases, 0 = none)
--       5 users  hash  user -> "bought[/seqs],item:expires_ms,..." (expired holds dropped
--                      lazily); seqs, "1.2.4", lists the user's purchases' seqs when they are
--                      not 1..bought (a rebuild found a gap: see next_seq)
--       6 outbox stream of decisions for the PostgreSQL flusher: one field "e" per entry,
--         the JSON array of notsale/outbox.py's Checkout or Purchase
--       7 ready  string: the Redis server id (run_id) under which the sale's state was last
--         known complete (see reconcile.lua). Missing or another id than this server's: Redis
--         lost data (a restart, a failover) or the sale is new, so checkouts and purchases
--         wait for a rebuild from PostgreSQL. Asked of Redis in every run: no worker's memory
--         of which server it talked to can be out of date
--       8 lease  (reconcile.lua's; unused here)
--       9 active the sale's waiting room's active buyers (queue.lua's: user scored by their
--         last admission, checkout or purchase), kept up to date here in queue mode
-- ARGV: 1 sale_id  2 sale_ms  3 open_ms (the sale closes this long after its start unless
--       sold out before)  4 size  5 hold_ms  6 user_limit  7 keep_ms (how long keys outlive
--       the sale's close)  8 outbox_max (entries the outbox may hold before checkouts are
--       refused; the rows of refused checkouts, "r" below, are taken up to twice that, so
--       that a checkout refused for the backlog still has its row)  9 cooldown_ms (a user
--       who let a hold expire may not hold that item again for this long)  10 holds_max (live
--       holds a user may have across all open sales)  11 ledger: on a single Redis, the key
--       prefix of the users' ledgers (keys.holds_key: a sorted set of "sale:item" scored by
--       the hold's expires_ms), read and written here; "" on a cluster, where a user's ledger
--       is in another slot and the engine reads and writes it  12 queue: "1" in queue mode
--       (a decided checkout or a purchase refreshes its user in KEYS[9]; a purchase that
--       reaches the limit drops them), "" else, then operations:
--         "c", request_id, item_id, user_id, fresh_code, named, others, network
--                         checkout (the code is used only for a new hold); named "1" when the
--                         client named the sale, "0" for the running sale; others: on a
--                         cluster, the user's live holds in other sales, "?" until the engine
--                         read their ledger (only a new hold needs it); network: the
--                         client's, logged with the attempt ("" when unknown)
--         "p", code       purchase
--         "r", entry      log a checkout refused in Python
-- Returns one reply per operation, in order:
--   checkout: {outcome, code, expires_ms}, outcome ok | item_sold | item_held | user_limit |
--             cooldown (expires_ms: when it ends) | holds_max (expires_ms: when the first of
--             the user's holds known here expires) | sale_closed | item_not_found
--             (a named sale that has not started on Redis' clock),
--             or {"wrong_sale", server_sale_id} when Redis' clock runs another sale than the
--             unnamed checkout's, {"unready"} when the sale is not known ready under this
--             server id, {"backlog"} when the outbox is full, or {"ledger"} when a new hold
--             needs `others` (on a cluster; for these four nothing was changed or logged)
--   purchase: {"ok", item_id, user_id, purchased_ms, seq} (the first purchase's, on a repeat),
--             {"code_expired"}, {"code_not_found"} (also for any code of a sale closed and
--             not ready: only PostgreSQL knows it), {"unready"} (an open sale: rebuild, then
--             ask again), or {"item_sold"} / {"user_limit"} when Redis lost writes (nothing
--             is overwritten)
--   log:      {"ok"} or {"backlog"} (not logged)
-- A script error stops the run where it stands: callers answer 503 and never run it again.

local HOLD, HEXP, SOLD, CODE, USERS, OUTBOX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local ready = redis.call('GET', KEYS[7]) == server
local waiting = redis.call('XLEN', OUTBOX)
local full = waiting >= tonumber(ARGV[8])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%.0f', now)
local sale_id, sale_ms, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local hold_ms, limit, keep_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cooldown_ms, holds_max, ledger = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local queueing = ARGV[12] == '1'
local server_sale = math.floor(now / sale_ms)
local closes = sale_id * sale_ms + tonumber(ARGV[3])

-- The user's bought count, the seqs of their purchases when not 1..bought (else nil), and
-- live holds ("item:expires_ms" strings).
local function user_state(user, skip_item)
  local bought, seqs, holds = 0, nil, {}
  local state = redis.call('HGET', USERS, user)
  if state then
    local first = true
    for part in string.gmatch(state, '[^,]+') do
      if first then
        local count, listed = string.match(part, '^(%d+)/?(.*)$')
        bought, first = tonumber(count), false
        if listed ~= '' then
          seqs = listed
        end
      elseif tonumber(string.match(part, ':(%d+)$')) > now
          and string.match(part, '^(%d+):') ~= skip_item then
        holds[#holds + 1] = part
      end
    end
  end
  return bought, holds, seqs
end

local function save_user(user, bought, holds, seqs)
  local state = tostring(bought)
  if seqs then
    state = state .. '/' .. seqs
  end
  if #holds > 0 then
    state = state .. ',' .. table.concat(holds, ',')
  end
  redis.call('HSET', USERS, user, state)
end

-- The seq of a user's next purchase: its place among their purchases (PostgreSQL refuses a
-- seq taken or beyond the limit, sql/003). Past a gap left by a purchase PostgreSQL refused,
-- the lowest free one, so the user can still buy up to the limit.
local function next_seq(bought, seqs)
  if not seqs then
    return bought + 1, nil
  end
  local taken = {}
  for s in string.gmatch(seqs, '%d+') do
    taken[tonumber(s)] = true
  end
  local seq = 1
  while taken[seq] do
    seq = seq + 1
  end
  return seq, seqs .. '.' .. seq
end

-- The user's live holds in other sales, and the first expiry among them (math.huge: none);
-- nil when only the engine can know (a cluster, `others` not read yet).
local function elsewhere(user, others)
  if ledger == '' then
    if others == '?' then
      return nil
    end
    return tonumber(others), math.huge
  end
  local count, first, mine = 0, math.huge, sale_id .. ':'
  local live = redis.call('ZRANGEBYSCORE', ledger .. user, '(' .. now_s, '+inf', 'WITHSCORES')
  for i = 1, #live, 2 do
    if string.sub(live[i], 1, #mine) ~= mine then
      count, first = count + 1, math.min(first, tonumber(live[i + 1]))
    end
  end
  return count, first
end

-- A new hold into its user's ledger (on a cluster, the engine's to write).
local function ledger_add(user, item, expires)
  if ledger ~= '' then
    local key = ledger .. user
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_s)
    redis.call('ZADD', key, expires, sale_id .. ':' .. item)
    if redis.call('PTTL', key) < expires - now then
      redis.call('PEXPIREAT', key, string.format('%.0f', expires))
    end
  end
end

local function log(entry)
  redis.call('XADD', OUTBOX, '*', 'e', cjson.encode(entry))
end

local function checkout(request, item, user, code, named, others, network)
  if named ~= '1' and server_sale ~= sale_id then
    return {'wrong_sale', server_sale}
  end
  if full then
    return {'backlog'}
  end
  local outcome, expires = nil, 0
  if sale_id > server_sale or tonumber(item) > size then
    outcome = 'item_not_found'  -- not started; or beyond the size it started with
  elseif now >= closes then
    outcome = 'sale_closed'
  elseif not ready then
    return {'unready'}
  elseif named == '1' and redis.call('HLEN', SOLD) >= size then
    outcome = 'sale_closed'  -- sold out (unnamed, the running sale's items are each item_sold)
  elseif redis.call('HEXISTS', SOLD, item) == 1 then
    outcome = 'item_sold'
  else
    local h = redis.call('HGET', HOLD, item)
    local holder, held_code, held_exp
    if h then
      holder, held_code, held_exp = string.match(h, '^(.-)\t(.-)\t(%d+)$')
      held_exp = tonumber(held_exp)
    end
    if h and held_exp > now then
      if holder == user then
        -- The holder asking again gets the same hold back, not a longer one.
        outcome, code, expires = 'ok', held_code, held_exp
      else
        outcome = 'item_held'
      end
    else
      local bought, holds, seqs = user_state(user, nil)
      if bought + #holds >= limit then
        outcome = 'user_limit'
      elseif h and holder == user and now < held_exp + cooldown_ms then
        -- The item's last hold was this user's and expired a moment ago (an expired hold
        -- stays in HOLD until the item is held again).
        outcome, expires = 'cooldown', held_exp + cooldown_ms
      else
        local count, first = elsewhere(user, others)
        if count == nil then
          return {'ledger'}
        end
        if #holds + count >= holds_max then
          outcome = 'holds_max'
          for _, hold in ipairs(holds) do
            first = math.min(first, tonumber(string.match(hold, ':(%d+)$')))
          end
          expires = first < math.huge and first or 0
        else
          outcome = 'ok'
          expires = math.min(now + hold_ms, closes)
          local exp_s = string.format('%.0f', expires)
          holds[#holds + 1] = item .. ':' .. exp_s
          redis.call('HSET', HOLD, item, user .. '\t' .. code .. '\t' .. exp_s)
          redis.call('ZADD', HEXP, expires, item)
          redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. exp_s .. '\t0\t0')
          save_user(user, bought, holds, seqs)
          local gone = string.format('%.0f', closes + keep_ms)
          for _, key in ipairs({HOLD, HEXP, CODE, USERS}) do
            redis.call('PEXPIREAT', key, gone)
          end
          ledger_add(user, item, expires)
        end
      end
    end
  end
  if outcome ~= 'ok' then
    code = ''
  end
  if network == '' then
    network = cjson.null
  end
  log({'c', request, user, item, outcome, code, now_s, 0, cjson.null, cjson.null, network})
  if queueing then
    redis.call('ZADD', KEYS[9], 'XX', now, user)  -- still active: only if admitted
  end
  return {outcome, code, expires}
end

local function purchase(code)
  if not ready then
    -- Redis may have lost this sale's last decisions: rebuild it first, unless it is closed
    -- (no hold outlives its sale: PostgreSQL says whether the code was bought or expired).
    if now >= closes then
      return {'code_not_found'}
    end
    return {'unready'}
  end
  local rec = redis.call('HGET', CODE, code)
  if not rec then
    return {'code_not_found'}
  end
  local item, user, expires, paid, seq = string.match(rec, '^(%d+)\t(.-)\t(%d+)\t(%d+)\t(%d+)$')
  if paid ~= '0' then
    return {'ok', item, user, tonumber(paid), tonumber(seq)}
  end
  -- A hold never outlives its sale's open time, so this also refuses codes of a closed sale.
  if tonumber(expires) <= now then
    return {'code_expired'}
  end
  -- A sold item is never sold again: only after Redis lost writes can a live hold's item be
  -- found sold (to the purchase it lost track of).
  if redis.call('HEXISTS', SOLD, item) == 1 then
    return {'item_sold'}
  end
  local bought, holds, seqs = user_state(user, item)
  if bought >= limit then
    return {'user_limit'}  -- a hold kept beside purchases Redis had lost until a rebuild
  end
  local seq
  seq, seqs = next_seq(bought, seqs)
  redis.call('HSET', SOLD, item, user)
  local ttl = redis.call('PTTL', CODE)
  if ttl > 0 then
    redis.call('PEXPIRE', SOLD, ttl)  -- the first sale creates the hash: same end as the rest
  end
  redis.call('HDEL', HOLD, item)
  redis.call('ZREM', HEXP, item)
  save_user(user, bought + 1, holds, seqs)
  redis.call('HSET', CODE, code, item .. '\t' .. user .. '\t' .. expires .. '\t' .. now_s
    .. '\t' .. seq)
  if redis.call('HLEN', SOLD) >= size then
    -- Sold out: the sale is closed, and its keys go keep_ms from now, not from its close.
    local gone = string.format('%.0f', now + keep_ms)
    for _, key in ipairs({HOLD, HEXP, SOLD, CODE, USERS, KEYS[7]}) do
      redis.call('PEXPIREAT', key, gone)
    end
  end
  if ledger ~= '' then
    redis.call('ZREM', ledger .. user, sale_id .. ':' .. item)  -- bought: no longer a hold
  end
  if queueing and bought + 1 >= limit then
    redis.call('ZREM', KEYS[9], user)  -- done: their place goes to the next in line
  elseif queueing then
    redis.call('ZADD', KEYS[9], 'XX', now, user)
  end
  log({'p', '', user, item, 'ok', code, now_s, seq})
  return {'ok', item, user, now, seq}
end

local replies, i = {}, 13
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'c' then
    replies[#replies + 1] = checkout(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
    i = i + 8
  elseif op == 'p' then
    replies[#replies + 1] = purchase(ARGV[i + 1])
    i = i + 2
  else
    if waiting >= 2 * tonumber(ARGV[8]) then
      replies[#replies + 1] = {'backlog'}
    else
      redis.call('XADD', OUTBOX, '*', 'e', ARGV[i + 1])
      waiting = waiting + 1
      replies[#replies + 1] = {'ok'}
    end
    i = i + 2
  end
end
return replies
