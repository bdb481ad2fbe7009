-- The locations of make bench-nonblocking's nginx (bench/nonblocking.lua
-- starts it with the OpenResty example's files as they are, plus these):
--
--   /pin/ngx    periskope.ngx.pin on the example's client (made in
--               init_by_lua: timeout 10, the shared-dict limiter, on_event)
--   /pin/plain  periskope.ngx.pin on a client with default options (its
--               own pacing, no limiter, no hook), made in the worker
--   /pin/hand   the same request written by hand over ngx.socket.tcp
--   /pin/redis  periskope.ngx.pin through periskope.limiter.redis on
--               127.0.0.1:BENCH_NB_REDIS_PORT
--   /pin/dict   periskope.ngx.pin through periskope.limiter.shared_dict of
--               a proxy table that times the lock's waits (below)
--   /t/stats    what the proxy and the hooks counted, as JSON
--
-- Each /pin/* answers 200 and the pin's status when Periskope answered
-- 204, 502 and the kind or status otherwise: the load generator checks
-- every answer by its status. ?id= names the message.
-- luacheck: globals ngx
local periskope = require "periskope"
local pnx = require "periskope.ngx"
local clock = require "bench.clock"
local cjson = require "cjson"

local M = {}

local STATS = "bench_nb" -- lua_shared_dict of bench/nonblocking.lua

local function opts(extra)
  local o = {
    api_key = os.getenv("PERISKOPE_API_KEY"),
    phone = os.getenv("PERISKOPE_PHONE"),
    base_url = os.getenv("PERISKOPE_BASE_URL"),
    timeout = 10,
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Counts an event of a client in the stats dictionary (the "limiter"
-- events: a store that failed, a pin paced by its worker alone).
local function count_events(ev)
  if ev.type == "limiter" or ev.type == "failure" then
    ngx.shared[STATS]:incr("event:" .. ev.type, 1, 0)
  end
end

local function answer(res, err, kind)
  if res and res.status == 204 then
    ngx.say("204")
    return
  end
  ngx.status = 502
  ngx.say(res and res.status or kind, " ", res and res.error or err)
end

------------------------------------------------------------------------------
-- The pin written by hand: what a user would write over a cosocket without
-- periskope, as lua-resty-http does it but no more (status line and header
-- lines read one by one, Content-Length, keep-alive). The request is
-- periskope's own (client:build_pin's URL, headers and body, read once);
-- the message id is percent-encoded per pin.

local hand -- host, port, the path before the id, the rest of the request

local function hand_setup()
  local c = periskope.new(opts())
  local req = c:build_pin { message_id = "ID" }
  c:close()
  local host, port, prefix = req.url:match("^http://([^/:]+):(%d+)(/.*/message/)ID/pin$")
  assert(host, "bench: the by-hand pin speaks plain http to host:port only")
  local lines = {}
  for name, value in pairs(req.headers) do lines[#lines + 1] = name .. ": " .. value .. "\r\n" end
  table.sort(lines)
  hand = {
    host = host, port = tonumber(port), prefix = "POST " .. prefix,
    rest = "/pin HTTP/1.1\r\nHost: " .. host .. ":" .. port .. "\r\n" .. table.concat(lines)
      .. "Content-Length: " .. #req.body .. "\r\n\r\n" .. req.body,
  }
end

-- One pin by hand: the status, or nil and what failed.
local function hand_pin(id)
  if not hand then hand_setup() end
  local sock = ngx.socket.tcp()
  sock:settimeouts(10000, 10000, 10000)
  local ok, err = sock:connect(hand.host, hand.port)
  if not ok then return nil, "connect: " .. err end
  ok, err = sock:send(hand.prefix .. ngx.escape_uri(id) .. hand.rest)
  if not ok then
    sock:close()
    return nil, "send: " .. err
  end
  local line
  line, err = sock:receive("*l")
  local status = line and tonumber(line:match("^HTTP/1%.[01] (%d%d%d)"))
  if not status then
    sock:close()
    return nil, "status line: " .. tostring(err or line)
  end
  local length, close = 0, false
  while true do
    line, err = sock:receive("*l")
    if not line then
      sock:close()
      return nil, "head: " .. err
    end
    if line == "" then break end
    local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    if not name then
      sock:close()
      return nil, "bad header line"
    end
    name = name:lower()
    if name == "content-length" then
      length = tonumber(value)
    elseif name == "connection" then
      close = value:lower() == "close"
    elseif name == "transfer-encoding" then
      sock:close()
      return nil, "a chunked body: not read by hand"
    end
  end
  if status ~= 204 and status ~= 304 and status >= 200 and (length or 0) > 0 then
    ok, err = sock:receive(length)
    if not ok then
      sock:close()
      return nil, "body: " .. err
    end
  end
  -- Below the server's Keep-Alive: timeout=5, so no kept connection is
  -- closed by the server under a request.
  if close then sock:close() else sock:setkeepalive(4000, pnx.pool_size) end
  return status
end

------------------------------------------------------------------------------
-- The shared dictionary's lock, timed from outside: the limiter calls
-- get/set/add/delete on whatever table it is given, and takes its lock
-- with add("<name>:lock", token, ttl), which returns false, "exists" while
-- another worker holds it. A request's wait is the time from its first
-- "exists" to its add that succeeds (the job asks again after an ngx.sleep
-- of 1 ms); the coroutine that calls add is the request's. Each wait goes
-- into the list "waits" of the stats dictionary; one still open when its
-- pin ended (given up) goes into "given_up". How long each take held the
-- lock (from its add to its delete of the lock) goes into "holds".

local waiting = setmetatable({}, { __mode = "k" }) -- coroutine -> when its wait began
local holding = setmetatable({}, { __mode = "k" }) -- coroutine -> when it took the lock

local function lock_proxy(dict)
  local stats = ngx.shared[STATS]
  return {
    get = function(_, k) return dict:get(k) end,
    set = function(_, k, v, ttl) return dict:set(k, v, ttl) end,
    delete = function(_, k)
      local ok, err = dict:delete(k)
      local co = coroutine.running()
      if holding[co] and k:sub(-5) == ":lock" then
        stats:rpush("holds", clock.now() - holding[co])
        holding[co] = nil
      end
      return ok, err
    end,
    add = function(_, k, v, ttl)
      local ok, err, forcible = dict:add(k, v, ttl)
      if k:sub(-5) == ":lock" then
        local co = coroutine.running()
        if ok then
          stats:incr("locks", 1, 0)
          holding[co] = clock.now()
          local began = waiting[co]
          if began then
            waiting[co] = nil
            stats:rpush("waits", clock.now() - began)
          end
        elseif err == "exists" then
          stats:incr("busy", 1, 0)
          waiting[co] = waiting[co] or clock.now()
        end
      end
      return ok, err, forcible
    end,
  }
end

------------------------------------------------------------------------------
-- The clients of this worker, made on first use.

local clients = {}

local function client(name)
  local c = clients[name]
  if c then return c end
  if name == "ngx" then -- the example's client
    c = require("pin_handlers").client
  elseif name == "plain" then
    c = periskope.new(opts())
  elseif name == "redis" then
    c = periskope.new(opts {
      limiter = periskope.limiter.redis { host = "127.0.0.1", port = tonumber(os.getenv("BENCH_NB_REDIS_PORT")) },
      on_event = count_events,
    })
  elseif name == "dict" then
    c = periskope.new(opts {
      limiter = periskope.limiter.shared_dict(lock_proxy(ngx.shared.periskope)),
      on_event = count_events,
    })
  end
  clients[name] = c
  return c
end

-- GET /pin/<name>?id=...: one pin, answered as above.
function M.pin(name)
  local id = ngx.var.arg_id
  if name == "hand" then
    local status, err = hand_pin(id)
    return answer(status and { status = status }, err, "hand")
  end
  local res, err, kind = pnx.pin(client(name), { message_id = id })
  if name == "dict" then
    ngx.shared[STATS]:incr("worker:" .. ngx.worker.pid(), 1, 0)
    local co = coroutine.running()
    if waiting[co] then
      ngx.shared[STATS]:rpush("given_up", clock.now() - waiting[co])
      waiting[co] = nil
    end
  end
  return answer(res, err, kind)
end

-- GET /t/lag?on=1 starts, in the worker that serves it, a timer whose
-- coroutine sleeps 1 ms (ngx.sleep) again and again and notes how much
-- longer than 1 ms each sleep took: how long the worker's event loop was
-- held by other work. GET /t/lag (without on) stops it and answers the
-- longest, in ms.
local lag = { on = false, max = 0 }

function M.lag()
  if ngx.var.arg_all then
    ngx.shared[STATS]:set("lag_all", ngx.var.arg_all == "1" or nil)
    ngx.say("ok")
  elseif ngx.var.arg_on then
    lag.on, lag.max = true, 0
    ngx.timer.at(0, function()
      while lag.on do
        local t0 = clock.now()
        ngx.sleep(0.001)
        local over = clock.now() - t0 - 0.001
        if over > lag.max then lag.max = over end
      end
    end)
    ngx.say("on")
  else
    lag.on = false
    ngx.say(("%.3f"):format(lag.max * 1e3))
  end
end

-- For init_worker_by_lua: the same 1 ms sleeper in every worker, from its
-- start, each keeping its longest oversleep in the stats dictionary
-- ("lag:<pid>", ms) while the dictionary's "lag_all" is set (GET
-- /t/lag?all=1 sets it, /t/lag?all=0 clears it).
function M.init_worker()
  ngx.timer.at(0, function()
    local d, key, max = ngx.shared[STATS], "lag:" .. ngx.worker.pid(), 0
    while not ngx.worker.exiting() do
      if d:get("lag_all") then
        local t0 = clock.now()
        ngx.sleep(0.001)
        local over = (clock.now() - t0 - 0.001) * 1e3
        if over > max then
          max = over
          d:set(key, max)
        end
      else
        max = 0
        ngx.sleep(0.01)
      end
    end
  end)
end

-- GET /t/stats: the counters and the lock's waits, as JSON; reading them
-- forgets them.
function M.stats()
  local d = ngx.shared[STATS]
  local function list(key)
    local t = {}
    while true do
      local v = d:lpop(key)
      if v == nil then break end
      t[#t + 1] = v
    end
    return t
  end
  local out = {
    locks = d:get("locks") or 0, busy = d:get("busy") or 0,
    limiter_events = d:get("event:limiter") or 0, failure_events = d:get("event:failure") or 0,
    waits = list("waits"), given_up = list("given_up"), holds = list("holds"), workers = 0, lag_max = 0,
  }
  for _, k in ipairs(d:get_keys(0)) do
    if k:find("^worker:") then out.workers = out.workers + 1 end
    if k:find("^lag:") then out.lag_max = math.max(out.lag_max, d:get(k)) end
  end
  d:flush_all()
  ngx.say(cjson.encode(out))
end

return M
