-- queue.lua: a sale's waiting room (docs/api.md, "Admission: the waiting room"), on Redis'
-- clock: joins, polls, the pre-queue's positions, and admissions in position order while
-- fewer than active_max admitted buyers are active.
--
-- KEYS: 1 queue    hash  late (joins after the start so far), front (the last position
--                        admitted), admitted (admissions so far), first_ms (the first one's
--                        time), shuffled ("1" once the pre-queue has its positions)
--       2 tickets  hash  ticket_id -> user \t ticket \t position (0: pre-queued, none yet)
--                        \t next_poll_ms \t admitted_ms (0: not yet) \t joined_ms \t network
--                        (the last two, `rest` below, are written once, at the join)
--       3 queuers  hash  user -> ticket_id (one ticket per user and sale)
--       4 order    zset  ticket_id by position
--       5 prequeue set   the ticket_ids that joined before the start
--       6 active   zset  admitted user by their last admission, checkout or purchase (ms):
--                        sale.lua refreshes it, and drops a user who bought the limit
--       7 since    zset  admitted user by their admission (ms)
--       8 hexp, 9 sold: the sale's own (sale.lua's), for what remains of it
-- ARGV: 1 starts_ms  2 opens_ms (the pre-queue's)  3 closes_ms  4 size  5 active_max
--       6 admission_ms (an admission is good for this long)  7 idle_ms (an admitted user
--       with no admission, checkout or purchase for this long is no longer active)
--       8 keep_ms (how long the keys outlive the sale's close)  9 open ("1": every join is
--       admitted at once)  10 op, then its arguments:
--         "join", user, ticket, ticket_id, network: the user's ticket, new or theirs already
--         "poll", ticket_id
--         "order", ticket_id...: the pre-queue in position order (the engine's shuffle)
--         "list", offset, count: pre-queued tickets in position order
-- Returns, for join and poll: {"ok", user, ticket, ticket_id, position (0: pre-queued),
--   admitted_ms (0: not yet), poll_after_ms, remaining, front, admitted, first_ms, now},
--   {"too_early", ms until the ticket may poll}, {"unknown"} (no such ticket), {"not_open"}
--   (the queue opens later), {"closed"} (closed or sold out: a new join only), or {"shuffle"} (the
--   pre-queue needs its positions first: nothing was changed);
-- for order: {"ok"}; for list: {prequeued, ticket_id, position, ...}, {"not_started"} (on
-- Redis' clock, which decides what is pre-queued) or {"shuffle"}.

local QUEUE, TICKETS, QUEUERS, ORDER, PREQUEUE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ACTIVE, SINCE, HEXP, SOLD = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local starts, opens, closes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local size, active_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local admission_ms, idle_ms, keep_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local open, op = ARGV[9] == '1', ARGV[10]
-- Users dropped, and tickets admitted, per run at most: a run stays short whatever the queue.
local STEP = 1000
local POLL_WAITING_MS, POLL_ADMITTED_MS, POLL_PREQUEUED_MS = 1000, 5000, 5000

local function fmt(n)
  return string.format('%.0f', n)
end

local function parse(rec)
  local user, ticket, position, next_poll, admitted, rest =
    string.match(rec, '^(.-)\t(.-)\t(%d+)\t(%d+)\t(%d+)\t(.*)$')
  return user, ticket, tonumber(position), tonumber(next_poll), tonumber(admitted), rest
end

local function record(user, ticket, position, next_poll, admitted, rest)
  return table.concat({user, ticket, fmt(position), fmt(next_poll), fmt(admitted), rest}, '\t')
end

local function remaining()
  local held = redis.call('ZCOUNT', HEXP, '(' .. fmt(now), '+inf')
  return math.max(0, size - redis.call('HLEN', SOLD) - held)
end

local function shuffle_pending()
  return not open and now >= starts and redis.call('HGET', QUEUE, 'shuffled') ~= '1'
    and redis.call('SCARD', PREQUEUE) > 0
end

-- Admitted users who are done: idle for idle_ms, or admitted admission_ms ago.
local function prune()
  for _, spec in ipairs({{ACTIVE, idle_ms}, {SINCE, admission_ms}}) do
    local gone = redis.call('ZRANGEBYSCORE', spec[1], '-inf', fmt(now - spec[2]), 'LIMIT', 0, STEP)
    if #gone > 0 then
      redis.call('ZREM', ACTIVE, unpack(gone))
      redis.call('ZREM', SINCE, unpack(gone))
    end
  end
end

-- The next positions, while the sale has room for more active buyers and items to sell.
local function admit()
  if open or now < starts or now >= closes or remaining() == 0 then
    return
  end
  local room = math.min(active_max - redis.call('ZCARD', ACTIVE), STEP)
  if room <= 0 then
    return
  end
  local front = tonumber(redis.call('HGET', QUEUE, 'front') or '0')
  local next = redis.call('ZRANGEBYSCORE', ORDER, '(' .. fmt(front), '+inf', 'WITHSCORES',
    'LIMIT', 0, room)
  if #next == 0 then
    return
  end
  for i = 1, #next, 2 do
    local id = next[i]
    local user, ticket, position, next_poll, _, rest = parse(redis.call('HGET', TICKETS, id))
    redis.call('HSET', TICKETS, id, record(user, ticket, position, next_poll, now, rest))
    redis.call('ZADD', ACTIVE, now, user)
    redis.call('ZADD', SINCE, now, user)
    front = tonumber(next[i + 1])
  end
  redis.call('HSET', QUEUE, 'front', fmt(front))
  redis.call('HINCRBY', QUEUE, 'admitted', #next / 2)
  redis.call('HSETNX', QUEUE, 'first_ms', fmt(now))
end

local function keep()
  local gone = fmt(closes + keep_ms)
  for k = 1, 7 do
    redis.call('PEXPIREAT', KEYS[k], gone)
  end
end

-- A ticket's state; `polled`: a poll (or a join again), refused while too early.
local function answer(id, polled)
  if shuffle_pending() then
    return {'shuffle'}
  end
  local rec = redis.call('HGET', TICKETS, id)
  if not rec then
    return {'unknown'}
  end
  local _, _, _, next_poll = parse(rec)
  if polled and now < next_poll then
    return {'too_early', next_poll - now}
  end
  prune()
  admit()
  local user, ticket, position, _, admitted, rest = parse(redis.call('HGET', TICKETS, id))
  local poll_after = POLL_WAITING_MS
  if admitted > 0 then
    poll_after = POLL_ADMITTED_MS
  elseif now < starts then
    poll_after = math.max(500, math.min(starts - now, POLL_PREQUEUED_MS))
  end
  redis.call('HSET', TICKETS, id, record(user, ticket, position, now + poll_after, admitted,
    rest))
  local state = redis.call('HMGET', QUEUE, 'front', 'admitted', 'first_ms')
  return {'ok', user, ticket, id, position, admitted, poll_after, remaining(),
    tonumber(state[1] or '0'), tonumber(state[2] or '0'), tonumber(state[3] or '0'), now}
end

local function join(user, ticket, id, network)
  if now < opens then
    return {'not_open'}
  end
  local mine = redis.call('HGET', QUEUERS, user)
  if mine then
    return answer(mine, true)  -- theirs, sold out or not: it says so
  end
  if now >= closes or redis.call('HLEN', SOLD) >= size then
    return {'closed'}
  end
  if shuffle_pending() then
    return {'shuffle'}  -- a late join's position comes after the pre-queue's
  end
  local position, admitted = 0, 0
  if open or now >= starts then
    position = redis.call('SCARD', PREQUEUE) + redis.call('HINCRBY', QUEUE, 'late', 1)
    redis.call('ZADD', ORDER, position, id)
  else
    redis.call('SADD', PREQUEUE, id)
  end
  if open then
    admitted = now
    redis.call('HINCRBY', QUEUE, 'admitted', 1)
    redis.call('HSET', QUEUE, 'front', fmt(position))
    redis.call('HSETNX', QUEUE, 'first_ms', fmt(now))
  end
  redis.call('HSET', TICKETS, id, record(user, ticket, position, 0, admitted,
    fmt(now) .. '\t' .. network))
  redis.call('HSET', QUEUERS, user, id)
  keep()
  return answer(id, false)
end

if op == 'join' then
  return join(ARGV[11], ARGV[12], ARGV[13], ARGV[14])
elseif op == 'poll' then
  return answer(ARGV[11], true)
elseif op == 'order' then
  if redis.call('HGET', QUEUE, 'shuffled') ~= '1' then
    for i = 11, #ARGV do
      local id, position = ARGV[i], i - 10
      local user, ticket, _, next_poll, admitted, rest = parse(redis.call('HGET', TICKETS, id))
      redis.call('HSET', TICKETS, id, record(user, ticket, position, next_poll, admitted, rest))
      redis.call('ZADD', ORDER, position, id)
    end
    redis.call('HSET', QUEUE, 'shuffled', '1')
    keep()
  end
  return {'ok'}
else  -- list
  if now < starts then
    return {'not_started'}  -- the pre-queue is still open: no positions, and no seed, yet
  end
  if shuffle_pending() then
    return {'shuffle'}
  end
  local prequeued = redis.call('SCARD', PREQUEUE)
  local first, count = tonumber(ARGV[11]), tonumber(ARGV[12])
  local last = math.min(first + count, prequeued)
  local reply = {prequeued}
  if first < last then
    local found = redis.call('ZRANGEBYSCORE', ORDER, fmt(first + 1), fmt(last), 'WITHSCORES')
    for i = 1, #found do
      reply[#reply + 1] = found[i]
    end
  end
  return reply
end
