-- make bench-nonblocking: pinning without blocking the host, in one run,
-- each way beside its reference.
--
--   taskset -c 0 lua5.4 bench/nonblocking.lua   (from the checkout root;
--                                               mk/bench.mk runs it so)
--
-- A. OpenResty (issue 21). nginx with the OpenResty example's files as they
--    are (examples/openresty/: the client made in init_by_lua with the
--    shared-dict limiter) and bench/nb_app.lua's locations: periskope.ngx
--    on that client, periskope.ngx on a client with default options, and
--    the same request written by hand over ngx.socket.tcp (a keep-alive
--    pool, every answer checked). Its one worker and all its threads on
--    BENCH_CLIENT_CPU (taskset), the local servers, the load generator
--    (bench/nb_load.c) and this script on BENCH_SERVER_CPU.
--      1. the worker's CPU per pin, 32 in flight, a server answering at
--         once: rounds of each way, interleaved, their ratio to the hand;
--      2. pins/s with 256 in flight against a 300 ms server, to the ideal;
--      3. the first burst of 256 on a fresh worker: a plain location's
--         worst answer meanwhile, asked every 5 ms on a kept-alive
--         connection;
--      4. Redis answering every command after 200 ms: 32 pins through
--         periskope.limiter.redis, and the plain location meanwhile;
--      5. 4 workers on one shared dictionary, 1,000 pins: the longest any
--         request waited for the dictionary's lock (bench/nb_app.lua's
--         proxy table times it).
-- B. Neovim (issue 22), headless, bench/nb_nvim.lua: 64 pins at once
--    against a 500 ms server (the loop's longest gap, a concurrent
--    fs_stat), and the loop thread's CPU per pin of periskope.uv beside the
--    pool-thread way (written in bench/nb_nvim.lua for the comparison).
--
-- It prints the results and writes them to BENCH_NB_RESULTS (Markdown,
-- bench/nonblocking.md). Needs the LuaJIT build (make LUA=luajit),
-- LuaSocket and lua-cjson for lua5.4, nginx with its Lua module, curl,
-- redis-server, and nvim for part B (skipped without it). Settings:
-- the environment variables BENCH_NB_<NAME> of CFG below, and
-- BENCH_SERVER_CPU / BENCH_CLIENT_CPU as make bench has them.

package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local socket = require "socket"
local cjson = require "cjson"
local common = require "bench.common"

local sh, sq = server.sh, server.quote

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  if type(default) == "number" then return assert(tonumber(v), name .. " must be a number") end
  return v
end

local ROOT = sh("pwd"):match("[^\n]+")
local CFG = {
  results = env("BENCH_NB_RESULTS", "bench/nonblocking.md"),
  server_cpu = env("BENCH_SERVER_CPU", "0"),
  client_cpu = env("BENCH_CLIENT_CPU", "1"),
  cpu_pins = env("BENCH_NB_CPU_PINS", 10000),      -- per round and way
  cpu_rounds = env("BENCH_NB_CPU_ROUNDS", 3),
  cpu_flight = env("BENCH_NB_CPU_FLIGHT", 32),
  flight = env("BENCH_NB_FLIGHT", 256),
  flight_pins = env("BENCH_NB_FLIGHT_PINS", 1024),
  flight_rounds = env("BENCH_NB_FLIGHT_ROUNDS", 2),
  latency = env("BENCH_NB_LATENCY", 0.3),
  burst = env("BENCH_NB_BURST", 256),
  redis_pins = env("BENCH_NB_REDIS_PINS", 32),
  redis_delay = env("BENCH_NB_REDIS_DELAY", 0.2),
  dict_workers = env("BENCH_NB_DICT_WORKERS", 4),
  dict_pins = env("BENCH_NB_DICT_PINS", 1000),
  dict_flight = env("BENCH_NB_DICT_FLIGHT", 64),
  dict_cpus = env("BENCH_NB_DICT_CPUS", "0,1"),
  nvim_pins = env("BENCH_NB_NVIM_PINS", 64),
  nvim_latency = env("BENCH_NB_NVIM_LATENCY", 0.5),
  nvim_cpu_pins = env("BENCH_NB_NVIM_CPU_PINS", 2000),
  nvim_cpu_rounds = env("BENCH_NB_NVIM_CPU_ROUNDS", 3),
  nvim_cpu_flight = env("BENCH_NB_NVIM_CPU_FLIGHT", 16),
  probe_every = 0.005,
  load = env("BENCH_NB_LOAD", "build/bench/nb_load"),
  -- Which steps to run (a1..a5, b; all by default): a partial run writes
  -- build/bench/nonblocking-partial.md and leaves BENCH_NB_RESULTS alone.
  parts = env("BENCH_NB_PARTS", "a1,a2,a3,a4,a5,b"),
}
local KEY, PHONE = "bench-key-0123456789abcdef", "919874532456"
local CLK_TCK = common.CLK_TCK
local HAVE_TASKSET = select(2, sh("command -v taskset >/dev/null")) == 0

-- Targets (issues 21 and 22).
local T = {
  cpu_ratio = 1.0, flight_share = 0.9, burst_ms = 20, redis_p99_ms = 20, lock_ms = 20,
  nvim_all_ms = 1000, nvim_gap_ms = 50, nvim_stat_ms = 10,
}

