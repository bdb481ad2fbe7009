-- Drives periskope.uv in a loop of its own for spec/uv_spec.lua: inside
-- `nvim --headless` (`-c "luafile ..."`, vim.loop) or under plain luv
-- (`lua5.4 uv_driver.lua`). It runs the scenarios the spec names and
-- writes what happened as JSON to $PERISKOPE_UV_OUT (a headless nvim's
-- stdout is its UI channel: a file is the sure way out).
--
-- Environment: PERISKOPE_UV_CPATH (the module's build), PERISKOPE_UV_PATH
-- (the checkout's lua/?.lua), PERISKOPE_UV_OUT, PERISKOPE_UV_KEY,
-- PERISKOPE_UV_BASE_URL; PERISKOPE_UV_SCENARIO: "all" or "quit" (pins
-- left in flight for :qa!).

-- luacheck: globals vim
package.cpath = os.getenv("PERISKOPE_UV_CPATH") .. ";" .. package.cpath
package.path = os.getenv("PERISKOPE_UV_PATH") .. ";" .. package.path

local nvim = type(vim) == "table"
local uv = nvim and (vim.uv or vim.loop) or require "luv"
local cjson = nvim and { encode = vim.json and vim.json.encode or vim.fn.json_encode }
  or require("cjson")
local periskope = require "periskope"
local puv = require "periskope.uv"

local result = {}

local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

-- Runs the loop until cond() holds, at most `seconds`.
local function run_until(seconds, cond)
  if nvim then return vim.wait(seconds * 1000, cond, 5) end
  local deadline = uv.hrtime() + seconds * 1e9
  local t = uv.new_timer()
  t:start(5, 5, function() end)    -- the loop wakes to look again
  while not cond() and uv.hrtime() < deadline do uv.run("once") end
  t:close()
  return cond()
end

-- A 10 ms timer on the loop; stop() ends it and returns the longest
-- time between two of its ticks, in ms (how long the loop was held).
local function ticker()
  local gap, last = 0, uv.hrtime()
  local timer = uv.new_timer()
  timer:start(10, 10, function()
    local now = uv.hrtime()
    gap = math.max(gap, (now - last) / 1e6)
    last = now
  end)
  return { stop = function()
    timer:stop()
    timer:close()
    return gap
  end }
end

local function client(opts)
  local o = { api_key = os.getenv("PERISKOPE_UV_KEY"), base_url = os.getenv("PERISKOPE_UV_BASE_URL"),
    phone = "919874532456", timeout = 10 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return periskope.new(o)
end

-- A pin whose callbacks are counted: calls[i] = { res status, err, kind, ms }.
local handles = setmetatable({}, { __mode = "k" })

local function counted(c, id, t0)
  local rec = { n = 0 }
  handles[rec] = puv.pin(c, { message_id = id }, function(res, err, kind)
    rec.n = rec.n + 1
    rec.status, rec.err, rec.kind = res and res.status, err and tostring(err), kind
    rec.ms = ms_since(t0)
  end)
  return rec
end

local function scenarios()
  -- Warm: the first pin learns the budget.
  local c = client()
  local t0 = uv.hrtime()
  local warm = counted(c, "warm", t0)
  run_until(10, function() return warm.n > 0 end)
  result.warm = warm.status

  -- 1. Four pins against a server that answers after 2 s; meanwhile an
  --    fs_stat of the host's own, and a 10 ms timer.
  local pins = {}
  t0 = uv.hrtime()
  for i = 1, 4 do pins[i] = counted(c, "slow" .. i, t0) end
  local ticks = ticker()
  run_until(0.2, function() return false end)   -- the pins are under way
  local stat_ms
  local s0 = uv.hrtime()
  uv.fs_stat("/", function() stat_ms = ms_since(s0) end)
  run_until(10, function() return pins[4].n > 0 and stat_ms ~= nil end)
  result.slow = { stat_ms = stat_ms, gap = ticks.stop(), pins = pins }

  -- 2. The client closed while a pin waits for its answer.
  local closing = client()
  assert(closing:pin { message_id = "warm2" }.status == 204)
  t0 = uv.hrtime()
  local rec = counted(closing, "closed", t0)
  run_until(0.3, function() return false end)
  local closed_at = ms_since(t0)
  closing:close()
  run_until(5, function() return rec.n > 0 end)
  rec.after_close_ms = rec.ms and rec.ms - closed_at
  result.closed = rec

  -- 3. on_event raises at the answer.
  local raising = client { on_event = function(ev) if ev.type == "response" then error("boom in the hook") end end }
  rec = counted(raising, "raising", uv.hrtime())
  run_until(5, function() return rec.n > 0 end)
  result.raised = rec
  raising:close()

  -- 4. Cancelled while in flight; cancel again; and after the end.
  t0 = uv.hrtime()
  rec = counted(c, "cancelled", t0)
  run_until(0.3, function() return false end)
  local at = ms_since(t0)
  rec.first_cancel = handles[rec]:cancel()
  rec.second_cancel = handles[rec]:cancel()
  run_until(2, function() return rec.n > 0 end)
  rec.after_cancel_ms = rec.ms and rec.ms - at
  run_until(0.3, function() return false end)   -- no second callback comes
  result.cancelled = rec

  -- 5. A callback that raises ends nothing: the next pin still comes back.
  local after
  puv.pin(c, { message_id = "cb-raises" }, function() error("the caller's own bug") end)
  local done = counted(c, "after-raise", uv.hrtime())
  run_until(5, function() return done.n > 0 end)
  after = done.status
  result.after_raise = after

  -- 6. In a coroutine, without a callback.
  local co_res
  coroutine.wrap(function()
    local res, _, kind = puv.pin(c, { message_id = "co" })
    co_res = res and res.status or kind
  end)()
  run_until(5, function() return co_res ~= nil end)
  result.co = co_res

  -- 7. Eight at once, twice, each held 0.3 s by the server: the second
  --    eight find the first eight's connections kept (the spec compares).
  for round = 1, 2 do
    local recs = {}
    t0 = uv.hrtime()
    for i = 1, 8 do recs[i] = counted(c, ("eight%d-%d"):format(round, i), t0) end
    run_until(10, function()
      for i = 1, 8 do if recs[i].n == 0 then return false end end
      return true
    end)
    result["eight" .. round] = recs
  end

  c:close()
end

local function store()
  -- Pins through the Redis limiter (PERISKOPE_UV_REDIS: its port, a Redis
  -- that answers each command late) while a 10 ms timer ticks.
  local c = client { limiter = periskope.limiter.redis { port = tonumber(os.getenv("PERISKOPE_UV_REDIS")),
    timeout = 2 } }
  local ticks = ticker()
  local t0 = uv.hrtime()
  local pins = {}
  for i = 1, 4 do pins[i] = counted(c, "r" .. i, t0) end
  run_until(20, function()
    for _, p in ipairs(pins) do if p.n == 0 then return false end end
    return true
  end)
  result.store = { pins = pins, gap = ticks.stop(), ms = ms_since(t0) }
  c:close()
end

local function quit()
  -- Pins left in flight against a server that never answers in time.
  local c = client { timeout = 10 }
  assert(c:pin { message_id = "warm" }.status == 204)
  for i = 1, 8 do puv.pin(c, { message_id = "q" .. i }, function() end) end
  run_until(0.3, function() return false end)   -- the 8 are under way
  local sec, usec = uv.gettimeofday()
  result.quit_at = sec + usec / 1e6
end

local chosen = ({ quit = quit, store = store })[os.getenv("PERISKOPE_UV_SCENARIO")] or scenarios
local ok, err = pcall(chosen)
if not ok then result.driver_error = tostring(err) end
-- luv frees a handle's memory with its Lua object: handles still closing
-- must finish first (uv_close completes in a loop run), else the loop's
-- own teardown walks freed handles.
if not nvim then uv.run() end
local f = assert(io.open(os.getenv("PERISKOPE_UV_OUT"), "wb"))
f:write(cjson.encode(result))
f:close()
