-- periskope.ngx: pin from OpenResty (nginx's Lua module) without blocking
-- the worker. nginx is the transport: the pin job (client:pin_job with
-- io = "bytes") frames the request and reads the answer in C, and this
-- file only moves the bytes over a cosocket -- connect through nginx's
-- resolver, TLS with nginx's verification (lua_ssl_trusted_certificate),
-- a keep-alive pool per origin. Everything else pin does -- argument
-- checks, pacing (the shared-dict and Redis limiters too), retries and
-- their waits (ngx.sleep), events, the circuit -- runs in the job, on the
-- request's own coroutine. A cosocket is work nginx waits for: an answer
-- in flight survives `nginx -s reload` and a graceful quit.
--
--   local pnx = require "periskope.ngx"
--   local res, err, kind = pnx.pin(client, { message_id = id, time = 7 })
--
-- From rewrite_by_lua*, access_by_lua*, content_by_lua* and ngx.timer
-- callbacks: the phases whose coroutines may yield. nginx.conf needs
-- `resolver` for a host name (Periskope's), and `lua_ssl_trusted_certificate`
-- for https (the client's ca_file is not what nginx verifies with).

-- luacheck: globals ngx

local M = {
  -- Idle connections kept per origin and worker (setkeepalive's pool).
  pool_size = 32,
}

local BYTES = { io = "bytes" }

-- The phases in which cosockets and ngx.sleep may yield.
local YIELDING = { rewrite = true, access = true, content = true, timer = true }

-- The text client:pin raises for the same arguments: pin_job's errors name
-- pin_job, or '?' when called through pcall.
local function as_pin(err)
  if type(err) ~= "string" then return err end
  return (err:gsub("^bad argument #%d+ to '[^']*'", "bad argument #1 to 'pin'"))
end

-- Steps job to its end on this coroutine, doing each socket call it asks
-- for on one cosocket and handing the call's results back unchanged.
-- Returns what client:pin returns; raises what it raises (the socket is
-- closed first).
function M.drive(job)
  local sock
  local function run()
    local action, a, b, c = job:step()
    while true do
      if action == "connect" then
        sock = ngx.socket.tcp()
        sock:settimeout(a.timeout * 1000)
        local ok, err = sock:connect(a.host, a.port, { pool = a.pool })
        action, a, b, c = job:step(ok, err, ok and sock:getreusedtimes() or 0)
      elseif action == "handshake" then
        sock:settimeout(b * 1000)
        action, a, b, c = job:step(sock:sslhandshake(false, a, true))
      elseif action == "write" then
        sock:settimeout(b * 1000)
        action, a, b, c = job:step(sock:send(a))
      elseif action == "read" then
        sock:settimeout(b * 1000)
        if a > 0 then
          action, a, b, c = job:step(sock:receive(a))
        else
          action, a, b, c = job:step(sock:receiveany(65536))
        end
      elseif action == "release" then
        if not (a and sock:setkeepalive(b * 1000, M.pool_size)) then sock:close() end
        sock = nil
        action, a, b, c = job:step()
      elseif action == "wait" then
        ngx.sleep(a > 0.001 and a or 0.001)
        action, a, b, c = job:step()
      else
        return a, b, c
      end
    end
  end
  local r = { pcall(run) }
  if not r[1] then
    if sock then sock:close() end
    error(r[2], 0)
  end
  return r[2], r[3], r[4]
end

-- Pins as client:pin does, suspending only this request's coroutine.
-- Returns what client:pin returns; raises what it raises (a bad argument,
-- a closed client, an error from on_event), with the same text, and says
-- so when the phase cannot yield.
function M.pin(client, args)
  local phase = ngx.get_phase()
  if not YIELDING[phase] then
    error(("periskope: periskope.ngx.pin cannot wait in the %s phase (use rewrite, access, content"
      .. " or a timer; client:pin blocks the worker but works anywhere)"):format(phase), 0)
  end
  local ok, job = pcall(client.pin_job, client, args, BYTES)
  if not ok then error(as_pin(job), 0) end
  return M.drive(job)
end

return M
