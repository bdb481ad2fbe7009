-- What the parts of make bench share (bench/bench.lua runs them): the
-- settings, the report as it is written, numbers as the tables show them,
-- the one ratio to the reference, the processes' CPU time, the main server
-- and one checked client run.
local server = require "spec.support.server"
local clock = require "bench.clock"

local M = {}

local sh, sq = server.sh, server.quote
M.sh, M.sq = sh, sq
M.read_file, M.write_file = server.read_file, server.write_file
M.clock = clock

------------------------------------------------------------------------------
-- Settings (mk/bench.mk passes make's variables of the same names)

-- Each setting is the environment variable BENCH_<NAME> (its name here in
-- capitals), else its default here: a number where the default is one.
local DEFAULTS = {
  raw = "build/bench/raw_curl", raw_multi = "build/bench/raw_multi", dir = "build/bench",
  results = "bench/results.md", readme = "bench/README.md", png = "bench/pins_per_second.png",
  pins = 5000, warmup = 500, rounds = 8, curl_pins = 300, node_pins = 3000,
  cg_n1 = 2000, cg_n2 = 4000, cg_repeat = 2, many_trips = 50, many_latency = 0.02,
  rss_n1 = 10000, rss_n2 = 100000, host_pins = 20000,
  fair = "4x10,16x5,64x2", fair_rate = 10, fair_window = 2,
  server_cpu = "0", client_cpu = "1",
  cmd_rounds = 10, cmd_runs = 10, cmd_warmup = 3,
  outage_pins = 100, outage_concurrency = 16, outage_timeout = 1,
  -- A directory holding a libcurl.so.4 with symbols, used for the callgrind
  -- runs only (see bench/README.md): names libcurl's internal functions.
  cg_libdir = false,
  -- Which parts to run (bench.lua's list; all by default): a partial run
  -- (say BENCH_PARTS=cg) writes BENCH_DIR/results-partial.md and leaves the
  -- README and chart alone.
  parts = false,
}

M.CFG = { node_dir = "bench/node" }
for name, default in pairs(DEFAULTS) do
  local var = "BENCH_" .. name:upper()
  local v = os.getenv(var)
  if v == nil or v == "" then
    M.CFG[name] = default or nil
  elseif type(default) == "number" then
    M.CFG[name] = assert(tonumber(v), var .. " must be a number")
  else
    M.CFG[name] = v
  end
end

M.API_KEY = "bench-key-0123456789abcdef"
M.PHONE = "919874532456"
M.NODE_PORT = 8080 -- env: 'local' in the Node client means localhost:8080

------------------------------------------------------------------------------
-- The report: printed as it is written, kept for the results file.

M.lines = {}

function M.say(s)
  io.stdout:write(s, "\n")
  io.stdout:flush()
end

-- A line of the report.
function M.md(s)
  M.lines[#M.lines + 1] = s
  M.say(s)
end

-- A row of a Markdown table: its cells.
function M.row(...)
  M.md("| " .. table.concat({ ... }, " | ") .. " |")
end

-- The head of a Markdown table: its column names, and their alignment,
-- one letter each ("l" left, "r" right).
function M.table_head(names, align)
  assert(#names == #align, "one alignment letter per column")
  M.row((table.unpack or unpack)(names))
  local rule = {}
  for i = 1, #align do rule[i] = align:sub(i, i) == "r" and "---:" or "---" end
  M.row((table.unpack or unpack)(rule))
end

------------------------------------------------------------------------------
-- Numbers as the tables show them

-- 12345.6 -> "12,346".
function M.commas(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return (neg and "-" or "") .. s
end

-- x with `digits` decimals; "–" for nil or NaN.
function M.fmt(x, digits)
  if x == nil or x ~= x then return "–" end
  return ("%." .. (digits or 0) .. "f"):format(x)
end

function M.median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- A client row's ratio to the reference, rows[1]: the median of its
-- rounds' ratios where it ran in rounds beside the reference (part 1's
-- summarize sets row.ratio), else its rate over the reference's in all;
-- nil when either has no rate.
function M.ratio(row, rows)
  if row.ratio then return row.ratio end
  local ref = rows[1] and rows[1].rate
  if not (row.rate and ref) then return nil end
  return row.rate / ref
end

-- A target's verdict, and how far a figure that must reach `target` falls
-- short ("" when it does not).
function M.verdict(ok)
  return ok and "met" or "**missed**"
end

function M.short_by(x, target)
  if x >= target then return "" end
  return (" by %.1f %%"):format(100 * (target - x) / target)
end

------------------------------------------------------------------------------
-- Commands and processes

function M.have(cmd)
  local _, code = sh("command -v " .. sq(cmd) .. " >/dev/null 2>&1")
  return code == 0
end

-- The first line a command prints (stdout and stderr), trailing space off.
function M.first_line(cmd)
  local out = sh(cmd .. " 2>&1")
  return ((out:match("[^\n]*") or ""):gsub("%s+$", ""))
end

M.HAVE_TASKSET = M.have("taskset")

-- The words that run a command on CPU `cpu` (nothing without taskset).
function M.on_cpu(cpu)
  if M.HAVE_TASKSET then return "taskset -c " .. cpu .. " " end
  return ""
end

-- The environment every client runs in: this checkout's Lua modules, and
-- no proxy variables (the pins go to 127.0.0.1).
M.CLIENT_ENV = "env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY"
  .. " -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY -u PERISKOPE_DEBUG"
  .. " LUA_PATH=" .. sq("./?.lua;;") .. " "

-- The same with the module built for `lua` (build/<lua>/) first.
function M.lua_env(lua)
  return M.CLIENT_ENV .. "LUA_CPATH=" .. sq("build/" .. lua .. "/?.so;;") .. " "
end

local CLK_TCK = tonumber(M.first_line("getconf CLK_TCK")) or 100
M.CLK_TCK = CLK_TCK -- clock ticks a second, as /proc counts them

-- The clock ticks one process used so far (utime + stime, /proc).
local function pid_ticks(pid)
  local rest = (M.read_file("/proc/" .. pid .. "/stat") or ""):match("%)%s+(.*)$") or ""
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- After "(comm)": state is field 3, utime 14 and stime 15 of the whole line.
  return (tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)
end

-- The CPU seconds one process used so far.
function M.pid_cpu(pid)
  return pid_ticks(pid) / CLK_TCK
end

-- The nginx processes of srv (master and workers).
function M.server_pids(srv)
  local out = sh("pgrep -P " .. srv.pid)
  local pids = { srv.pid }
  for p in out:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

-- CPU seconds the server's processes used so far.
function M.server_cpu(srv)
  local ticks = 0
  for _, pid in ipairs(M.server_pids(srv)) do ticks = ticks + pid_ticks(pid) end
  return ticks / CLK_TCK
end

-- Keeps srv's processes on the server's CPU (BENCH_SERVER_CPU).
function M.pin_server(srv)
  if not M.HAVE_TASKSET then return end
  for _, pid in ipairs(M.server_pids(srv)) do
    sh("taskset -pc " .. M.CFG.server_cpu .. " " .. pid .. " >/dev/null 2>&1")
  end
end

------------------------------------------------------------------------------
-- The main server

-- Ports some socket uses (Linux /proc), as server.lua checks them.
local function port_in_use(port)
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local text = M.read_file(file) or ""
    for hex in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do
      if tonumber(hex, 16) == port then return true end
    end
  end
  return false
end

-- Starts the server the parts share: the mock with no effective rate limit
-- and the lean endpoint (srv.url .. "/lean/v1"), also listening on
-- 127.0.0.1:8080 for the Node client's env 'local' when that port is free.
-- Returns it and the URL the Node client reaches it at, or nil and why.
function M.start_main_server()
  local opts = { api_key = M.API_KEY, rate_limit = 1000000000, window = 60,
    extra_server = ("location /lean/v1/ { content_by_lua_block { require('bench.lean').pin(%q) } }")
      :format(M.API_KEY) }
  local node_url
  if not port_in_use(M.NODE_PORT) then
    opts.extra_http = ("server { listen 127.0.0.1:%d; access_log off;"
      .. " location /v1/ { content_by_lua_block { require('spec.support.mock').pin() } } }")
      :format(M.NODE_PORT)
    node_url = "http://localhost:" .. M.NODE_PORT .. "/v1"
  end
  local started, srv = pcall(server.start, opts)
  if not started and opts.extra_http then
    opts.extra_http, node_url = nil, nil
    started, srv = pcall(server.start, opts)
  end
  if not started then return nil, tostring(srv) end
  M.pin_server(srv)
  return srv, node_url or srv.base_url
end

------------------------------------------------------------------------------
-- Checked client runs

-- Runs cmd (one client run, which prints pins=, ok=, seconds= and maybe
-- cpu=), returns the parsed result or nil and why. Valid: every pin got a
-- 204 and the server counted expect_requests.
function M.run_client(srv, cmd, expect_requests)
  assert(srv:reset() == nil)
  local s0 = M.server_cpu(srv)
  local out, code = sh(cmd .. " 2>&1")
  local s1 = M.server_cpu(srv)
  local r = {
    pins = tonumber(out:match("pins=(%d+)")),
    ok = tonumber(out:match("ok=(%d+)")),
    seconds = tonumber(out:match("seconds=([%d.]+)")),
    cpu = tonumber(out:match("cpu=([%d.]+)")),
    server_cpu = s1 - s0,
    code = code,
    out = out,
  }
  if not (r.pins and r.ok and r.seconds) then
    return nil, ("exit %s: %s"):format(tostring(code), out:sub(1, 600))
  end
  r.server_requests = srv:stats().requests
  r.expect_requests = expect_requests
  r.valid = r.ok == r.pins and r.server_requests == expect_requests and code == 0
  return r
end

-- Checks the recorded requests of one client run (those the server kept):
-- returns how many were checked and a list of problems (at most 5).
function M.check_records(srv, id_prefix, want)
  local ok_list, list = pcall(srv.requests, srv)
  if not ok_list then return 0, { "could not read the records: " .. tostring(list) } end
  local problems, n = {}, 0
  local function bad(i, what)
    if #problems < 5 then problems[#problems + 1] = ("request %d: %s"):format(i, what) end
  end
  local path_pat = "^/v1/message/" .. id_prefix:gsub("%p", "%%%0") .. "%d+/pin$"
  for i, r in ipairs(list) do
    n = n + 1
    local h = r.headers or {}
    if r.method ~= "POST" then bad(i, "method " .. tostring(r.method)) end
    if not tostring(r.uri):match(path_pat) then bad(i, "path " .. tostring(r.uri)) end
    if r.body ~= '{"pin":true}' then bad(i, "body " .. tostring(r.body)) end
    if h["authorization"] ~= "Bearer " .. M.API_KEY then bad(i, "Authorization") end
    if h["x-phone"] ~= M.PHONE then bad(i, "x-phone") end
    if not tostring(h["content-type"]):match("^application/json") then
      bad(i, "Content-Type " .. tostring(h["content-type"]))
    end
    if want.accept and h["accept"] ~= want.accept then
      bad(i, "Accept " .. tostring(h["accept"]))
    end
    if want.user_agent and h["user-agent"] ~= want.user_agent then
      bad(i, "User-Agent " .. tostring(h["user-agent"]))
    end
  end
  return n, problems
end

-- What the checks of a client row (its runs, records and notes) found, as
-- the tables' "checks" column says it.
function M.check_text(row)
  if row.skipped then return row.skipped end
  if row.failed and #row.runs == 0 then return "FAILED" end
  local ok, pins, srvn, want = 0, 0, 0, 0
  for _, r in ipairs(row.runs) do
    ok, pins = ok + r.ok, pins + r.pins
    srvn, want = srvn + r.server_requests, want + r.expect_requests
  end
  local s = ("%s/%s 204s; server counted %s of %s sent"):format(M.commas(ok), M.commas(pins),
    M.commas(srvn), M.commas(want))
  if row.records then
    s = s .. ("; %s records checked"):format(M.commas(row.records))
    if #row.problems > 0 then s = s .. ", PROBLEMS: " .. table.concat(row.problems, "; ") end
  end
  if not row.valid then s = s .. " — NOT VALID" end
  for _, n in ipairs(row.notes) do s = s .. "; " .. n end
  return s
end

return M
