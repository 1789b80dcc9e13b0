-- wrk script: GET item pages of one sale with `from` and `count` varied (finding 3 of the
-- hardening review), each connection waiting PACE_MS between requests: with -c10, about
-- 1,000 pages a second. The URL's path is the sale's items route, /sales/<sale_id>/items.
local PACE_MS = 10

function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  return wrk.format("GET", wrk.path .. "?from=" .. math.random(1, 9900) ..
    "&count=" .. math.random(1, 100))
end

function delay()
  return PACE_MS
end
