-- periskope.ngx: pin from OpenResty (nginx's Lua module) without blocking
-- the worker. Everything pin does -- argument checks, pacing (including
-- periskope.limiter.shared_dict), retries and their waits, events -- runs
-- here, on the request's own coroutine; only the HTTP exchange runs on a
-- thread of nginx's thread pool (ngx.run_worker_thread), through libcurl,
-- and waits are ngx.sleep: the worker serves other requests meanwhile.
--
--   -- nginx.conf, main context:  thread_pool periskope threads=32;
--   local pnx = require "periskope.ngx"
--   local res, err, kind = pnx.pin(client, { message_id = id, time = 7 })
--
-- From rewrite_by_lua*, access_by_lua*, content_by_lua* and ngx.timer
-- callbacks: the phases whose coroutines may yield.

-- luacheck: globals ngx
local periskope = require "periskope"

local M = {
  -- The thread pool that runs the exchanges (a `thread_pool` directive).
  pool = "periskope",
}

-- The phases in which ngx.run_worker_thread and ngx.sleep may yield.
local YIELDING = { rewrite = true, access = true, content = true, timer = true }

-- Runs in a thread of the pool, in that thread's own Lua state (no upvalue
-- of the caller's reaches it; the request table is copied in, the results
-- are copied out): one exchange, through the connections this thread keeps.
function M.perform(req)
  return periskope.perform(req)
end

-- Runs in a thread of the pool: loads the module there, and nothing else.
function M.ready()
  return periskope.VERSION
end

-- How many of the pool's Lua states prepare has made in this worker.
M.prepared = 0

-- nginx makes a Lua state for a thread of the pool the first time it is
-- used, in the worker itself (about 3 ms each here): 32 pins at once on a
-- fresh worker hold it some 100 ms. From init_worker_by_lua, prepare(n)
-- makes n of them at once, from a timer, before the first pins; the pool
-- keeps them. n defaults to 32.
function M.prepare(n)
  n = n or 32
  local ok, err = ngx.timer.at(0, function()
    for _ = 1, n do
      ngx.thread.spawn(function()
        if ngx.run_worker_thread(M.pool, "periskope.ngx", "ready") then
          M.prepared = M.prepared + 1
        end
      end)
    end
  end)
  if not ok then ngx.log(ngx.WARN, "periskope: periskope.ngx.prepare: ", err) end
end

-- One exchange on the pool: what periskope.perform returned there.
local function exchange(req)
  local r = { ngx.run_worker_thread(M.pool, "periskope.ngx", "perform", req) }
  if not r[1] then
    local why = tostring(r[2])
    if why:find("not found", 1, true) then
      error(("periskope: no thread pool named '%s': add `thread_pool %s threads=32;` to"
        .. " nginx.conf's main context (outside http { })"):format(M.pool, M.pool), 0)
    end
    -- The pool is there but could not run it (no Lua VM free, say): no
    -- answer came, and the job may retry it as a network failure.
    return nil, "periskope: POST " .. req.url .. ": the thread pool could not run the request: "
      .. why, "network", 0
  end
  return r[2], r[3], r[4], r[5]
end

-- Pins as client:pin does, suspending only this request's coroutine.
-- Returns what client:pin returns; raises what it raises (a bad argument,
-- a closed client, an error from on_event), and says so when the phase
-- cannot yield or the thread pool is missing.
function M.pin(client, args)
  local phase = ngx.get_phase()
  if not YIELDING[phase] then
    error(("periskope: periskope.ngx.pin cannot wait in the %s phase (use rewrite, access, content"
      .. " or a timer; client:pin blocks the worker but works anywhere)"):format(phase), 2)
  end
  return M.drive(client:pin_job(args), exchange)
end

-- Steps job to its end on this coroutine: each "send" through
-- send(request), which returns what job:step takes; each "wait" an
-- ngx.sleep. Returns what pin returns.
function M.drive(job, send)
  local action, a, b, c = job:step()
  while true do
    if action == "send" then
      action, a, b, c = job:step(send(a))
    elseif action == "wait" then
      ngx.sleep(a)
      action, a, b, c = job:step()
    else
      return a, b, c
    end
  end
end

return M
