-- wrk script: the realistic mix. Each connection checks out a random item for a random user;
-- when that succeeds, its next request buys the code it got.
-- Args: wrk ... -s mix.lua -- <size> <users>
local size, users = 10000, 1000000
local codes = {}  -- codes waiting to be bought, per wrk thread

function init(args)
  size = tonumber(args[1]) or size
  users = tonumber(args[2]) or users
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  local code = table.remove(codes)
  if code then
    return wrk.format("POST", "/purchase?code=" .. code)
  end
  return wrk.format("POST", "/checkout?user_id=u" .. math.random(1, users) ..
    "&id=" .. math.random(1, size))
end

function response(status, headers, body)
  if status == 200 then
    local code = string.match(body, '"code":"([^"]+)"')
    if code then
      table.insert(codes, code)
    end
  end
end
