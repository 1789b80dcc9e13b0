-- wrk script: GET item pages of one sale with `from` and `count` varied (finding 3 of the
-- hardening review), gzip accepted as a browser does, at a steady PAGES_PER_S (default 1,000)
-- whatever the answers' latency: each request takes the next free slot of the thread's
-- schedule (run it with -t1 and enough connections, say 20). The URL's path is the sale's
-- items route, /sales/<sale_id>/items.
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_usec; } pages_timeval;
int gettimeofday(pages_timeval *tv, void *tz);
]])
local clock = ffi.new("pages_timeval")
local interval_ms = 1000 / tonumber(os.getenv("PAGES_PER_S") or "1000")
local next_slot = nil

local function now_ms()
  ffi.C.gettimeofday(clock, nil)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_usec) / 1000
end

function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
  wrk.headers["Accept-Encoding"] = "gzip"
end

function request()
  return wrk.format("GET", wrk.path .. "?from=" .. math.random(1, 9900) ..
    "&count=" .. math.random(1, 100))
end

function delay()
  local now = now_ms()
  local slot = math.max(next_slot or now, now)
  next_slot = slot + interval_ms
  return slot - now
end