local out, targets = {}, {}
local function say(...)
  local line = table.concat({ ... })
  print(line)
  io.stdout:flush()
  out[#out + 1] = line
end
local function target(what, measured, ok)
  targets[#targets + 1] = ("| %s | %s | %s |"):format(what, measured, ok and "met" or "**missed**")
end

local function fmt(x, d) return x and ("%." .. (d or 0) .. "f"):format(x) or "–" end

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  if #t == 0 then return nil end
  if #t % 2 == 1 then return t[(#t + 1) / 2] end
  return (t[#t / 2] + t[#t / 2 + 1]) / 2
end

local function pct(list, p)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  if #s == 0 then return nil end
  return s[math.max(1, math.ceil(#s * p))]
end

local function range(list)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

------------------------------------------------------------------------------
-- Processes

local function threads(pid)
  local n = 0
  for _ in sh("ls /proc/" .. pid .. "/task"):gmatch("%d+") do n = n + 1 end
  return n
end

local function workers(app)
  local list = {}
  for p in sh("pgrep -P " .. app.pid):gmatch("%d+") do list[#list + 1] = tonumber(p) end
  return list
end

-- Every thread of pid (-a) on cpus.
local function pin_cpu(pid, cpus)
  if HAVE_TASKSET then sh("taskset -a -pc " .. cpus .. " " .. pid .. " >/dev/null 2>&1") end
end

------------------------------------------------------------------------------
-- The servers

-- The local Periskope server answering at once (the lean endpoint: the
-- mock's checks, no recording) or, with latency, the mock answering every
-- pin after it. Both allow 10⁹ pins a minute: no pacing ever waits.
local function start_periskope(latency)
  local srv = server.start {
    api_key = KEY, rate_limit = 1000000000, window = 60, latency = latency,
    extra_server = ("location /lean/v1/ { content_by_lua_block { require('bench.lean').pin(%q) } }"):format(KEY)
      .. " location = /_status { stub_status; }"
      .. (" location = /sleep { content_by_lua_block { ngx.sleep(%g) ngx.say('{}') } }"):format(latency),
  }
  srv.pin_base = latency > 0 and srv.base_url or srv.url .. "/lean/v1"
  srv.host = "127.0.0.1"
  for _, pid in ipairs(workers(srv)) do pin_cpu(pid, CFG.server_cpu) end
  pin_cpu(srv.pid, CFG.server_cpu)
  return srv
end

-- Connections the server has accepted so far (stub_status); reading it
-- is one more.
local function accepts(srv)
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect("127.0.0.1", srv.port))
  c:send("GET /_status HTTP/1.0\r\nHost: bench\r\n\r\n")
  local all = c:receive("*a") or ""
  c:close()
  return assert(tonumber(all:match("server accepts handled requests%s+(%d+)")), "bench: no stub_status")
end

------------------------------------------------------------------------------
-- perf: a profile and the system calls of a process (-p PID) or a thread
-- (-t TID) while something runs.

local PERF_HZ = 4000
local HAVE_PERF = env("BENCH_NB_PERF", "1") == "1"
  and select(2, sh("perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true >/dev/null 2>&1")) == 0
  and select(2, sh("perf record -q -o /dev/null true >/dev/null 2>&1")) == 0

local function perf_start(target_, tag)
  sh("mkdir -p build/bench")
  local p = { data = "build/bench/nb-" .. tag .. ".perf.data", stat = "build/bench/nb-" .. tag .. ".syscalls" }
  local pids = sh(("perf record -q -F %d %s -o %s >/dev/null 2>&1 & echo $!\n"
    .. "perf stat -e raw_syscalls:sys_enter -x, %s -o %s >/dev/null 2>&1 & echo $!")
    :format(PERF_HZ, target_, sq(p.data), target_, sq(p.stat)))
  p.pids = {}
  for pid in pids:gmatch("%d+") do p.pids[#p.pids + 1] = pid end
  socket.sleep(0.5) -- attached
  return p
end

-- Reads what perf wrote to p.data and p.stat over `pins` pins: { dsos =
-- { {name} ... } (the most first), dso_us = name -> µs, sym_us =
-- "function" -> µs (named ones only), total_us, syscalls (per pin) }.
local function perf_read(p, pins)
  local r = { dsos = {}, dso_us = {}, sym_us = {}, total_us = 0 }
  local per = 1e6 / PERF_HZ / pins
  local rep = sh("perf report -i " .. sq(p.data) .. " --stdio --no-children --sort dso,sym -g none -n -q 2>/dev/null")
  for line in rep:gmatch("[^\n]+") do
    local n, dso, sym = line:match("^%s*[%d.]+%%%s+(%d+)%s+(%S+)%s+%[.%]%s+(.-)%s*$")
    if n then
      local us = tonumber(n) * per
      dso = dso:gsub("%.so[%d.]*$", ".so")
      if not r.dso_us[dso] then r.dsos[#r.dsos + 1] = { name = dso } end
      r.dso_us[dso] = (r.dso_us[dso] or 0) + us
      r.total_us = r.total_us + us
      if not sym:match("^0x%x+$") then r.sym_us[sym] = (r.sym_us[sym] or 0) + us end
    end
  end
  table.sort(r.dsos, function(a, b) return r.dso_us[a.name] > r.dso_us[b.name] end)
  local calls = (server.read_file(p.stat) or ""):match("\n%s*(%d+),[^\n]*raw_syscalls:sys_enter")
  r.syscalls = calls and tonumber(calls) / pins
  return r
end

-- Stops p (perf_start's) and reads it.
local function perf_stop(p, pins)
  sh("kill -INT " .. table.concat(p.pids, " ") .. " 2>/dev/null; for p in " .. table.concat(p.pids, " ")
    .. "; do while kill -0 $p 2>/dev/null; do sleep 0.05; done; done")
  return perf_read(p, pins)
end

-- A table of perf_read results side by side: µs per pin by library, all,
-- system calls per pin and `extra` rows ({ label, fn(profile) -> cell }).
local function perf_table(names, prof, extra)
  local rule = {}
  for i = 1, #names do rule[i] = "---:" end
  say("| library | " .. table.concat(names, " | ") .. " |")
  say("| --- | " .. table.concat(rule, " | ") .. " |")
  local dsos, seen = {}, {}
  for _, pr in ipairs(prof) do
    for _, d in ipairs(pr.dsos) do
      if not seen[d.name] then
        seen[d.name] = true
        dsos[#dsos + 1] = d.name
      end
    end
  end
  local function cells(fn)
    local t = {}
    for i = 1, #prof do t[i] = fn(prof[i]) end
    return table.concat(t, " | ")
  end
  for _, name in ipairs(dsos) do
    say(("| %s | %s |"):format(name, cells(function(pr) return fmt(pr.dso_us[name] or 0, 1) end)))
  end
  say(("| **all** | %s |"):format(cells(function(pr) return "**" .. fmt(pr.total_us, 1) .. "**" end)))
  say(("| system calls per pin | %s |"):format(cells(function(pr) return fmt(pr.syscalls, 2) end)))
  for _, e in ipairs(extra or {}) do say(("| %s | %s |"):format(e[1], cells(e[2]))) end
  say("")
  return cells
end

-- The app: nginx with the OpenResty example as it is and bench/nb_app.lua's
-- locations, pinning to base_url. o.workers (1), o.redis_port, o.cpus (the
-- workers' CPUs: BENCH_CLIENT_CPU).
local function start_app(base_url, o)
  o = o or {}
  local ex = function(f) return server.read_file(ROOT .. "/examples/openresty/" .. f) end
  local app = server.start {
    workers = o.workers or 1,
    reuseport = (o.workers or 1) > 1,
    lua_cpath = ROOT .. "/build/luajit/?.so",
    lua_path = ROOT .. "/examples/openresty/?.lua;" .. ROOT .. "/lua/?.lua",
    env = { PERISKOPE_API_KEY = KEY, PERISKOPE_BASE_URL = base_url, PERISKOPE_PHONE = PHONE,
            BENCH_NB_REDIS_PORT = tostring(o.redis_port or 0) },
    extra_main = ex("main.conf") .. "\nenv BENCH_NB_REDIS_PORT;\n",
    extra_http = ex("http.conf") .. "\nlua_shared_dict bench_nb 8m;\n"
      .. (o.lag_all and 'init_worker_by_lua_block { require("bench.nb_app").init_worker() }\n' or ""),
    extra_server = ex("server.conf") .. [[
      location = /plain { return 200 "{}"; }
      location ~ ^/pin/(ngx|plain|hand|redis|dict)$ {
        content_by_lua_block { require("bench.nb_app").pin(ngx.var[1]) }
      }
      location = /t/stats { content_by_lua_block { require("bench.nb_app").stats() } }
      location = /t/lag { content_by_lua_block { require("bench.nb_app").lag() } }
    ]],
  }
  app.host, app.port = "127.0.0.1", app.port
  app.workers = workers(app)
  for _, pid in ipairs(app.workers) do pin_cpu(pid, o.cpus or CFG.client_cpu) end
  return app
end

------------------------------------------------------------------------------
-- The load, every answer's status kept.

-- n GETs of app's path?id=<prefix><i>, `flight` at a time, by the load
-- generator (bench/nb_load.c: libcurl's multi interface, a finished
-- request's slot starting the next at once). load_start returns at once
-- and load_wait(job) gives the result: { n, ok (answered 200), codes,
-- seconds (from the first request to the last answer), slowest (s) }.
local function load_start(app, path, n, flight, prefix)
  local dir = sh("mktemp -d"):match("[^\n]+")
  local done = sq(dir .. "/done")
  sh(("(%s %s %d %d > %s 2>&1; touch %s) >/dev/null 2>&1 </dev/null &"):format(sq(CFG.load),
    sq(app.url .. path .. "?id=" .. prefix), n, flight, sq(dir .. "/out"), done))
  return { dir = dir, n = n }
end

local function load_done(job)
  return server.read_file(job.dir .. "/done") ~= nil
end

local function load_wait(job)
  while not load_done(job) do socket.sleep(0.002) end
  local text = server.read_file(job.dir .. "/out") or ""
  local r = { n = job.n, ok = 0, codes = {}, slowest = 0, seconds = tonumber(text:match("\nwall ([%d.]+)")) }
  for code, t in text:gmatch("(%d+) ([%d.]+)\n") do
    if code == "200" then r.ok = r.ok + 1 end
    r.codes[code] = (r.codes[code] or 0) + 1
    r.slowest = math.max(r.slowest, tonumber(t))
  end
  if not r.seconds then error("bench: the load generator failed: " .. text:sub(1, 300), 0) end
  sh("rm -rf " .. sq(job.dir))
  return r
end

local function load(app, path, n, flight, prefix)
  return load_wait(load_start(app, path, n, flight, prefix))
end

-- What a run's answers other than 200 were, for the tables.
local function failed_text(r)
  local t = {}
  for code, c in pairs(r.codes) do
    if code ~= "200" then t[#t + 1] = c .. " × " .. code end
  end
  table.sort(t)
  return #t == 0 and "none" or table.concat(t, ", ")
end

------------------------------------------------------------------------------
-- The plain location, asked every 5 ms on one kept-alive connection while
-- something runs: each answer's time, from the request written to the
-- answer read, as the asker saw it.

local function prober(app)
  local p = { times = {} }
  local conn
  local function open()
    conn = assert(socket.tcp())
    conn:settimeout(10)
    assert(conn:connect(app.host, app.port))
    conn:setoption("tcp-nodelay", true)
  end
  function p.ask()
    if not conn then open() end
    local t0 = socket.gettime()
    local ok = conn:send("GET /plain HTTP/1.1\r\nHost: bench\r\n\r\n")
    local len
    while ok do
      local line = conn:receive("*l")
      if not line then ok = false break end
      if line == "" then break end
      len = tonumber(line:lower():match("^content%-length:%s*(%d+)")) or len
    end
    if ok and len and len > 0 then ok = conn:receive(len) ~= nil end
    if not ok then -- the connection went: not a sample
      conn:close()
      conn = nil
      return nil
    end
    local dt = socket.gettime() - t0
    p.times[#p.times + 1] = dt
    return dt
  end
  -- Asks until done() is true (checked before every ask).
  function p.run(done)
    p.times = {}
    while not done() do
      p.ask()
      socket.sleep(CFG.probe_every)
    end
    return p.summary()
  end
  -- Asks for `seconds`: the floor of what the asker sees with the worker idle.
  function p.idle(seconds)
    local until_ = socket.gettime() + seconds
    return p.run(function() return socket.gettime() > until_ end)
  end
  function p.summary()
    local t = p.times
    return { n = #t, p50 = (pct(t, 0.5) or 0) * 1e3, p99 = (pct(t, 0.99) or 0) * 1e3,
             max = (pct(t, 1) or 0) * 1e3 }
  end
  function p.close() if conn then conn:close() end end
  return p
end

-- The body of GET path from app (HTTP/1.0: not chunked).
local function get(app, path)
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect(app.host, app.port))
  c:send("GET " .. path .. " HTTP/1.0\r\nHost: bench\r\n\r\n")
  local all = c:receive("*a")
  c:close()
  return all:match("\r\n\r\n(.*)$")
end

local function stats(app)
  return cjson.decode(get(app, "/t/stats"))
end

-- The worker's own view of how long its event loop was held (bench/nb_app.lua's
-- /t/lag): lag_on(app) starts it, lag_off(app) gives the longest, in ms.
local function lag_on(app) get(app, "/t/lag?on=1") end
local function lag_off(app) return tonumber(get(app, "/t/lag")) end

------------------------------------------------------------------------------
-- A. OpenResty

local WAYS = {
  { path = "/pin/hand", name = "by hand: ngx.socket.tcp, keep-alive pool", short = "by hand" },
  { path = "/pin/ngx", name = "periskope.ngx, the example's client (shared-dict limiter, on_event)",
    short = "the example's client" },
  { path = "/pin/plain", name = "periskope.ngx, a client with default options", short = "default options" },
}

-- The worker's CPU profile of one extra round per way, when perf works:
-- µs per pin by library, the functions where the ways differ most, and
-- system calls per pin.
local function a1_profile(app, fast, w)
  local prof = {}
  for i, way in ipairs(WAYS) do
    local p = perf_start("-p " .. w, "ngx-" .. way.path:match("[^/]+$"))
    local before = accepts(fast)
    local r = load(app, way.path, CFG.cpu_pins, CFG.cpu_flight, "prof-")
    local opened = accepts(fast) - before - 1
    prof[i] = perf_stop(p, r.n)
    prof[i].conns = opened / r.n
  end
  say(("Where the worker's time goes: one more round of %s pins per way under `perf record -F %d -p <worker>`"
    .. " (user and kernel; a sample is 1/%d s of CPU), as µs per pin, and the system calls per pin"
    .. " (`perf stat -e raw_syscalls:sys_enter`); the profile's own cost is in these rounds only, and one"
    .. " round each moves with the machine's load: compare the libraries within a column, and take the"
    .. " ratios from the rounds above. LuaJIT"
    .. " (the interpreter and the `[JIT]` traces) is stripped: its functions have no names."):format(CFG.cpu_pins,
    PERF_HZ, PERF_HZ))
  say("")
  local names = {}
  for i, way in ipairs(WAYS) do names[i] = way.short end
  local cells = perf_table(names, prof, { { "new connections to the server per pin",
    function(pr) return fmt(pr.conns, 3) end } })
  -- The named functions that cost periskope.ngx (the example's client) the
  -- most beyond the hand's.
  local diff = {}
  for sym, us in pairs(prof[2].sym_us) do
    diff[#diff + 1] = { sym = sym, d = us - (prof[1].sym_us[sym] or 0) }
  end
  table.sort(diff, function(a, b) return a.d > b.d end)
  say("The named functions where periskope.ngx with the example's client spends the most µs per pin beyond the"
    .. " by-hand pin:")
  say("")
  say("| function | " .. table.concat(names, " | ") .. " |")
  say("| --- |" .. (" ---: |"):rep(#names))
  for k = 1, math.min(12, #diff) do
    local sym = diff[k].sym
    say(("| `%s` | %s |"):format(sym, cells(function(pr) return fmt(pr.sym_us[sym] or 0, 2) end)))
  end
  say("")
  return prof
end

local function a1_cpu(fast)
  say(("### A1. The worker's CPU per pin, %d in flight, a server answering at once"):format(CFG.cpu_flight))
  say("")
  local app = start_app(fast.pin_base)
  local w = app.workers[1]
  for _, way in ipairs(WAYS) do load(app, way.path, 200, CFG.cpu_flight, "warm") end
  local per = {}
  for i = 1, #WAYS do per[i] = { us = {}, ok = 0, n = 0, sent = 0, opened = 0, failed = {} } end
  for round = 1, CFG.cpu_rounds do
    for k = 0, #WAYS - 1 do
      local i = (round - 1 + k) % #WAYS + 1
      local before, conns = fast:stats().requests, accepts(fast)
      local t0 = common.pid_cpu(w) -- every thread of the worker
      local r = load(app, WAYS[i].path, CFG.cpu_pins, CFG.cpu_flight, "r" .. round .. "-")
      local used = common.pid_cpu(w) - t0
      local x = per[i]
      x.opened = x.opened + accepts(fast) - conns - 1
      x.us[round] = used / r.n * 1e6
      x.ok, x.n = x.ok + r.ok, x.n + r.n
      x.sent = x.sent + fast:stats().requests - before
      if r.ok < r.n then x.failed[#x.failed + 1] = failed_text(r) end
    end
  end
  local nthreads = threads(w)
  say(("One nginx worker (%d thread%s, on CPU %s), the local server's lean endpoint on CPU %s; the load generator"
    .. " (bench/nb_load.c) asks for %s pins per way and round, %d at a time. CPU = the worker's utime + stime"
    .. " (`/proc/<pid>/stat`: every thread; clock ticks of %g ms) over the round, per pin. %d rounds, the"
    .. " ways interleaved and their order rotated; the ratio is the median of the rounds' ratios to the"
    .. " by-hand pin (their range in brackets). \"server counted\" is the requests the server got (no pin"
    .. " was sent twice when it equals the pins); \"opened\" the connections it accepted.")
    :format(nthreads, nthreads == 1 and "" or "s", CFG.client_cpu, CFG.server_cpu, CFG.cpu_pins,
      CFG.cpu_flight, 1000 / CLK_TCK, CFG.cpu_rounds))
  say("")
  say("| way | µs/pin (median) | rounds | × by hand | answered 204 | server counted | opened |")
  say("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
  local ratios = {}
  for i, way in ipairs(WAYS) do
    local x = per[i]
    local rr, rounds = {}, {}
    for round = 1, CFG.cpu_rounds do
      rr[round] = x.us[round] / per[1].us[round]
      rounds[round] = fmt(x.us[round], 1)
    end
    local lo, hi = range(rr)
    ratios[i] = { x = median(rr), lo = lo, hi = hi }
    say(("| %s | %s | %s | %s | %d/%d%s | %d | %d |"):format(way.name, fmt(median(x.us), 1),
      table.concat(rounds, ", "), i == 1 and "1" or ("%s (%s–%s)"):format(fmt(ratios[i].x, 2), fmt(lo, 2), fmt(hi, 2)),
      x.ok, x.n, #x.failed > 0 and " (" .. table.concat(x.failed, "; ") .. ")" or "", x.sent, x.opened))
  end
  say("")
  if HAVE_PERF then a1_profile(app, fast, w) end
  app:stop()
  for i = 2, 3 do
    target(("worker CPU per pin ≤ 1.0× by hand, %d in flight (%s)"):format(CFG.cpu_flight, WAYS[i].short),
      ("%s× (rounds %s–%s; %s vs %s µs)"):format(fmt(ratios[i].x, 2), fmt(ratios[i].lo, 2), fmt(ratios[i].hi, 2),
        fmt(median(per[i].us), 1), fmt(median(per[1].us), 1)), ratios[i].x <= T.cpu_ratio and per[i].ok == per[i].n)
  end
  return per
end

local function a2_flight(slow)
  local ideal = CFG.flight / CFG.latency
  say(("### A2. %d in flight against a server answering after %g ms"):format(CFG.flight, CFG.latency * 1e3))
  say("")
  local app = start_app(slow.pin_base)
  -- The ways through the app, and first the server itself asked directly
  -- (a location that sleeps the same latency): the ceiling of this
  -- generator, server and machine.
  local rows = { { path = "/sleep", name = "the server directly, no nginx in between (the ceiling)", direct = true } }
  for _, way in ipairs(WAYS) do rows[#rows + 1] = way end
  for _, way in ipairs(rows) do load(way.direct and slow or app, way.path, CFG.flight, CFG.flight, "warm") end
  local per = {}
  for i = 1, #rows do per[i] = { rates = {}, ok = 0, n = 0, failed = {}, slowest = 0 } end
  for round = 1, CFG.flight_rounds do
    for k = 0, #rows - 1 do
      local i = (round - 1 + k) % #rows + 1
      local r = load(rows[i].direct and slow or app, rows[i].path, CFG.flight_pins, CFG.flight, "f" .. round .. "-")
      local x = per[i]
      x.rates[round] = r.n / r.seconds
      x.ok, x.n = x.ok + r.ok, x.n + r.n
      x.slowest = math.max(x.slowest, r.slowest)
      if r.ok < r.n then x.failed[#x.failed + 1] = failed_text(r) end
    end
  end
  app:stop()
  say(("%s pins per way and round, %d at a time (bench/nb_load.c on CPU %s), %d rounds, the ways interleaved and"
    .. " their order rotated; the rate is pins over the time from the first request to the last answer; the"
    .. " ideal is %d / %g s = %.0f pins/s. The first row asks the server itself, the same latency, no app:"
    .. " what this generator, server and machine reach at best.")
    :format(CFG.flight_pins, CFG.flight, CFG.server_cpu, CFG.flight_rounds, CFG.flight, CFG.latency, ideal))
  say("")
  say("| way | pins/s (median) | rounds | × ideal | × the server directly | failed pins | slowest pin s |")
  say("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
  for i, way in ipairs(rows) do
    local x = per[i]
    local rr = {}
    for round, v in ipairs(x.rates) do rr[round] = fmt(v, 0) end
    x.share = median(x.rates) / ideal
    say(("| %s | %s | %s | %s | %s | %d%s | %s |"):format(way.name, fmt(median(x.rates), 0), table.concat(rr, ", "),
      fmt(x.share, 2), fmt(median(x.rates) / median(per[1].rates), 2), x.n - x.ok,
      #x.failed > 0 and " (" .. table.concat(x.failed, "; ") .. ")" or "", fmt(x.slowest, 2)))
  end
  say("")
  for i = 2, #rows do
    local x = per[i]
    local lo, hi = range(x.rates)
    target(("%d in flight, %g ms server: ≥ %.1f× ideal (%.0f/s), 0 failed (%s)"):format(CFG.flight,
      CFG.latency * 1e3, T.flight_share, ideal, rows[i].short),
      ("%s× (rounds %s–%s pins/s; the server directly: %s×), %d failed"):format(fmt(x.share, 2), fmt(lo, 0),
        fmt(hi, 0), fmt(per[1].share, 2), x.n - x.ok), x.share >= T.flight_share and x.ok == x.n)
  end
end

local function a3_burst(slow)
  say(("### A3. The first burst of %d on a fresh worker, a server answering after %g ms")
    :format(CFG.burst, CFG.latency * 1e3))
  say("")
  say(("For each way a new nginx (its worker on CPU %s), then `/plain` (`return 200`) asked on a kept-alive"
    .. " connection every %g ms: first for 1 s with the worker idle (the floor of what the asker sees on this"
    .. " machine), then while %d pins are asked at once, until the last is answered. The worker's own view"
    .. " beside it: a timer of its own sleeping 1 ms again and again (bench/nb_app.lua's `/t/lag`), the"
    .. " longest it overslept, i.e. the longest the worker's event loop was held. The example's client is"
    .. " made in init_by_lua and has never pinned: its first pin goes alone (it learns the budget), the"
    .. " others wait for it. Then the same burst again on the same worker, warm, for comparison.")
    :format(CFG.client_cpu, CFG.probe_every * 1e3, CFG.burst))
  say("")
  say("| way | burst | answered 204 | slowest pin s | idle: /plain worst ms | idle: worker held ms | /plain p50 ms"
    .. " | p99 ms | worst ms | worker held ms | asks |")
  say("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for i = 1, 2 do
    local way = WAYS[i]
    local app = start_app(slow.pin_base)
    local p = prober(app)
    lag_on(app)
    local idle = p.idle(1)
    local idle_lag = lag_off(app)
    -- The burst on the fresh worker, then the same again on it, warm.
    local seen = {}
    for k = 1, 2 do
      lag_on(app)
      local job = load_start(app, way.path, CFG.burst, CFG.burst, "burst" .. k .. "-")
      local s = p.run(function() return load_done(job) end)
      seen[k] = { s = s, r = load_wait(job), held = lag_off(app) }
    end
    p.close()
    app:stop()
    for k, x in ipairs(seen) do
      say(("| %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %d |"):format(way.name,
        k == 1 and "first (fresh worker)" or "second (warm)", x.r.ok, x.r.n, fmt(x.r.slowest, 2),
        fmt(idle.max, 1), fmt(idle_lag, 1), fmt(x.s.p50, 1), fmt(x.s.p99, 1), fmt(x.s.max, 1), fmt(x.held, 1), x.s.n))
    end
    if i == 2 then
      local s, r, held = seen[1].s, seen[1].r, seen[1].held
      target(("first burst of %d on a fresh worker: a plain location's worst answer < %d ms (periskope.ngx)")
        :format(CFG.burst, T.burst_ms), ("%s ms (p99 %s; the worker held %s ms; idle floor %s; %d/%d pins"
        .. " answered)"):format(fmt(s.max, 1), fmt(s.p99, 1), fmt(held, 1), fmt(idle.max, 1), r.ok, r.n),
        s.max < T.burst_ms and r.ok == r.n)
    end
  end
  say("")
end

local function a4_redis(fast)
  say(("### A4. Redis answering every command after %g ms: %d pins through periskope.limiter.redis")
    :format(CFG.redis_delay * 1e3, CFG.redis_pins))
  say("")
  local r = redis.start()
  local slow_redis = redis.stand_in { mode = "proxy", upstream = r.port, delay = CFG.redis_delay }
  local ok, err = pcall(function()
    local app = start_app(fast.pin_base, { redis_port = slow_redis.port })
    local warm = load(app, "/pin/redis", 1, 1, "warm")
    stats(app)
    local p = prober(app)
    local idle = p.idle(1)
    lag_on(app)
    local job = load_start(app, "/pin/redis", CFG.redis_pins, CFG.redis_pins, "redis")
    local s = p.run(function() return load_done(job) end)
    local l = load_wait(job)
    local held = lag_off(app)
    local st = stats(app)
    p.close()
    app:stop()
    say(("`periskope.limiter.redis` (timeout 1 s, the default) on a stand-in (`spec/support/redis.lua`, mode"
      .. " proxy) in front of a real redis-server that holds every answer back %g ms; one worker on CPU %s;"
      .. " the local server answering at once. The client's first pin (warm-up, alone) took %s s."
      .. " Then %d pins at once while `/plain` is asked every %g ms on a kept-alive connection; \"worker held\""
      .. " is the worker's own longest stall meanwhile (as in A3). A store failure is an operation that"
      .. " did not finish within the limiter's timeout: that pin was paced by its worker alone, as"
      .. " designed; the figure says how often it happened.")
      :format(CFG.redis_delay * 1e3, CFG.client_cpu, fmt(warm.slowest, 2), CFG.redis_pins, CFG.probe_every * 1e3))
    say("")
    say("| answered 204 | all answered s | slowest pin s | store failures (`limiter` events) | /plain idle max ms"
      .. " | /plain p50 ms | p99 ms | worst ms | worker held ms | asks |")
    say("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    say(("| %d/%d | %s | %s | %d | %s | %s | %s | %s | %s | %d |"):format(l.ok, l.n, fmt(l.seconds, 2),
      fmt(l.slowest, 2), st.limiter_events, fmt(idle.max, 1), fmt(s.p50, 1), fmt(s.p99, 1), fmt(s.max, 1),
      fmt(held, 1), s.n))
    say("")
    target(("Redis answering after %g ms: %d pins, a plain location's p99 < %d ms"):format(CFG.redis_delay * 1e3,
      CFG.redis_pins, T.redis_p99_ms), ("%s ms (worst %s; %d/%d pins answered, %d store failures)"):format(
      fmt(s.p99, 1), fmt(s.max, 1), l.ok, l.n, st.limiter_events), s.p99 < T.redis_p99_ms and l.ok == l.n)
  end)
  slow_redis:stop()
  r:stop()
  if not ok then error(err, 0) end
end

local function a5_dict(fast)
  say(("### A5. %d workers on one shared dictionary, %s pins"):format(CFG.dict_workers, CFG.dict_pins))
  say("")
  local app = start_app(fast.pin_base, { workers = CFG.dict_workers, cpus = CFG.dict_cpus, lag_all = true })
  load(app, "/pin/dict", 64, 16, "warm")
  stats(app)
  get(app, "/t/lag?all=1")
  local l = load(app, "/pin/dict", CFG.dict_pins, CFG.dict_flight, "dict")
  get(app, "/t/lag?all=0")
  local st = stats(app)
  app:stop()
  local waits = {}
  for i, w in ipairs(st.waits) do waits[i] = w * 1e3 end
  local given = {}
  for i, w in ipairs(st.given_up) do given[i] = w * 1e3 end
  local worst = math.max(pct(waits, 1) or 0, pct(given, 1) or 0)
  local holds = {}
  for i, w in ipairs(st.holds) do holds[i] = w * 1e3 end
  say(("%d workers (`reuseport`, on CPUs %s), each pinning through"
    .. " `periskope.limiter.shared_dict` on the one dictionary, %d pins at a time from the load generator against"
    .. " the local server answering at once. How the lock's waits are timed: the limiter takes any table with"
    .. " get/set/add/delete, so it is given a proxy of `ngx.shared.periskope` (bench/nb_app.lua) whose `add`"
    .. " notes, per request coroutine, when an add of the lock first returned `exists` and when that request's"
    .. " add succeeded (the job waits 1 ms with ngx.sleep between asks); a wait still open when its pin"
    .. " ended counts as given up. The proxy also times how long each take held the lock (its add to its"
    .. " delete of the lock), and every worker runs a timer of its own that sleeps 1 ms again and again"
    .. " (\"a 1 ms nap\": the longest it overslept in any worker): a wait much longer than the holds is a"
    .. " waiter whose naps came back late, not a lock held long. The proxy's own cost (clock reads, dictionary"
    .. " counters) is inside the times.")
    :format(CFG.dict_workers, CFG.dict_cpus, CFG.dict_flight))
  say("")
  say("| answered 204 | pins/s | workers that pinned | lock taken | adds refused (`exists`) | waits | wait p50 ms"
    .. " | p99 ms | longest ms | given up | store failures | lock held p50 ms | p99 ms | longest ms"
    .. " | a 1 ms nap, longest ms |")
  say("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  say(("| %d/%d | %s | %d | %d | %d | %d | %s | %s | %s | %d | %d | %s | %s | %s | %s |"):format(l.ok, l.n,
    fmt(l.n / l.seconds, 0), st.workers, st.locks, st.busy, #waits, fmt(pct(waits, 0.5), 2),
    fmt(pct(waits, 0.99), 2), fmt(pct(waits, 1), 2), #given, st.limiter_events, fmt(pct(holds, 0.5), 3),
    fmt(pct(holds, 0.99), 3), fmt(pct(holds, 1), 2), fmt(st.lag_max + 1, 1)))
  say("")
  target(("%d workers, one dictionary, %s pins: longest wait on its lock ≤ %d ms"):format(CFG.dict_workers,
    CFG.dict_pins, T.lock_ms), ("%s ms (%d waits, p99 %s ms; %d/%d pins answered)"):format(fmt(worst, 2), #waits,
    fmt(pct(waits, 0.99), 2), l.ok, l.n), worst <= T.lock_ms and l.ok == l.n and #given == 0)
end

------------------------------------------------------------------------------
-- B. Neovim

local function b_nvim(slow, fast)
  say(("### B. Neovim, headless: %d pins at once against a %g ms server, and CPU per pin on the loop")
    :format(CFG.nvim_pins, CFG.nvim_latency * 1e3))
  say("")
  if sh("command -v nvim"):match("^%s*$") then
    say("skipped: nvim is not installed")
    return
  end
  local dir = sh("mktemp -d"):match("[^\n]+")
  local _, code = sh(table.concat({
    "NB_CPATH=" .. sq(ROOT .. "/build/luajit/?.so"), "NB_LUA=" .. sq(ROOT .. "/lua/?.lua"),
    "NB_SLOW=" .. sq(slow.pin_base), "NB_FAST=" .. sq(fast.pin_base), "NB_KEY=" .. KEY, "NB_PHONE=" .. PHONE,
    "NB_PINS=" .. CFG.nvim_pins, "NB_CPU_PINS=" .. CFG.nvim_cpu_pins, "NB_CPU_ROUNDS=" .. CFG.nvim_cpu_rounds,
    "NB_CPU_FLIGHT=" .. CFG.nvim_cpu_flight, "NB_OUT=" .. sq(dir .. "/out"),
    "NB_STATUS=" .. sq(fast.url .. "/_status"),
    HAVE_PERF and ("NB_PERF_HZ=%d NB_PERF_CPU=%s NB_PERF_DIR=%s"):format(PERF_HZ, CFG.server_cpu,
      sq(ROOT .. "/build/bench")) or "",
    HAVE_TASKSET and ("taskset -c " .. CFG.client_cpu) or "",
    "timeout 600 nvim --headless -u NONE -i NONE -n",
    "-c " .. sq("luafile " .. ROOT .. "/bench/nb_nvim.lua"), "-c 'qa!' </dev/null >" .. sq(dir .. "/log") .. " 2>&1",
  }, " "))
  local r = cjson.decode(server.read_file(dir .. "/out") or "{}")
  local log = server.read_file(dir .. "/log") or ""
  sh("rm -rf " .. sq(dir))
  if r.error or not r.burst then
    say(("FAILED (exit %s): %s %s"):format(tostring(code), tostring(r.error), log:sub(1, 500)))
    target("Neovim", "FAILED", false)
    return
  end
  local version = sh("nvim --version"):match("^([^\n]+)")
  say(("%s, `-u NONE`, on CPU %s with every thread (taskset); the local servers on CPU %s. Two ways on the"
    .. " loop: **periskope.uv** (the module: the pin job in \"watch\" mode, libcurl on the loop's thread, its"
    .. " sockets behind one descriptor a uv poll handle watches) and **the pool-thread way**, which the module"
    .. " no longer ships and bench/nb_nvim.lua writes for the comparison (the job in \"send\" mode, each"
    .. " exchange by `periskope.perform` on a thread of libuv's pool through `uv.new_work`, the steps on the"
    .. " loop by `vim.schedule`: what periskope.uv did before). Each way's client is warmed first: its first"
    .. " pin goes alone to learn the budget (%s ms and %s ms), then %d pins are started at once while a"
    .. " 10 ms timer ticks and a `vim.loop.fs_stat` is asked every 5 ms (one at a time).")
    :format(version, CFG.client_cpu, CFG.server_cpu, fmt(r.burst.uv.warm_ms, 0), fmt(r.burst.pool.warm_ms, 0),
      CFG.nvim_pins))
  say("")
  say("| way | answered 204 | all back ms | starting them ms | timer's longest gap ms (began at ms) | ticks"
    .. " | fs_stat slowest ms (asked at ms) | fs_stats |")
  say("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  local names = { uv = "periskope.uv", pool = "the pool-thread way" }
  for _, way in ipairs { "uv", "pool" } do
    local x = r.burst[way]
    say(("| %s | %d/%d | %s | %s | %s (%s) | %d | %s (%s) | %d |"):format(names[way], x.ok, x.n, fmt(x.ms, 0),
      fmt(x.start_ms, 1), fmt(x.gap, 1), fmt(x.gap_at, 0), x.ticks, fmt(x.stat_max, 1), fmt(x.stat_at, 0), x.stats))
  end
  say("")
  local u = r.burst.uv
  target(("Neovim: %d pins at once, %g ms server, all back < %d ms (periskope.uv)"):format(CFG.nvim_pins,
    CFG.nvim_latency * 1e3, T.nvim_all_ms), ("%s ms, %d/%d answered"):format(fmt(u.ms, 0), u.ok, u.n),
    u.ms < T.nvim_all_ms and u.ok == u.n)
  target(("Neovim: the loop's longest gap (10 ms timer) < %d ms"):format(T.nvim_gap_ms), fmt(u.gap, 1) .. " ms",
    u.gap < T.nvim_gap_ms)
  target(("Neovim: a concurrent fs_stat answered < %d ms"):format(T.nvim_stat_ms),
    ("%s ms (slowest of %d)"):format(fmt(u.stat_max, 1), u.stats), u.stat_max < T.nvim_stat_ms and u.stats > 0)

  local tck = r.clk_tck or CLK_TCK
  say(("CPU per pin: %d rounds of %s pins per way, %d at a time, against the local server answering at once,"
    .. " the ways alternating (order rotated). The loop's thread is nvim's main thread"
    .. " (`/proc/<pid>/task/<pid>/stat`), the process all its threads (`/proc/<pid>/stat`: the pool's too);"
    .. " utime + stime, in clock ticks of %g ms. nvim had %d threads at the end.")
    :format(CFG.nvim_cpu_rounds, CFG.nvim_cpu_pins, CFG.nvim_cpu_flight, 1000 / tck, r.threads or 0))
  say("")
  say("| way | loop thread µs/pin (median) | rounds | whole process µs/pin (median) | rounds | pins/s"
    .. " | connections opened per pin | answered 204 |")
  say("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |")
  local med = {}
  for _, way in ipairs { "uv", "pool" } do
    local m, a, rm, ra, rate, ok, n, opened = {}, {}, {}, {}, {}, 0, 0, 0
    for i, x in ipairs(r.cpu[way]) do
      m[i] = x.main_ticks / tck / x.n * 1e6
      a[i] = x.all_ticks / tck / x.n * 1e6
      rm[i], ra[i] = fmt(m[i], 0), fmt(a[i], 0)
      rate[i] = x.n / x.wall
      ok, n, opened = ok + x.ok, n + x.n, opened + x.opened
    end
    med[way] = { main = median(m), all = median(a) }
    say(("| %s | %s | %s | %s | %s | %s | %s | %d/%d |"):format(names[way], fmt(median(m), 0), table.concat(rm, ", "),
      fmt(median(a), 0), table.concat(ra, ", "), fmt(median(rate), 0), fmt(opened / n, 2), ok, n))
  end
  say("")
  if r.perf then
    say(("The loop's thread, profiled: one more round of %s pins per way with `perf record -F %d -t <main"
      .. " thread>` and `perf stat -e raw_syscalls:sys_enter -t <main thread>`, as µs and system calls per pin"
      .. " (the pool's threads are not in it).")
      :format(CFG.nvim_cpu_pins, PERF_HZ))
    say("")
    local prof = {}
    for i, way in ipairs { "uv", "pool" } do
      prof[i] = perf_read(r.perf[way], r.perf[way].pins)
      prof[i].opened = r.perf[way].opened / r.perf[way].pins
    end
    perf_table({ names.uv, names.pool }, prof, { { "connections opened per pin",
      function(pr) return fmt(pr.opened, 2) end } })
  end
  target("Neovim: CPU per pin on the loop's thread, periskope.uv beside the pool-thread way (reported)",
    ("%s vs %s µs (whole process %s vs %s µs)"):format(fmt(med.uv.main, 0), fmt(med.pool.main, 0),
      fmt(med.uv.all, 0), fmt(med.pool.all, 0)), true)
end

------------------------------------------------------------------------------

local chosen, all = {}, true
for p in CFG.parts:gmatch("[^,%s]+") do
  if not (p:match("^a[1-5]$") or p == "b") then
    io.stderr:write("bench-nonblocking: BENCH_NB_PARTS: no step '", p, "' (a1,a2,a3,a4,a5,b)\n")
    os.exit(2)
  end
  chosen[p] = true
end
for _, p in ipairs { "a1", "a2", "a3", "a4", "a5", "b" } do all = all and chosen[p] end
if not all then
  sh("mkdir -p build/bench")
  CFG.results = "build/bench/nonblocking-partial.md"
end

local started = socket.gettime()
local load0 = (server.read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")
say("<!-- Written by `make bench-nonblocking` (bench/nonblocking.lua); do not edit by hand. -->")
say("")
say(("Measured %s UTC on %s, nginx %s with lua-nginx-module, checkout %s; load average at start %s.")
  :format(os.date("!%Y-%m-%d %H:%M"), (sh("nproc --all"):match("%d+") or "?") .. " cores",
    (sh("nginx -v 2>&1"):match("nginx/([%d.]+)") or "?"), (sh("git rev-parse --short HEAD"):match("%x+") or "?"),
    load0))
say("")
local fast = start_periskope(0)
local slow = start_periskope(CFG.latency)
local nvim_slow = start_periskope(CFG.nvim_latency)
local ok, err = pcall(function()
  local steps = {
    { "a1", a1_cpu, fast }, { "a2", a2_flight, slow }, { "a3", a3_burst, slow }, { "a4", a4_redis, fast },
    { "a5", a5_dict, fast }, { "b", b_nvim, nvim_slow, fast },
  }
  for _, s in ipairs(steps) do
    if chosen[s[1]] then s[2](s[3], s[4]) end
  end
end)
fast:stop()
slow:stop()
nvim_slow:stop()
if not ok then
  io.stderr:write("bench-nonblocking: ", tostring(err), "\n")
  os.exit(1)
end
say("### Targets")
say("")
say("| target | measured | |")
say("| --- | --- | --- |")
for _, line in ipairs(targets) do say(line) end
say("")
say(("`bench/nonblocking.lua` took %.0f s; load average at the end %s.")
  :format(socket.gettime() - started, (server.read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")))
server.write_file(CFG.results, table.concat(out, "\n") .. "\n")
print("bench: results in " .. CFG.results)
