-- wrk script: sends DEPTH requests for the URL's path in one write
-- (HTTP/1.1 pipelining); wrk counts each response. DEPTH is the script's
-- first argument (wrk ... -s bench/pipeline.lua URL -- 16), 16 by default.
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, wrk.path) end
  req = table.concat(r)
end

request = function()
  return req
end
