-- make bench-nonblocking's Neovim side: bench/nonblocking.lua runs it in
-- `nvim --headless -u NONE` (`-c 'luafile bench/nb_nvim.lua'`) and reads
-- the JSON it writes to NB_OUT. Environment: NB_CPATH and NB_LUA (where
-- the LuaJIT module and periskope/uv.lua are), NB_SLOW and NB_FAST (base
-- URLs of a server answering after a latency and of one answering at
-- once), NB_STATUS (the fast server's stub_status URL: the connections it
-- accepted), NB_KEY, NB_PHONE, NB_PINS (pins at once against the slow
-- server), NB_CPU_PINS, NB_CPU_ROUNDS and NB_CPU_FLIGHT (the CPU rounds),
-- and NB_PERF_HZ, NB_PERF_CPU and NB_PERF_DIR (when set: one more round per way with
-- perf record and perf stat attached to the loop's thread).
--
-- Two ways to pin from the loop:
--   periskope.uv      the module: client:pin_job(args, { io = "watch" }),
--                     libcurl on the loop's thread behind a uv poll handle
--   the pool way      what periskope.uv did before, written here for the
--                     comparison only: the job in "send" mode, each
--                     exchange run by periskope.perform on a thread of
--                     libuv's pool (uv.new_work), its steps on the loop
--                     (vim.schedule), waits on uv timers
-- luacheck: globals vim
local uv = vim.uv or vim.loop
local unpack = table.unpack or unpack -- luacheck: ignore 143

local result = {}

local function num(name) return assert(tonumber(os.getenv(name)), name) end

-- Clock ticks (utime + stime) of /proc/<pid>/stat or of one thread's
-- /proc/<pid>/task/<tid>/stat.
local function ticks(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  local w = {}
  for x in s:match("%)%s+(.*)$"):gmatch("%S+") do w[#w + 1] = x end
  return tonumber(w[12]) + tonumber(w[13])
end

-- Runs on a thread of libuv's pool, in a Lua state of its own that sees
-- only its arguments: loads periskope itself and makes the exchange.
local function work(cpath, url, headers, body, timeout, connect_timeout, max_body, ca_file)
  package.cpath = cpath
  local p = require "periskope"
  local list = {}
  for line in headers:gmatch("[^\n]+") do list[#list + 1] = line end
  return p.perform { url = url, headers = list, body = body, timeout = timeout,
    connect_timeout = connect_timeout, max_body = max_body, ca_file = ca_file }
end

-- The pool way: callback(res, err, kind) once, as client:pin returns.
local function pool_pin(client, args, callback)
  local job = client:pin_job(args)
  local step
  local function handle(action, a, b, c)
    if action == "send" then
      local w = uv.new_work(work, function(...)
        local r = { n = select("#", ...), ... }
        vim.schedule(function() step(unpack(r, 1, r.n)) end)
      end)
      w:queue(package.cpath, a.url, table.concat(a.headers, "\n"), a.body, a.timeout,
        a.connect_timeout, a.max_body, a.ca_file)
    elseif action == "wait" then
      local t = uv.new_timer()
      t:start(math.floor(a * 1000 + 0.5), 0, function()
        t:close()
        vim.schedule(function() step() end)
      end)
    else
      callback(a, b, c)
    end
  end
  step = function(...) handle(job:step(...)) end
  step()
end

local WAYS -- name -> pin(client, args, callback)

-- Connections the fast server accepted so far (reading it is one more).
local function accepts()
  local out = vim.fn.system { "curl", "-s", "--noproxy", "*", os.getenv("NB_STATUS") }
  return tonumber(out:match("server accepts handled requests%s+(%d+)"))
end

-- Runs a command in the background; returns a function that stops it
-- (SIGINT) and waits until it has exited.
local function background(cmd, args)
  local exited = false
  local handle = uv.spawn(cmd, { args = args }, function() exited = true end)
  assert(handle, "cannot run " .. cmd)
  return function()
    handle:kill("sigint")
    vim.wait(10000, function() return exited end, 10)
    handle:close()
  end
end

-- n pins through `way` on client, `flight` at a time (all at once when
-- nil), the loop run by vim.wait until the last is back. With watch, a
-- 10 ms timer (its longest gap) and an fs_stat every 5 ms (its slowest
-- answer) run meanwhile. Returns what it saw.
local function batch(way, client, n, prefix, flight, watch)
  local pin = WAYS[way]
  local done, started, ok, kinds = 0, 0, 0, {}
  local t0 = uv.hrtime()
  local last_ms = 0
  local function start_one()
    started = started + 1
    local i = started
    pin(client, { message_id = prefix .. i }, function(res, _, kind)
      done = done + 1
      last_ms = (uv.hrtime() - t0) / 1e6
      if res and res.status == 204 then
        ok = ok + 1
      else
        local k = tostring(res and res.status or kind)
        kinds[k] = (kinds[k] or 0) + 1
      end
      if started < n then start_one() end
    end)
  end
  local tick, stat
  local gap, gap_at, ticks_seen, last_tick = 0, nil, 0, uv.hrtime()
  local stat_max, stat_at, stats, stat_out = 0, nil, 0, false
  if watch then
    tick = uv.new_timer()
    tick:start(10, 10, function()
      local now = uv.hrtime()
      local g = (now - last_tick) / 1e6
      if g > gap then gap, gap_at = g, (last_tick - t0) / 1e6 end
      last_tick, ticks_seen = now, ticks_seen + 1
    end)
    stat = uv.new_timer()
    stat:start(0, 5, function()
      if stat_out then return end
      stat_out = true
      local s0 = uv.hrtime()
      uv.fs_stat("/", function()
        local d = (uv.hrtime() - s0) / 1e6
        if d > stat_max then stat_max, stat_at = d, (s0 - t0) / 1e6 end
        stats, stat_out = stats + 1, false
      end)
    end)
  end
  for _ = 1, math.min(flight or n, n) do start_one() end
  local start_ms = (uv.hrtime() - t0) / 1e6
  vim.wait(120000, function() return done == n end, 1)
  if watch then
    tick:close()
    stat:close()
  end
  return { n = n, done = done, ok = ok, kinds = kinds, ms = last_ms, gap = gap, gap_at = gap_at,
    ticks = ticks_seen, stat_max = stat_max, stat_at = stat_at, stats = stats, start_ms = start_ms }
end

local ok, err = pcall(function()
  package.cpath = os.getenv("NB_CPATH") .. ";" .. package.cpath
  package.path = os.getenv("NB_LUA") .. ";" .. package.path
  local periskope = require "periskope"
  local puv = require "periskope.uv"
  WAYS = { uv = puv.pin, pool = pool_pin }
  local function client(base)
    return periskope.new { base_url = base, api_key = os.getenv("NB_KEY"), phone = os.getenv("NB_PHONE") }
  end
  local pid = vim.fn.getpid()
  local main_stat, all_stat = "/proc/" .. pid .. "/task/" .. pid .. "/stat", "/proc/" .. pid .. "/stat"

  -- 1. NB_PINS at once against the slow server, each way on a client
  -- whose first pin (alone: it learns the budget) is done.
  local n = num("NB_PINS")
  result.burst = {}
  for _, way in ipairs { "uv", "pool" } do
    local c = client(os.getenv("NB_SLOW"))
    local warm = batch(way, c, 1, way .. "-warm-")
    local r = batch(way, c, n, way .. "-burst-", nil, true)
    r.warm_ms = warm.ms
    result.burst[way] = r
    c:close()
  end

  -- 2. CPU per pin: rounds of NB_CPU_PINS pins, NB_CPU_FLIGHT at a time,
  -- against the fast server, the ways alternating (order rotated).
  result.cpu = { uv = {}, pool = {} }
  local clients = { uv = client(os.getenv("NB_FAST")), pool = client(os.getenv("NB_FAST")) }
  local cpu_n, flight = num("NB_CPU_PINS"), num("NB_CPU_FLIGHT")
  for way, c in pairs(clients) do batch(way, c, flight * 4, way .. "-cpuwarm-", flight) end
  for round = 1, num("NB_CPU_ROUNDS") do
    local order = round % 2 == 1 and { "uv", "pool" } or { "pool", "uv" }
    for _, way in ipairs(order) do
      local m0, a0, c0, t0 = ticks(main_stat), ticks(all_stat), accepts(), uv.hrtime()
      local r = batch(way, clients[way], cpu_n, way .. "-cpu" .. round .. "-", flight)
      r.main_ticks, r.all_ticks = ticks(main_stat) - m0, ticks(all_stat) - a0
      r.wall = (uv.hrtime() - t0) / 1e9
      r.opened = accepts() - c0 - 1
      table.insert(result.cpu[way], r)
    end
  end
  -- The profile round: perf attached to the loop's thread (-t).
  local dir = os.getenv("NB_PERF_DIR")
  if dir and dir ~= "" then
    result.perf = {}
    for _, way in ipairs { "uv", "pool" } do
      local p = { data = dir .. "/nb-nvim-" .. way .. ".perf.data",
        stat = dir .. "/nb-nvim-" .. way .. ".syscalls" }
      local cpu = os.getenv("NB_PERF_CPU")
      local stop_record = background("taskset", { "-c", cpu, "perf", "record", "-q", "-F", os.getenv("NB_PERF_HZ"),
        "-t", tostring(pid), "-o", p.data })
      local stop_stat = background("taskset", { "-c", cpu, "perf", "stat", "-e", "raw_syscalls:sys_enter", "-x,",
        "-t", tostring(pid), "-o", p.stat })
      vim.wait(500, function() return false end, 10)
      local c0 = accepts()
      local r = batch(way, clients[way], cpu_n, way .. "-prof-", flight)
      p.opened = accepts() - c0 - 1
      stop_record()
      stop_stat()
      p.pins, p.ok = r.n, r.ok
      result.perf[way] = p
    end
  end
  for _, c in pairs(clients) do c:close() end
  local threads = 0
  for _ in vim.fn.glob("/proc/" .. pid .. "/task/*"):gmatch("[^\n]+") do threads = threads + 1 end
  result.threads = threads
  result.clk_tck = tonumber(vim.fn.system("getconf CLK_TCK"):match("%d+"))
end)
if not ok then result.error = tostring(err) end
local f = assert(io.open(os.getenv("NB_OUT"), "w"))
f:write(vim.fn.json_encode(result))
f:close()
