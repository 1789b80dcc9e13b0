-- wrk script: purchases. Each thread first checks out CODES items (one user per item, so no
-- user limit is met), then buys them again and again: every answer, first or repeated,
-- waits for its row's commit in PostgreSQL, so this measures the purchase path.
-- Args: wrk ... -s purchase.lua -- <codes per thread> <size>
local want, size = 200, 10000
local codes, next_code, asked = {}, 0, 0

function init(args)
  want = tonumber(args[1]) or want
  size = tonumber(args[2]) or size
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  if #codes < want and asked < want * 20 then
    asked = asked + 1
    return wrk.format("POST", "/checkout?user_id=p" .. math.random(1, 1000000000) ..
      "&id=" .. math.random(1, size))
  end
  next_code = next_code % #codes + 1
  return wrk.format("POST", "/purchase?code=" .. codes[next_code])
end

function response(status, headers, body)
  local code = string.match(body, '"code":"([^"]+)"')
  if status == 200 and code then
    table.insert(codes, code)
  end
end
