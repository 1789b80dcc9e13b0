-- wrk script: POST /checkout for random users and items (a stampede on one sale).
-- SIZE and USERS can be set with: wrk ... -s checkout.lua -- <size> <users>
local size, users = 10000, 1000000

function init(args)
  size = tonumber(args[1]) or size
  users = tonumber(args[2]) or users
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  return wrk.format("POST", "/checkout?user_id=u" .. math.random(1, users) ..
    "&id=" .. math.random(1, size))
end
