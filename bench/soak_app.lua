-- make soak, the app nginx's side (bench/soak.lua writes the nginx.conf
-- that loads it): a client made in init_by_lua, at each start and each
-- reload, on the shared-dictionary limiter, pinning through
-- periskope.ngx.pin from two callers:
--   - a content handler, GET /pin?id=<message id>, which the soak's curl
--     lanes ask, answering "<status> <attempts>" or "<kind> -" (text/plain);
--   - timers: `chains` chains per worker, each pinning one message after
--     the other while the soak runs (ids t<pid>-<start ms>-<chain>-<n>).
-- Each pin is written to the shared dictionary "soak", which outlives
-- reloads: q:<id> = "<caller> <worker pid>" before the call, o:<id> = its
-- outcome after it (added once: a second outcome is counted in
-- double_outcomes), s:<id> = the "request" events of its job (the
-- attempts it sent). GET /soak/dump gives them all, one "key<TAB>value"
-- a line; /soak/go and /soak/stop start and stop the timers.

-- luacheck: globals ngx
local M = {}

local function dict() return ngx.shared.soak end

-- Counts key in the dictionary; says so in the error log when the
-- dictionary had to evict something for it (the accounting would then be
-- wrong: the soak looks for "soak: the dictionary").
local function count(key)
  local _, err, forcible = dict():incr(key, 1, 0)
  if err or forcible then ngx.log(ngx.ERR, "soak: the dictionary is full: ", err or "evicted") end
end

-- What periskope.ngx drives its exchanges with, for the figures: the
-- cosockets made, counted by wrapping ngx.socket.tcp before periskope.ngx
-- is loaded.
local function counted(key, f)
  return function(...)
    count(key)
    return f(...)
  end
end
ngx.socket.tcp = counted("n:cosocket", ngx.socket.tcp)

local periskope = require "periskope"
local pnx = require "periskope.ngx"

-- In init_by_lua (the master, at start and at each reload): the client.
-- o: api_key, phone, base_url, timeout, chains.
function M.init(o)
  M.chains = o.chains
  M.client = periskope.new {
    api_key = o.api_key,
    phone = o.phone,
    base_url = o.base_url,
    timeout = o.timeout,
    connect_timeout = o.timeout,
    limiter = periskope.limiter.shared_dict(ngx.shared.soak_pacing),
    -- In the worker, on the pin's coroutine.
    on_event = function(ev)
      if ev.type == "request" then
        local id = ev.url:match("/message/([^/]+)/pin$")
        if id then count("s:" .. id) end
      elseif ev.type == "failure" then
        -- attempt 0: a failure without a request of its own.
        count("ev:failure:" .. tostring(ev.kind) .. (ev.attempt == 0 and " (not sent)" or ""))
      elseif ev.type == "limiter" or ev.type == "circuit" or ev.type == "wait" then
        count("ev:" .. ev.type .. ":" .. tostring(ev.state or ev.reason or "store"))
        if ev.type == "circuit" then ngx.log(ngx.WARN, "soak: circuit ", ev.state) end
      end
    end,
  }
end

-- Pins message id for caller ("c" content, "t" timer) and writes it down;
-- returns the outcome as written: "<status> <attempts> <seconds>" or
-- "<kind> - <seconds>".
function M.pin_one(id, caller)
  local d = dict()
  local ok, err, forcible = d:safe_set("q:" .. id, caller .. " " .. ngx.worker.pid())
  if not ok or forcible then ngx.log(ngx.ERR, "soak: the dictionary is full: ", err or "evicted") end
  count("n:requested")
  ngx.update_time()
  local t0 = ngx.now()
  local done, res, msg, kind = pcall(pnx.pin, M.client, { message_id = id, time = 7 })
  ngx.update_time()
  local took = (" %.3f"):format(ngx.now() - t0)
  local out
  if not done then
    out = "raised - " .. took .. " " .. (tostring(res):gsub("%s+", " "))
  elseif res then
    out = res.status .. " " .. res.attempts .. took
  elseif kind == nil then
    out = "nokind - " .. took .. " " .. tostring(msg)
  else
    out = kind .. " -" .. took
  end
  ok, err = d:safe_add("o:" .. id, out)
  if ok then
    count("n:outcomes")
  elseif err == "exists" then
    count("double_outcomes")
  else
    ngx.log(ngx.ERR, "soak: the dictionary is full: ", err)
  end
  return out
end

-- GET /pin?id=<message id>
function M.content()
  local id = ngx.var.arg_id
  if not id or not id:match("^[%w%-]+$") then
    ngx.status = 400
    ngx.say("give ?id=<letters, digits and dashes>")
    return ngx.exit(400)
  end
  local out = M.pin_one(id, "c")
  ngx.header["Content-Type"] = "text/plain"
  ngx.say(out)
end

-- One link of a timer chain: pins once while the soak runs (before "go",
-- waits for it), then schedules the next link, until "stop" or the worker
-- exits (a reload).
local function chain(premature, tag, k, n)
  if premature then return end
  local d = dict()
  if d:get("stop") then return end
  local go, delay = d:get("go"), 0.1
  if go then
    n = n + 1
    local out = M.pin_one(("t%s-%d-%d"):format(tag, k, n), "t")
    -- A pin that sent nothing (the circuit open, the budget spent past
    -- max_retry_wait) ends at once: pause after one rather than spin.
    delay = (out:find("^unavailable") or out:find("^rate_limited")) and 0.5 or 0
  end
  if ngx.worker.exiting() then return end
  local ok, err = ngx.timer.at(delay, chain, tag, k, n)
  if not ok and not ngx.worker.exiting() then ngx.log(ngx.ERR, "soak: timer: ", err) end
end

-- In init_worker_by_lua: the timer chains.
function M.init_worker()
  -- pid and start time: a pid may come back in a later generation.
  local tag = ("%d-%d"):format(ngx.worker.pid(), math.floor(ngx.now() * 1000))
  for k = 1, M.chains do
    local ok, err = ngx.timer.at(0, chain, tag, k, 0)
    if not ok then ngx.log(ngx.ERR, "soak: timer: ", err) end
  end
end

-- GET /soak/go, /soak/stop
function M.go()
  dict():set("go", true)
  ngx.say("go")
end

function M.stop()
  dict():set("stop", true)
  ngx.say("stop")
end

-- GET /soak/count: "<requested> <outcomes>", for the progress lines.
function M.count()
  local d = dict()
  ngx.say((d:get("n:requested") or 0), " ", (d:get("n:outcomes") or 0))
end

-- GET /soak/dump: every key and value of the dictionary, and how many
-- keys the pacing dictionary holds.
function M.dump()
  local d = dict()
  local out = { "pacing_keys\t" .. #ngx.shared.soak_pacing:get_keys(0) .. "\n" }
  for _, key in ipairs(d:get_keys(0)) do
    local v = d:get(key)
    if v ~= nil then out[#out + 1] = key .. "\t" .. tostring(v) .. "\n" end
  end
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(out)
end

return M
