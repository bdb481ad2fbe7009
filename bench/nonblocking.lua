-- make bench, part "nonblocking": pinning without blocking the host.
--
--   lua5.4 bench/nonblocking.lua   (from the checkout root; mk/bench.mk runs it)
--
-- 1. nginx, one worker, a server answering after 300 ms: 32 pins at once
--    through each way, while a plain location on the same worker is asked
--    every 10 ms: the slowest pin, and the plain location's p50, p99 and
--    slowest answer. The ways: periskope.ngx (the thread pool: the one the
--    module ships), a cosocket prototype (the job's steps with the
--    exchange written on ngx.socket.tcp: enough HTTP/1.1 for this server's
--    answers, measured here only), and the blocking client:pin.
-- 2. The worker's CPU per pin for each way, against a server that answers
--    at once (BENCH_NB_CPU_PINS pins, 8 at a time): the worker's main
--    thread (what a pin takes from the worker's other requests) and the
--    whole process (the pool's threads included), from /proc.
-- 3. Neovim, headless: a 10 ms timer on the main loop while 8 pins wait
--    0.5 s each through periskope.uv.
--
-- It prints the results and writes them to BENCH_NB_RESULTS (Markdown).
-- Needs the LuaJIT build (make LUA=luajit), LuaSocket, nginx with its Lua
-- module, and nvim for part 3 (skipped without it).

package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local socket = require "socket"
local http = require "socket.http"

local sh, sq = server.sh, server.quote

local function env_num(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return assert(tonumber(v), name .. " must be a number")
end

local ROOT = sh("pwd"):match("[^\n]+")
local CFG = {
  results = os.getenv("BENCH_NB_RESULTS") or "bench/nonblocking.md",
  cpu_pins = env_num("BENCH_NB_CPU_PINS", 2000),
  cpath = ROOT .. "/build/luajit/?.so",
}

local out = {}
local function say(...)
  local line = table.concat({ ... })
  print(line)
  out[#out + 1] = line
end

-- The cosocket prototype: job:step with the exchange on ngx.socket.tcp. It
-- reads a head and a Content-Length body, no more (no chunked bodies, no
-- interim answers, no proxy): enough to measure, not to ship.
local COSOCKET = [==[
local function exchange(req)
  local t0 = ngx.now()
  local scheme, host, port, path = req.url:match("^(https?)://([^/:]+):?(%d*)(/.*)$")
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  local sock = ngx.socket.tcp()
  sock:settimeouts(req.connect_timeout * 1000, req.timeout * 1000, req.timeout * 1000)
  local ok, err = sock:connect(host, port)
  if not ok then return nil, "connect", "periskope: " .. err, 0 end
  if scheme == "https" then
    ok, err = sock:sslhandshake(nil, host, true)
    if not ok then return nil, "tls", "periskope: " .. err, 0 end
  end
  local lines = { "POST " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port }
  for _, h in ipairs(req.headers) do lines[#lines + 1] = h end
  lines[#lines + 1] = "Content-Length: " .. #req.body
  ok, err = sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. req.body)
  if not ok then return nil, "network", "periskope: " .. err, 0 end
  local head
  head, err = sock:receiveuntil("\r\n\r\n")()
  if not head then return nil, err == "timeout" and "timeout" or "network", "periskope: " .. err, 0 end
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local len = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)")) or 0
  local body = ""
  if len > 0 then
    body, err = sock:receive(len)
    if not body then return nil, "network", "periskope: " .. err, 0 end
  end
  sock:setkeepalive(5000, 64)
  ngx.update_time()
  return status, head .. "\r\n\r\n", body, ngx.now() - t0
end

return function(client, args)
  return require("periskope.ngx").drive(client:pin_job(args), exchange)
end
]==]

-- The app nginx: the OpenResty example as it is, one worker, plus /plain,
-- /pin/cosocket and /t/prepared.
local function start_app(srv)
  local dir = sh("mktemp -d"):match("[^\n]+")
  server.write_file(dir .. "/bench_cosocket.lua", COSOCKET)
  local ex = function(f) return server.read_file(ROOT .. "/examples/openresty/" .. f) end
  local app = server.start {
    workers = 1,
    lua_cpath = CFG.cpath,
    lua_path = ROOT .. "/examples/openresty/?.lua;" .. ROOT .. "/lua/?.lua;" .. dir .. "/?.lua",
    env = { PERISKOPE_API_KEY = srv.api_key, PERISKOPE_BASE_URL = srv.base_url, PERISKOPE_PHONE = "919874532456" },
    extra_main = ex("main.conf"),
    extra_http = ex("http.conf"),
    extra_server = ex("server.conf") .. [[
      location = /plain { return 200 "{}"; }
      location = /pin/cosocket {
        content_by_lua_block {
          local client = require("pin_handlers").client
          local res, err = require("bench_cosocket")(client, { message_id = ngx.var.arg_id })
          ngx.say(require("cjson").encode { status = res and res.status, error = err })
        }
      }
      location = /t/prepared {
        content_by_lua_block { ngx.say(require("periskope.ngx").prepared) }
      }
    ]],
  }
  app.tmp = dir
  local deadline = socket.gettime() + 10
  while tonumber((http.request(app.url .. "/t/prepared"))) < 32 do
    assert(socket.gettime() < deadline, "the thread pool was not prepared")
    socket.sleep(0.01)
  end
  return app
end

local function stop_app(app)
  app:stop()
  sh("rm -rf " .. sq(app.tmp))
end

local function pct(list, p)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  if #s == 0 then return 0 end
  return s[math.max(1, math.ceil(#s * p))]
end

-- n pins at once on path while /plain is asked every 10 ms.
local function burst(app, path, n)
  local dir = app.tmp
  local args = {}
  for i = 1, n do args[i] = sq(app.url .. path .. "?id=b" .. i) .. " -o /dev/null" end
  sh("(curl -sS --noproxy '*' --max-time 60 --parallel --parallel-immediate --parallel-max 64"
    .. " -w '%{http_code} %{time_total}\\n' " .. table.concat(args, " ") .. " > " .. sq(dir .. "/times")
    .. " 2>/dev/null; touch " .. sq(dir .. "/done") .. ") >/dev/null 2>&1 </dev/null &")
  local plain = {}
  while not server.read_file(dir .. "/done") do
    local t0 = socket.gettime()
    assert(http.request(app.url .. "/plain"))
    plain[#plain + 1] = socket.gettime() - t0
    socket.sleep(0.01)
  end
  local slowest, ok = 0, 0
  for code, t in server.read_file(dir .. "/times"):gmatch("(%d+) ([%d.]+)") do
    if code == "200" then ok = ok + 1 end
    slowest = math.max(slowest, tonumber(t))
  end
  os.remove(dir .. "/times")
  os.remove(dir .. "/done")
  return { ok = ok, slowest = slowest, p50 = pct(plain, 0.5), p99 = pct(plain, 0.99),
           max = pct(plain, 1), samples = #plain }
end

-- Seconds a thread has run on a CPU (schedstat: nanoseconds, not ticks).
local function cpu(tid_path)
  local ns = (server.read_file(tid_path .. "/schedstat") or ""):match("^(%d+)")
  return (tonumber(ns) or 0) / 1e9
end

-- The main thread's and the whole process's (every thread's) CPU seconds.
local function cpu_of(pid)
  local all = 0
  for tid in sh("ls /proc/" .. pid .. "/task"):gmatch("%d+") do
    all = all + cpu("/proc/" .. pid .. "/task/" .. tid)
  end
  return cpu("/proc/" .. pid .. "/task/" .. pid), all
end

local function worker_pid(app)
  return tonumber((sh("pgrep -P " .. app.pid):match("%d+")))
end

-- The worker's CPU per pin for path: n pins, 8 at a time.
local function cpu_per_pin(app, path, n)
  local pid = worker_pid(app)
  local main0, all0 = cpu_of(pid)
  -- curl --parallel with 8 at a time; the ids in one config file (argv stays short).
  local cfg = {}
  for i = 1, n do cfg[i] = ("url = %q\noutput = /dev/null"):format(app.url .. path .. "?id=c" .. i) end
  server.write_file(app.tmp .. "/urls", table.concat(cfg, "\n") .. "\n")
  local _, code = sh("curl -sS --noproxy '*' --parallel --parallel-max 8 -K " .. sq(app.tmp .. "/urls")
    .. " 2>/dev/null")
  assert(code == 0)
  local main1, all1 = cpu_of(pid)
  return (main1 - main0) / n * 1e6, (all1 - all0) / n * 1e6
end

local function run_nginx()
  say("### 1. nginx, one worker, a server answering after 300 ms: 32 pins at once")
  say("")
  say("Each way pins 32 messages at once (curl --parallel) while `/plain`, a `return 200` location on the same worker,")
  say("is asked every 10 ms until the last pin is answered. The pool's 32 Lua states are prepared first")
  say("(`periskope.ngx.prepare`, as the example's `init_worker_by_lua` does).")
  say("")
  say("| way | pins answered 200 | slowest pin (s) | /plain p50 (ms) | /plain p99 (ms) | /plain slowest (ms)"
    .. " | /plain samples |")
  say("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  local slow = server.start { latency = 0.3, rate_limit = 1000000 }
  local app = start_app(slow)
  -- The budget learned (the first pin goes alone), connections opened.
  for _, p in ipairs { "/pin", "/pin/cosocket", "/pin/blocking" } do
    assert(http.request(app.url .. p .. "?id=warm"))
  end
  local rows = {
    { "periskope.ngx (thread pool)", "/pin", 32 },
    { "cosocket prototype", "/pin/cosocket", 32 },
    { "client:pin (blocking)", "/pin/blocking", 32 },
  }
  for _, r in ipairs(rows) do
    local b = burst(app, r[2], r[3])
    say(("| %s | %d/%d | %.2f | %.1f | %.1f | %.1f | %d |"):format(r[1], b.ok, r[3], b.slowest,
      b.p50 * 1e3, b.p99 * 1e3, b.max * 1e3, b.samples))
  end
  stop_app(app)
  slow:stop()

  say("")
  say(("### 2. The worker's CPU per pin (%d pins, 8 at a time, a server answering at once)"):format(CFG.cpu_pins))
  say("")
  say("From `/proc/<worker>/task/<thread>/schedstat`: the main thread (CPU taken from the worker's other")
  say("requests) and every thread of the process (the pool's threads included).")
  say("")
  say("| way | main thread µs/pin | whole process µs/pin |")
  say("| --- | ---: | ---: |")
  local fast = server.start { rate_limit = 1000000 }
  app = start_app(fast)
  for _, r in ipairs(rows) do
    assert(http.request(app.url .. r[2] .. "?id=warm"))
    local main, all = cpu_per_pin(app, r[2], CFG.cpu_pins)
    say(("| %s | %.0f | %.0f |"):format(r[1], main, all))
  end
  stop_app(app)
  fast:stop()
end

local NVIM_DRIVER = [==[
local result = {}
local ok, err = pcall(function()
  package.cpath = os.getenv("NB_CPATH") .. ";" .. package.cpath
  package.path = os.getenv("NB_LUA") .. ";" .. package.path
  local periskope = require "periskope"
  local puv = require "periskope.uv"
  local uv = vim.uv or vim.loop
  local client = periskope.new { base_url = os.getenv("NB_BASE"), api_key = "test-key", phone = "919874532456" }
  local ticks, done = 0, {}
  local timer = uv.new_timer()
  local last, gap = uv.hrtime(), 0
  timer:start(10, 10, function()
    local now = uv.hrtime()
    gap = math.max(gap, (now - last) / 1e6)
    last = now
    ticks = ticks + 1
  end)
  local t0 = uv.hrtime()
  for i = 1, 8 do
    puv.pin(client, { message_id = "n" .. i }, function(res)
      done[#done + 1] = { id = "n" .. i, status = res and res.status, ms = (uv.hrtime() - t0) / 1e6 }
    end)
  end
  vim.wait(20000, function() return #done == 8 end, 5)
  result.ms = (uv.hrtime() - t0) / 1e6
  result.ticks, result.gap, result.done = ticks, gap, done
  timer:stop()
end)
if not ok then result.error = tostring(err) end
local f = io.open(os.getenv("NB_OUT"), "w")
f:write(vim.json and vim.json.encode(result) or vim.fn.json_encode(result))
f:close()
]==]

local function run_nvim()
  say("")
  say("### 3. Neovim, headless: 8 pins of 0.5 s each through periskope.uv, a 10 ms timer on the main loop")
  say("")
  if sh("command -v nvim"):match("^%s*$") then
    say("skipped: nvim is not installed")
    return
  end
  local srv = server.start { latency = 0.5, rate_limit = 1000000 }
  local dir = sh("mktemp -d"):match("[^\n]+")
  server.write_file(dir .. "/drv.lua", NVIM_DRIVER)
  sh(table.concat({
    "NB_CPATH=" .. sq(CFG.cpath), "NB_LUA=" .. sq(ROOT .. "/lua/?.lua"), "NB_BASE=" .. sq(srv.base_url),
    "NB_OUT=" .. sq(dir .. "/out"), "timeout 60 nvim --headless -u NONE -i NONE --clean -n",
    "-c " .. sq("luafile " .. dir .. "/drv.lua"), "-c 'qa!' </dev/null >/dev/null 2>&1",
  }, " "))
  local r = require("cjson").decode(server.read_file(dir .. "/out") or "{}")
  sh("rm -rf " .. sq(dir))
  srv:stop()
  if r.error or not r.done then
    say("failed: " .. tostring(r.error))
    return
  end
  local order = {}
  for _, d in ipairs(r.done) do order[#order + 1] = ("%s %d (%.0f ms)"):format(d.id, d.status or 0, d.ms) end
  say(("All 8 answered in %.0f ms; the timer ticked %d times meanwhile (%.0f expected at 10 ms), its longest"
    .. " gap %.1f ms. Results in order of completion: %s. libuv's pool has 4 threads (UV_THREADPOOL_SIZE),"
    .. " and the first pin goes alone to learn the budget: 0.5 s, then 4, then 3.")
    :format(r.ms, r.ticks, r.ms / 10, r.gap, table.concat(order, ", ")))
end

local started = socket.gettime()
say("<!-- Written by `make bench` (bench/nonblocking.lua); do not edit by hand. -->")
say("")
say(("Measured %s UTC on %s, load average at start %s."):format(os.date("!%Y-%m-%d %H:%M"),
  (sh("nproc"):match("%d+") or "?") .. " cores", (server.read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")))
say("")
run_nginx()
run_nvim()
say("")
say(("`bench/nonblocking.lua` took %.0f s."):format(socket.gettime() - started))
server.write_file(CFG.results, table.concat(out, "\n") .. "\n")
print("bench: results in " .. CFG.results)
