-- make bench: periskope against the raw libcurl loop and its peers, on the
-- local Periskope server (spec/support/server.lua), in one run.
--
--   lua5.4 bench/bench.lua        (from the checkout root; mk/bench.mk runs it)
--
-- 1. Sequential pins per second, BENCH_ROUNDS rounds of BENCH_PINS pins after
--    BENCH_WARMUP warm-up pins, each client on one connection: the raw C loop
--    (the reference), periskope under Lua 5.4 and LuaJIT, luacurl under
--    LuaJIT; then the official Node.js client and the curl command (one
--    process per pin) with fewer pins. Every run is checked: the client's
--    204s, the server's own request count, and (first round) every recorded
--    request's method, path, headers and body.
-- 2. Client instructions per pin under callgrind: (I(N2) - I(N1)) / (N2 - N1)
--    for periskope (Lua 5.4) and the raw loop, and where they differ, by
--    function and by library.
-- 3. pin_many at concurrency 1, 4 and 16 beside libcurl's multi interface
--    (raw_multi.c), against servers answering after BENCH_MANY_LATENCY
--    seconds, with real-window and with stale X-RateLimit-* headers.
-- 4. VmRSS of a periskope process after BENCH_RSS_N1 and BENCH_RSS_N2 pins.
-- 5. Shared pacing under contention: for each "<processes>x<pins>" of
--    BENCH_FAIR, that many LuaJIT processes on one key and one Redis, each
--    pinning one message at a time, against a server allowing
--    BENCH_FAIR_RATE per BENCH_FAIR_WINDOW s: total time against the ideal,
--    429s, the slowest and the 99th-percentile pin (spec/support/fairness.lua,
--    which the contention spec runs too).
-- 6. CPU per pin of an nginx worker pinning BENCH_HOST_PINS times through
--    periskope from a content handler.
--
-- It prints the results, writes them to BENCH_RESULTS (Markdown), puts them
-- between the bench markers of BENCH_README, and draws BENCH_PNG with
-- gnuplot. Every setting is an environment variable (defaults below).

package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local fairness = require "spec.support.fairness"
local clock = require "bench.clock"

local sh, sq = server.sh, server.quote
local T_START = clock.now()

------------------------------------------------------------------------------
-- Settings

local function env_num(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return assert(tonumber(v), name .. " must be a number")
end

local function env_str(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local CFG = {
  raw = env_str("BENCH_RAW", "build/bench/raw_curl"),
  raw_multi = env_str("BENCH_RAW_MULTI", "build/bench/raw_multi"),
  dir = env_str("BENCH_DIR", "build/bench"),
  results = env_str("BENCH_RESULTS", "bench/results.md"),
  readme = env_str("BENCH_README", "bench/README.md"),
  png = env_str("BENCH_PNG", "bench/pins_per_second.png"),
  pins = env_num("BENCH_PINS", 5000),
  warmup = env_num("BENCH_WARMUP", 500),
  rounds = env_num("BENCH_ROUNDS", 8),
  curl_pins = env_num("BENCH_CURL_PINS", 300),
  node_pins = env_num("BENCH_NODE_PINS", 3000),
  cg_n1 = env_num("BENCH_CG_N1", 2000),
  cg_n2 = env_num("BENCH_CG_N2", 4000),
  cg_repeat = env_num("BENCH_CG_REPEAT", 2),
  many_trips = env_num("BENCH_MANY_TRIPS", 50),
  many_latency = env_num("BENCH_MANY_LATENCY", 0.02),
  rss_n1 = env_num("BENCH_RSS_N1", 10000),
  rss_n2 = env_num("BENCH_RSS_N2", 100000),
  fair = env_str("BENCH_FAIR", "4x10,16x5,64x2"),
  fair_rate = env_num("BENCH_FAIR_RATE", 10),
  fair_window = env_num("BENCH_FAIR_WINDOW", 2),
  server_cpu = env_str("BENCH_SERVER_CPU", "0"),
  client_cpu = env_str("BENCH_CLIENT_CPU", "1"),
  -- A directory holding a libcurl.so.4 with symbols, used for the callgrind
  -- runs only (see bench/README.md): names libcurl's internal functions.
  cg_libdir = env_str("BENCH_CG_LIBDIR", nil),
  node_dir = "bench/node",
  -- Which parts to run: a partial run (say BENCH_PARTS=cg) writes
  -- BENCH_DIR/results-partial.md and leaves the README and chart alone.
  host_pins = env_num("BENCH_HOST_PINS", 20000),
  parts = env_str("BENCH_PARTS", "seq,cg,many,rss,fair,host"),
}

local PARTS, ALL_PARTS = {}, true
for p in CFG.parts:gmatch("[^,%s]+") do PARTS[p] = true end
for _, p in ipairs { "seq", "cg", "many", "rss", "fair", "host" } do ALL_PARTS = ALL_PARTS and PARTS[p] == true end
if not ALL_PARTS then CFG.results = CFG.dir .. "/results-partial.md" end

local API_KEY = "bench-key-0123456789abcdef"
local PHONE = "919874532456"
local NODE_PORT = 8080 -- env: 'local' in the Node client means localhost:8080

-- Targets (see bench/README.md). fair_total: total time of a fairness run
-- at most this times the ideal; its slowest pin is held to ceil(N/B) + 1
-- windows, which needs no setting.
local TARGET = { seq = 1.0, instr = 1.0, many = 0.95, rss_kib = 100, fair_total = 1.25 }

------------------------------------------------------------------------------
-- Small helpers

local out_lines = {} -- the Markdown report, built as we go

local function say(s)
  io.stdout:write(s, "\n")
  io.stdout:flush()
end

local function md(s)
  out_lines[#out_lines + 1] = s
  say(s)
end

local function have(cmd)
  local _, code = sh("command -v " .. sq(cmd) .. " >/dev/null 2>&1")
  return code == 0
end

local function first_line(cmd)
  local out = sh(cmd .. " 2>&1")
  return ((out:match("[^\n]*") or ""):gsub("%s+$", ""))
end

local read_file, write_file = server.read_file, server.write_file

local function commas(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return (neg and "-" or "") .. s
end

local function fmt(x, digits)
  if x == nil or x ~= x then return "–" end
  return ("%." .. (digits or 0) .. "f"):format(x)
end

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- Ports some socket uses (Linux /proc), as server.lua checks them.
local function port_in_use(port)
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local text = read_file(file) or ""
    for hex in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do
      if tonumber(hex, 16) == port then return true end
    end
  end
  return false
end

local HAVE_TASKSET = have("taskset")
local function on_cpu(cpu)
  if HAVE_TASKSET then return "taskset -c " .. cpu .. " " end
  return ""
end

-- The environment every client runs in: this checkout's Lua modules, and
-- no proxy variables (the pins go to 127.0.0.1).
local CLIENT_ENV = "env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY"
  .. " -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY -u PERISKOPE_DEBUG"
  .. " LUA_PATH=" .. sq("./?.lua;;") .. " "
local function lua_env(lua)
  return CLIENT_ENV .. "LUA_CPATH=" .. sq("build/" .. lua .. "/?.so;;") .. " "
end

------------------------------------------------------------------------------
-- Server helpers

local CLK_TCK = tonumber(first_line("getconf CLK_TCK")) or 100

-- The nginx processes of srv (master and workers).
local function server_pids(srv)
  local out = sh("pgrep -P " .. srv.pid)
  local pids = { srv.pid }
  for p in out:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

-- CPU seconds the server's processes used so far.
local function server_cpu(srv)
  local ticks = 0
  for _, pid in ipairs(server_pids(srv)) do
    local stat = read_file("/proc/" .. pid .. "/stat") or ""
    local rest = stat:match("%)%s+(.*)$") or ""
    local f = {}
    for w in rest:gmatch("%S+") do f[#f + 1] = w end
    -- After "(comm)": state is field 3, utime 14 and stime 15 of the whole line.
    ticks = ticks + (tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)
  end
  return ticks / CLK_TCK
end

local function pin_server(srv)
  if not HAVE_TASKSET then return end
  for _, pid in ipairs(server_pids(srv)) do
    sh("taskset -pc " .. CFG.server_cpu .. " " .. pid .. " >/dev/null 2>&1")
  end
end

-- Checks the recorded requests of one client run (those the server kept):
-- returns how many were checked and a list of problems (at most 5).
local function check_records(srv, id_prefix, want)
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
    if h["authorization"] ~= "Bearer " .. API_KEY then bad(i, "Authorization") end
    if h["x-phone"] ~= PHONE then bad(i, "x-phone") end
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

------------------------------------------------------------------------------
-- Machine notes

local function machine_notes(ua)
  local cpu = (read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
  local rev = first_line("git rev-parse --short HEAD")
  local dirty = sh("git status --porcelain -- src 2>/dev/null")
  local notes = {
    { "date (UTC)", first_line("date -u '+%Y-%m-%d %H:%M'") },
    { "machine", ("%s, %s cores (nproc), %s"):format(cpu, first_line("nproc"),
      first_line("uname -sr")) },
    { "load average at start", (read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?" },
    { "checkout", rev:match("^%x+$") and (rev .. (dirty ~= "" and " + uncommitted changes in src/" or ""))
      or "?" },
    { "periskope User-Agent", ua },
    { "Lua", first_line("lua5.4 -v") .. "; " .. (first_line("luajit -v"):gsub(" %-%- .*", "")) },
    { "server", first_line("nginx -v") .. " + spec/support/mock.lua, 1 worker" },
    { "node", have("node") and first_line("node --version") or "not installed" },
    { "valgrind", have("valgrind") and first_line("valgrind --version") or "not installed" },
    { "cores", HAVE_TASKSET and ("server on CPU %s, clients on CPU %s (taskset)")
      :format(CFG.server_cpu, CFG.client_cpu) or "not pinned (no taskset)" },
  }
  md("### Machine")
  md("")
  md("| | |")
  md("| --- | --- |")
  for _, kv in ipairs(notes) do md(("| %s | %s |"):format(kv[1], kv[2])) end
  md("")
end

------------------------------------------------------------------------------
-- 1. Sequential pins

-- Runs cmd (one client run), returns the parsed result or nil and why.
local function run_client(srv, cmd, expect_requests)
  assert(srv:reset() == nil)
  local s0 = server_cpu(srv)
  local out, code = sh(cmd .. " 2>&1")
  local s1 = server_cpu(srv)
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

local function seq_clients(ua)
  local W, N = CFG.warmup, CFG.pins
  local list = {
    { name = "raw C loop, one libcurl handle (reference)", short = "raw C", prefix = "raw-",
      cmd = function(base, p) return CLIENT_ENV .. on_cpu(CFG.client_cpu) .. sq(CFG.raw) .. " "
        .. sq(base) .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " " .. sq(ua) .. " "
        .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } },
    { name = "periskope, Lua 5.4", short = "periskope 5.4", prefix = "p54-",
      cmd = function(base, p) return lua_env("lua5.4") .. on_cpu(CFG.client_cpu)
        .. "lua5.4 bench/seq_periskope.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } },
    { name = "periskope, LuaJIT", short = "periskope JIT", prefix = "pjit-",
      cmd = function(base, p) return lua_env("luajit") .. on_cpu(CFG.client_cpu)
        .. "luajit bench/seq_periskope.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json" } },
  }
  local _, has_luacurl = sh("luajit -e 'require \"curl\"' >/dev/null 2>&1")
  if has_luacurl == 0 then
    list[#list + 1] = {
      name = "luacurl 0.3 (Debian lua-curl), LuaJIT, one handle", short = "luacurl JIT",
      prefix = "lc-",
      cmd = function(base, p) return CLIENT_ENV .. on_cpu(CFG.client_cpu)
        .. "luajit bench/seq_luacurl.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. sq(ua) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } }
  else
    list[#list + 1] = { name = "luacurl (Debian lua-curl), LuaJIT", short = "luacurl JIT",
      skipped = "skipped: lua-curl not installed (apt-get install -y lua-curl)" }
  end
  return list
end

-- Runs the rounds of the fast clients against the mock's /v1/ and against
-- the lean endpoint, then the Node client and the curl command against the
-- mock. Returns the rows of both tables.
local function sequential(srv, node_url, ua)
  local clients = seq_clients(ua)
  local endpoints = {
    { name = "mock", base = srv.base_url, rows = {} },
    { name = "lean", base = srv.url .. "/lean/v1", rows = {} },
  }
  for _, ep in ipairs(endpoints) do
    for i, c in ipairs(clients) do
      ep.rows[i] = { name = c.name, short = c.short, runs = {}, skipped = c.skipped, notes = {} }
    end
  end
  say(("== sequential: %d round(s) of %d pins after %d warm-up pins, per client and endpoint")
    :format(CFG.rounds, CFG.pins, CFG.warmup))
  for round = 1, CFG.rounds do
    -- A different order each round, so no client always runs first or last.
    local order = {}
    for i = 1, #clients do order[i] = ((i - 1 + round - 1) % #clients) + 1 end
    for _, ep in ipairs(endpoints) do
      for _, i in ipairs(order) do
        local c, row = clients[i], ep.rows[i]
        if not c.skipped then
          local r, err = run_client(srv, c.cmd(ep.base, c.prefix), CFG.warmup + CFG.pins)
          if not r then
            row.failed = err
            say(("   %-5s %-14s round %d FAILED: %s"):format(ep.name, c.short, round, err))
          else
            r.round = round
            if round == 1 and ep.name == "mock" then
              local n, problems = check_records(srv, c.prefix, c.want)
              row.records, row.problems = n, problems
            end
            row.runs[#row.runs + 1] = r
            say(("   %-5s %-14s round %d: %6.0f pins/s  (%d/%d 204s, server counted %d)")
              :format(ep.name, c.short, round, r.pins / r.seconds, r.ok, r.pins, r.server_requests))
          end
        end
      end
    end
  end
  local rows = endpoints[1].rows

  -- The Node client: env 'local', i.e. localhost:8080.
  local node_row = { name = "@periskope/periskope-client (Node.js), env 'local'",
    short = "Node client", runs = {}, notes = {} }
  local mods = CFG.node_dir .. "/node_modules/@periskope/periskope-client"
  if not have("node") then
    node_row.skipped = "skipped: node unavailable"
  elseif not read_file(mods .. "/package.json") then
    node_row.skipped = "skipped: npm unavailable (bench/node/node_modules missing)"
  else
    say(("== Node client: %d pins after 200 warm-up"):format(CFG.node_pins))
    local env = CLIENT_ENV .. "PERISKOPE_API_KEY=" .. sq(API_KEY) .. " PERISKOPE_PHONE="
      .. sq(PHONE) .. " "
    if node_url ~= "http://localhost:" .. NODE_PORT .. "/v1" then
      env = env .. "BENCH_BASE_URL=" .. sq(node_url) .. " "
      node_row.notes[#node_row.notes + 1] = "port 8080 was taken: fetch redirected"
    end
    local r, err = run_client(srv, env .. on_cpu(CFG.client_cpu) .. "timeout 300 node "
      .. sq(CFG.node_dir .. "/pin.js") .. " 200 " .. CFG.node_pins .. " node-",
      200 + CFG.node_pins)
    if r then
      node_row.runs[1] = r
      node_row.records, node_row.problems = check_records(srv, "node-", {})
      say(("   Node client: %.0f pins/s"):format(r.pins / r.seconds))
    else
      node_row.failed = err
      say("   Node client FAILED: " .. err)
    end
  end
  rows[#rows + 1] = node_row

  -- The curl command, one process per pin.
  local curl_row = { name = "curl command, one process per pin", short = "curl cmd",
    runs = {}, notes = {} }
  if not have("curl") then
    curl_row.skipped = "skipped: curl not installed"
  else
    say(("== curl command: %d pins, one process each"):format(CFG.curl_pins))
    local script = table.concat({
      "i=0; ok=0",
      "while [ $i -lt " .. CFG.curl_pins .. " ]; do",
      "  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST"
        .. " -H " .. sq("Authorization: Bearer " .. API_KEY)
        .. " -H " .. sq("x-phone: " .. PHONE)
        .. " -H 'Content-Type: application/json' -H 'Accept: application/json'"
        .. " -A " .. sq(ua) .. " --data-binary '{\"pin\":true}'"
        .. " " .. sq(srv.base_url .. "/message/cmd-") .. "$i/pin)",
      "  [ \"$code\" = 204 ] && ok=$((ok+1))",
      "  i=$((i+1))",
      "done",
      "echo \"ok=$ok\"",
      "times",
    }, "\n")
    write_file(CFG.dir .. "/curl_loop.sh", script .. "\n")
    assert(srv:reset() == nil)
    local s0 = server_cpu(srv)
    local t0 = clock.now()
    local out, code = sh(CLIENT_ENV .. on_cpu(CFG.client_cpu) .. "sh " .. sq(CFG.dir .. "/curl_loop.sh"))
    local seconds = clock.elapsed(t0)
    local s1 = server_cpu(srv)
    -- `times`: the shell's user and system time, then its children's.
    local cpu = 0
    for m, s in out:gmatch("(%d+)m([%d.]+)s") do cpu = cpu + tonumber(m) * 60 + tonumber(s) end
    local r = { pins = CFG.curl_pins, ok = tonumber(out:match("ok=(%d+)")) or 0,
      seconds = seconds, cpu = cpu, server_cpu = s1 - s0, code = code,
      server_requests = srv:stats().requests, expect_requests = CFG.curl_pins }
    r.valid = r.ok == r.pins and r.server_requests == r.pins
    curl_row.runs[1] = r
    curl_row.records, curl_row.problems = check_records(srv, "cmd-",
      { accept = "application/json", user_agent = ua })
    say(("   curl command: %.0f pins/s"):format(r.pins / r.seconds))
  end
  rows[#rows + 1] = curl_row
  return rows, endpoints[2].rows
end

local function summarize(rows)
  -- The ratio to the reference (rows[1]): the median, over the rounds, of
  -- a client's rate divided by the reference's in the same round. Other
  -- work on the machine comes and goes within seconds; a round's clients
  -- run one after the other, so a ratio within a round cancels most of it.
  local ref = {}
  for _, r in ipairs(rows[1].runs) do ref[r.round or 0] = r.pins / r.seconds end
  for _, row in ipairs(rows) do
    local ratios = {}
    for _, r in ipairs(row.runs) do
      if r.round and ref[r.round] then ratios[#ratios + 1] = r.pins / r.seconds / ref[r.round] end
    end
    row.ratio = median(ratios)
  end
  for _, row in ipairs(rows) do
    if #row.runs > 0 then
      local rates, cpus, scpus = {}, {}, {}
      for i, r in ipairs(row.runs) do
        rates[i] = r.pins / r.seconds
        cpus[i] = r.cpu and r.cpu / r.pins * 1e6 or nil
        scpus[i] = r.server_cpu / r.pins * 1e6
      end
      -- The rate over all rounds (all pins / all seconds), so that pins,
      -- seconds and pins/s agree; the range shows the single rounds.
      row.pins, row.seconds = 0, 0
      for _, r in ipairs(row.runs) do
        row.pins, row.seconds = row.pins + r.pins, row.seconds + r.seconds
      end
      row.rate = row.pins / row.seconds
      row.min, row.max = math.min(table.unpack(rates)), math.max(table.unpack(rates))
      row.cpu_us = #cpus > 0 and median(cpus) or nil
      row.server_us = median(scpus)
      row.valid = true
      for _, r in ipairs(row.runs) do row.valid = row.valid and r.valid end
    end
  end
end

local function check_text(row)
  if row.skipped then return row.skipped end
  if row.failed and #row.runs == 0 then return "FAILED" end
  local ok, pins, srvn, want = 0, 0, 0, 0
  for _, r in ipairs(row.runs) do
    ok, pins = ok + r.ok, pins + r.pins
    srvn, want = srvn + r.server_requests, want + r.expect_requests
  end
  local s = ("%s/%s 204s; server counted %s of %s sent"):format(commas(ok), commas(pins),
    commas(srvn), commas(want))
  if row.records then
    s = s .. ("; %s records checked"):format(commas(row.records))
    if #row.problems > 0 then s = s .. ", PROBLEMS: " .. table.concat(row.problems, "; ") end
  end
  if not row.valid then s = s .. " — NOT VALID" end
  for _, n in ipairs(row.notes) do s = s .. "; " .. n end
  return s
end

local function seq_table(rows, heading, intro)
  local ref = rows[1].rate
  -- A row's ratio: the median of its rounds' (summarize), else (a client
  -- run once) its rate over the reference's rate in all.
  local function ratio(row)
    if row.ratio then return fmt(row.ratio, 3) end
    return ref and fmt(row.rate / ref, 3) or "–"
  end
  md(heading)
  md("")
  md(intro)
  md("")
  md("| client | pins | seconds | pins/s | range | × raw C | client CPU µs/pin | server CPU µs/pin | checks |")
  md("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  for _, row in ipairs(rows) do
    if row.rate then
      local range = #row.runs > 1 and (commas(row.min) .. "–" .. commas(row.max)) or ""
      md(("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(row.name, commas(row.pins),
        fmt(row.seconds, 2), commas(row.rate), range, ratio(row),
        fmt(row.cpu_us, 1), fmt(row.server_us, 1), check_text(row)))
    else
      md(("| %s | – | – | – | – | – | – | – | %s |"):format(row.name,
        row.skipped or ("FAILED: " .. tostring(row.failed):gsub("[\n|]", " "))))
    end
  end
  md("")
end

local function seq_tables(rows, lean_rows)
  seq_table(rows, "### 1. Sequential pins, one connection, against the mock",
    ("%d rounds of %s pins after %d warm-up pins for the first four (pins and seconds"
    .. " summed over the rounds, and the range of the rounds' rates); the Node client %s"
    .. " pins, the curl command %s. × raw C: for the first four, the median over the rounds"
    .. " of the client's rate divided by the raw loop's in the same round (the clients of a"
    .. " round run one after the other, so a ratio within a round cancels most of the other"
    .. " work on the machine); for the last two, their rate over the raw loop's in all."
    .. " Every pin a new message id, `{\"pin\":true}`. Client"
    .. " CPU: the client process's user + system time per pin (median of the rounds);"
    .. " server CPU: the nginx worker's. Checks: the 204s the client counted, the requests"
    .. " the server counted, and (first round) every recorded request's method, path,"
    .. " Authorization, x-phone, Content-Type, Accept, User-Agent and body.")
    :format(CFG.rounds, commas(CFG.pins), CFG.warmup, commas(CFG.node_pins), commas(CFG.curl_pins)))
  seq_table(lean_rows, "### 1b. The same, against a lean endpoint",
    "The mock records each request as JSON, makes a trace id and decodes the body with"
    .. " cjson, which costs about as much CPU per pin as the clients spend, and a sequential"
    .. " client waits for all of it. `bench/lean.lua`, in the same nginx, checks method,"
    .. " path, Authorization, x-phone, Content-Type and body with plain comparisons, answers"
    .. " 204 with the same headers and counts in the same counter, but records nothing:"
    .. " close to nginx's own floor (a bare `return 204` costs about 50 µs of server CPU per"
    .. " request on this machine). Still not client-bound: the server's share stays large."
    .. " Same rounds, interleaved with the ones above.")
end

------------------------------------------------------------------------------
-- 2. Callgrind

-- The Ir total of a callgrind output file.
local function cg_total(path)
  local text = read_file(path) or ""
  return tonumber(text:match("\ntotals:%s*(%d+)") or text:match("\nsummary:%s*(%d+)"))
end

-- callgrind_annotate's per-function Ir (inclusive or self) of a file:
-- { ["function [object]"] = Ir }. A line of a function's cost in another
-- file (inlined code) may come without its object: it takes the object the
-- same function name has elsewhere.
local function cg_functions(path, inclusive)
  local out = sh("callgrind_annotate --auto=no --threshold=100 "
    .. (inclusive and "--inclusive=yes " or "") .. sq(path) .. " 2>/dev/null")
  local lines, obj_of = {}, {}
  local in_list = false
  for line in out:gmatch("[^\n]+") do
    if line:match("^%s*Ir%s+file:function") then
      in_list = true
    elseif in_list then
      local num, rest = line:match("^%s*([%d,]+)%s+%([%s%d.]+%%%)%s+(.+)$")
      if num then
        local file_fn, obj = rest:match("^(.-)%s+%[(.+)%]$")
        file_fn = file_fn or rest
        local fn = file_fn:match("^.*:([^:]+)$") or file_fn
        obj = obj and obj:match("([^/]+)$")
        if obj then obj_of[fn] = obj_of[fn] or obj end
        lines[#lines + 1] = { fn, obj, tonumber((num:gsub(",", ""))) }
      end
    end
  end
  local map = {}
  for _, l in ipairs(lines) do
    local key = l[1] .. " [" .. (l[2] or obj_of[l[1]] or "?") .. "]"
    -- Self costs of one function add up; inclusive ones overlap: the largest.
    if inclusive then
      map[key] = math.max(map[key] or 0, l[3])
    else
      map[key] = (map[key] or 0) + l[3]
    end
  end
  return map
end

local function per_pin(m1, m2, dn)
  local r = {}
  for k, v2 in pairs(m2) do r[k] = (v2 - (m1[k] or 0)) / dn end
  return r
end

-- Library of a "function [object]" key, folded into a few groups.
local function lib_of(key)
  local obj = key:match("%[(.-)%]$") or "?"
  if obj:match("^libcurl") then return "libcurl" end
  if obj:match("^libc%.so") then return "libc (malloc, string, stdio)" end
  if obj:match("^lua5%.4") or obj:match("^liblua") then return "Lua 5.4 interpreter" end
  if obj:match("^periskope") then return "periskope.so" end
  if obj:match("^raw_curl") then return "raw_curl (the loop)" end
  if obj:match("^ld%-linux") then return "ld.so (symbol lookup)" end
  if obj:match("^libssl") or obj:match("^libcrypto") then return "OpenSSL" end
  return "other"
end

-- The sequential clients of part 2 (instructions, system calls): n pins
-- with message ids <id><i>, no warm-up. `through` (valgrind, say) goes
-- between the environment and the program, and ends with a space.
local function raw_cmd(srv, ua, n, id, through)
  return CLIENT_ENV .. through .. sq(CFG.raw) .. " " .. sq(srv.base_url) .. " " .. sq(API_KEY)
    .. " " .. sq(PHONE) .. " " .. sq(ua) .. " 0 " .. n .. " " .. id
end
local function periskope_cmd(srv, n, id, through, hook)
  return lua_env("lua5.4") .. through .. "lua5.4 bench/seq_periskope.lua " .. sq(srv.base_url)
    .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " 0 " .. n .. " " .. id .. (hook and " hook" or "")
end

-- System calls per pin of the raw loop and periskope (Lua 5.4), counted by
-- perf's tracepoints over N1 and N2 pins, as instructions are: each costs
-- about a microsecond on these machines, where a pin's client side is
-- about 35. Returns { raw = n, periskope = n } or nil.
local function syscalls(srv, ua)
  md("System calls per pin, counted by `perf stat -e raw_syscalls:sys_enter` (and"
    .. " `syscalls:sys_enter_poll`) over the same N1 and N2 pins, without valgrind:")
  md("")
  local events = "raw_syscalls:sys_enter,syscalls:sys_enter_poll"
  local probe, probe_code = "", 1
  if have("perf") then probe, probe_code = sh("perf stat -x, -e " .. events .. " true 2>&1") end
  if probe_code ~= 0 or probe:find("not supported", 1, true) or probe:find("not counted", 1, true) then
    md("skipped: perf with tracepoints unavailable (Debian package linux-perf, run as root)")
    md("")
    return nil
  end
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  local progs = {
    { name = "raw", label = "raw C loop",
      cmd = function(n) return raw_cmd(srv, ua, n, "scraw-", "") end },
    { name = "periskope", label = "periskope, Lua 5.4",
      cmd = function(n) return periskope_cmd(srv, n, "scp-", "") end },
  }
  local res = {}
  md("| client | system calls per pin | of which poll() |")
  md("| --- | ---: | ---: |")
  for _, p in ipairs(progs) do
    local counts = {}
    for _, n in ipairs { N1, N2 } do
      say(("== system calls: %s, %d pins"):format(p.label, n))
      local r, err = run_client(srv, on_cpu(CFG.client_cpu) .. "perf stat -x, -e " .. events
        .. " -- " .. p.cmd(n), n)
      if not r or not r.valid then
        md(("| %s | FAILED: %s | |"):format(p.label, err or "not every pin got a 204"))
        md("")
        return nil
      end
      counts[n] = {
        all = tonumber(r.out:match("\n(%d+),[^,]*,raw_syscalls:sys_enter")),
        poll = tonumber(r.out:match("\n(%d+),[^,]*,syscalls:sys_enter_poll")),
      }
      if not (counts[n].all and counts[n].poll) then
        md(("| %s | no count in perf's output | |"):format(p.label))
        md("")
        return nil
      end
    end
    res[p.name] = (counts[N2].all - counts[N1].all) / (N2 - N1)
    md(("| %s | %s | %s |"):format(p.label, fmt(res[p.name], 2),
      fmt((counts[N2].poll - counts[N1].poll) / (N2 - N1), 2)))
  end
  md("")
  return res
end

local function callgrind(srv, ua)
  md("### 2. Client instructions per pin (callgrind)")
  md("")
  if not have("valgrind") then
    md("skipped: valgrind not installed (apt-get install -y valgrind)")
    md("")
    return nil
  end
  local N1, N2 = CFG.cg_n1, CFG.cg_n2
  local ld = CFG.cg_libdir and ("LD_LIBRARY_PATH=" .. sq(CFG.cg_libdir) .. " ") or ""
  local function vg(name, n)
    return CFG.dir .. "/cg-" .. name .. "-" .. n .. ".out"
  end
  local function under_valgrind(name, n)
    return ld .. on_cpu(CFG.client_cpu) .. "valgrind --tool=callgrind --callgrind-out-file="
      .. sq(vg(name, n) .. ".run") .. " "
  end
  local progs = {
    { name = "raw", label = "raw C loop",
      cmd = function(n) return raw_cmd(srv, ua, n, "cgraw-", under_valgrind("raw", n)) end },
    { name = "periskope", label = "periskope, Lua 5.4",
      cmd = function(n) return periskope_cmd(srv, n, "cgp-", under_valgrind("periskope", n)) end },
    -- The same with an on_event hook that does nothing: what events cost
    -- when they are asked for. Without a hook no event table is built.
    { name = "hook", label = "periskope, Lua 5.4, on_event set (empty function)",
      cmd = function(n) return periskope_cmd(srv, n, "cgh-", under_valgrind("hook", n), true) end },
  }
  local res = {}
  for _, p in ipairs(progs) do
    res[p.name] = { label = p.label }
    for _, n in ipairs { N1, N2 } do
      -- The fewest instructions of BENCH_CG_REPEAT runs: libcurl's poll loop
      -- turns once more whenever the answer is not there yet, so the counts
      -- move by a percent or two with the timing; the minimum is steadier.
      for rep = 1, CFG.cg_repeat do
        say(("== callgrind: %s, %d pins (run %d of %d)"):format(p.label, n, rep, CFG.cg_repeat))
        local r, err = run_client(srv, p.cmd(n), n)
        if not r or not r.valid then
          md(("callgrind run of %s with %d pins FAILED: %s"):format(p.label, n,
            err or check_text({ runs = { r }, notes = {}, valid = false })))
          md("")
          return nil
        end
        local total = cg_total(vg(p.name, n) .. ".run")
        if not res[p.name][n] or total < res[p.name][n] then
          res[p.name][n] = total
          assert(os.rename(vg(p.name, n) .. ".run", vg(p.name, n)))
        else
          os.remove(vg(p.name, n) .. ".run")
        end
      end
    end
    res[p.name].per_pin = (res[p.name][N2] - res[p.name][N1]) / (N2 - N1)
  end
  local raw, psk = res.raw.per_pin, res.periskope.per_pin
  md(("Each client under `valgrind --tool=callgrind` with N1 = %s and N2 = %s pins, the"
    .. " fewest instructions of %d runs each; instructions per pin = (I(N2) − I(N1)) / (N2 − N1),"
    .. " which cancels start-up and connection set-up. Only the client process is measured."
    .. " These counts repeat to within about 2 %% here (libcurl's poll loop turns once more"
    .. " when an answer is late), so differences under ~2,000 per pin are noise.")
    :format(commas(N1), commas(N2), CFG.cg_repeat))
  if CFG.cg_libdir then
    md("")
    md("libcurl for these runs: `" .. CFG.cg_libdir .. "` (BENCH_CG_LIBDIR), a build with symbols.")
  end
  md("")
  md("| client | I(N1) | I(N2) | instructions per pin | × raw C |")
  md("| --- | ---: | ---: | ---: | ---: |")
  for _, name in ipairs { "raw", "periskope", "hook" } do
    local r = res[name]
    md(("| %s | %s | %s | %s | %s |"):format(r.label, commas(r[N1]), commas(r[N2]),
      commas(r.per_pin), fmt(r.per_pin / raw, 3)))
  end
  md("")

  -- Where the difference is: self cost per pin by library and by function.
  if not have("callgrind_annotate") then return { raw = raw, periskope = psk } end
  local dn = N2 - N1
  local self_p = per_pin(cg_functions(vg("periskope", N1)), cg_functions(vg("periskope", N2)), dn)
  local self_r = per_pin(cg_functions(vg("raw", N1)), cg_functions(vg("raw", N2)), dn)
  local incl_p = per_pin(cg_functions(vg("periskope", N1), true),
    cg_functions(vg("periskope", N2), true), dn)
  local incl_r = per_pin(cg_functions(vg("raw", N1), true), cg_functions(vg("raw", N2), true), dn)

  local libs, lib_names = {}, {}
  for key, v in pairs(self_p) do
    local l = lib_of(key)
    if not libs[l] then libs[l] = { 0, 0 }; lib_names[#lib_names + 1] = l end
    libs[l][1] = libs[l][1] + v
  end
  for key, v in pairs(self_r) do
    local l = lib_of(key)
    if not libs[l] then libs[l] = { 0, 0 }; lib_names[#lib_names + 1] = l end
    libs[l][2] = libs[l][2] + v
  end
  table.sort(lib_names, function(a, b) return libs[a][1] - libs[a][2] > libs[b][1] - libs[b][2] end)
  md("Self instructions per pin, by library (functions under callgrind_annotate's threshold"
    .. " are left out, so the sums fall a little short of the totals):")
  md("")
  md("| library | periskope | raw C | periskope − raw |")
  md("| --- | ---: | ---: | ---: |")
  for _, l in ipairs(lib_names) do
    local v = libs[l]
    if math.abs(v[1]) >= 50 or math.abs(v[2]) >= 50 then
      md(("| %s | %s | %s | %s |"):format(l, commas(v[1]), commas(v[2]), commas(v[1] - v[2])))
    end
  end
  md("")

  local keys = {}
  for k in pairs(self_p) do keys[#keys + 1] = k end
  for k in pairs(self_r) do if not self_p[k] then keys[#keys + 1] = k end end
  table.sort(keys, function(a, b)
    return (self_p[a] or 0) - (self_r[a] or 0) > (self_p[b] or 0) - (self_r[b] or 0)
  end)
  md("The 25 functions with the most extra self instructions per pin in periskope"
    .. " (`???:0x…` is a static function of a stripped library, by address):")
  md("")
  md("| function [object] | periskope | raw C | extra |")
  md("| --- | ---: | ---: | ---: |")
  for i = 1, math.min(25, #keys) do
    local k = keys[i]
    md(("| `%s` | %s | %s | %s |"):format(k, commas(self_p[k] or 0), commas(self_r[k] or 0),
      commas((self_p[k] or 0) - (self_r[k] or 0))))
  end
  md("")

  -- Inclusive cost of the entry points that matter, per pin.
  local watch = {
    "lpsk_client_pin", "do_pin", "lpsk_check_pin_args", "run_busy", "lpsk_job_step",
    "lpsk_build_request", "psk_request_build", "psk_http_perform", "prepare", "header_list",
    "take_reply", "lpsk_push_head", "read_line", "lpsk_push_result", "push_rate_limit",
    "psk_parse_http_date", "lpsk_pace_take", "psk_budget_take", "pace_settle",
    "psk_budget_settle", "psk_clock_learn", "lua_createtable", "lua_rawset", "lua_setfield",
    "lua_pushlstring", "one_run", "curl_easy_perform", "curl_multi_add_handle",
    "curl_multi_socket_action", "curl_multi_remove_handle", "singlesocket", "poll",
    "curl_easy_setopt", "curl_slist_append", "curl_slist_free_all", "curl_easy_getinfo",
    "curl_url_set", "curl_url_get", "curl_maprintf", "curl_mvaprintf", "curl_msnprintf",
    "getenv", "curl_getenv", "on_header", "on_body", "luaH_resize", "luaC_step",
    "luaH_newkey", "__vsnprintf_chk", "__snprintf_chk", "__isoc99_sscanf", "sscanf",
    "malloc", "free", "realloc", "calloc",
  }
  local function find(map, fn)
    local best
    for k, v in pairs(map) do
      if k:match("^" .. fn:gsub("%p", "%%%0") .. " %[") and (not best or v > best) then best = v end
    end
    return best
  end
  md("Inclusive instructions per pin of selected functions (– where the function does not"
    .. " run, is inlined, or is under the threshold):")
  md("")
  md("| function | periskope | raw C |")
  md("| --- | ---: | ---: |")
  for _, fn in ipairs(watch) do
    local p, r = find(incl_p, fn), find(incl_r, fn)
    if (p and p >= 1) or (r and r >= 1) then
      md(("| `%s` | %s | %s |"):format(fn, p and commas(p) or "–", r and commas(r) or "–"))
    end
  end
  md("")
  md(("Profiles: `%s`, `%s` (open with callgrind_annotate or kcachegrind).")
    :format(vg("periskope", N2), vg("raw", N2)))
  md("")
  return { raw = raw, periskope = psk }
end

------------------------------------------------------------------------------
-- 3. pin_many

-- The X-RateLimit-* a stand-in sends when it replays the OpenAPI example:
-- a reset of January 2025 on every answer, while Date says today.
local STALE_RATE = { limit = 10, remaining = 9, reset = 1737542181 }

-- Runs cmd (pin_many.lua or raw_multi) against srv; returns its rows
-- (c, pins, ok, seconds) keyed by concurrency, and whether the server
-- counted every request sent (warm-ups included).
local function many_run(srv, cmd, pattern)
  assert(srv:reset() == nil)
  local out, code = sh(cmd .. " 2>&1")
  local rows, sent = {}, 0
  for c, n, k, s in out:gmatch(pattern) do
    rows[tonumber(c)] = { c = tonumber(c), pins = tonumber(n), ok = tonumber(k),
      seconds = tonumber(s) }
    sent = sent + tonumber(c) + tonumber(n)
  end
  local counted = srv:stats().requests
  if not next(rows) then return nil, out:sub(1, 600) end
  return { rows = rows, code = code, counted = counted, sent = sent,
    valid = code == 0 and counted == sent }
end

local function pin_many()
  md(("### 3. pin_many against a server answering after %g ms, beside libcurl's multi interface")
    :format(CFG.many_latency * 1000))
  md("")
  local cases = {
    { name = "a real window", concs = { 1, 4, 16 },
      opts = { rate_limit = 1000000000 } },
    { name = "stale: reset 1737542181 (Jan 2025) on every answer", concs = { 1, 16 },
      opts = { rate_limit = 1000000000, fixed_rate = STALE_RATE } },
  }
  local summary = { valid = true }
  local lines = {}
  for _, case in ipairs(cases) do
    local opts = { api_key = API_KEY, latency = CFG.many_latency, connections = 4096 }
    for k, v in pairs(case.opts) do opts[k] = v end
    local ok, err = pcall(server.with, opts, function(srv)
      pin_server(srv)
      say(("== pin_many, %s: %d round trips of %g ms at concurrency %s")
        :format(case.name, CFG.many_trips, CFG.many_latency * 1000, table.concat(case.concs, ", ")))
      local psk, perr = many_run(srv, lua_env("lua5.4") .. on_cpu(CFG.client_cpu)
        .. "lua5.4 bench/pin_many.lua " .. sq(srv.base_url) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. CFG.many_trips .. " " .. table.concat(case.concs, " "),
        "pin_many c=(%d+) pins=(%d+) ok=(%d+) seconds=([%d.]+)")
      if not psk then error("pin_many.lua: " .. perr, 0) end
      local raw = {}
      for _, c in ipairs(case.concs) do
        local r, rerr = many_run(srv, CLIENT_ENV .. on_cpu(CFG.client_cpu) .. sq(CFG.raw_multi)
          .. " " .. sq(srv.base_url) .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " "
          .. sq(CFG.ua) .. " " .. c .. " " .. CFG.many_trips * c .. " multi-",
          "raw_multi c=(%d+) pins=(%d+) ok=(%d+) seconds=([%d.]+)")
        if not r then error("raw_multi: " .. rerr, 0) end
        raw[c] = r
      end
      for _, c in ipairs(case.concs) do
        local p, r = psk.rows[c], raw[c].rows[c]
        if not p or not r then error("no row for concurrency " .. c, 0) end
        p.rate, r.rate = p.pins / p.seconds, r.pins / r.seconds
        local valid = psk.valid and raw[c].valid and p.ok == p.pins and r.ok == r.pins
        summary.valid = summary.valid and valid
        lines[#lines + 1] = ("| %s | %d | %s | %s | %s | %s %% | %s/%s, %s/%s%s |"):format(
          case.name, c, commas(p.rate), commas(r.rate), fmt(p.rate / r.rate, 3),
          fmt(100 * p.rate / (c / CFG.many_latency), 1), commas(p.ok), commas(p.pins),
          commas(r.ok), commas(r.pins), valid and "" or " — NOT VALID")
        if c == 16 then
          summary[case.opts.fixed_rate and "stale" or "real"] = p.rate / r.rate
        end
      end
    end)
    if not ok then
      md("pin_many FAILED (" .. case.name .. "): " .. tostring(err))
      md("")
      return nil
    end
  end
  md(("Each concurrency c: a warm-up batch of c pins (opens the connections), then a timed"
    .. " batch of %d × c pins: periskope in one `client:pin_many(list, { concurrency = c })`"
    .. " (Lua 5.4), the reference in [`raw_multi.c`](raw_multi.c) (a C loop on libcurl's multi"
    .. " interface, c reused easy handles, the same request, no pacing); the ideal is c / %g s."
    .. " Two servers: one whose X-RateLimit-* headers describe a real window (a limit of 10⁹),"
    .. " and a stand-in that sends the OpenAPI example's `limit 10, remaining 9, reset"
    .. " 1737542181` on every answer while its Date says today. The server counted every request"
    .. " of every run (warm-ups included) or the row says NOT VALID.")
    :format(CFG.many_trips, CFG.many_latency))
  md("")
  md("| X-RateLimit-* headers | concurrency | periskope pins/s | libcurl multi pins/s | × multi"
    .. " | periskope, % of ideal | 204s (periskope, multi) |")
  md("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
  for _, l in ipairs(lines) do md(l) end
  md("")
  return summary
end

------------------------------------------------------------------------------
-- 4. RSS

local function rss(srv)
  md(("### 4. Memory: VmRSS of a periskope Lua 5.4 process after %s and %s pins")
    :format(commas(CFG.rss_n1), commas(CFG.rss_n2)))
  md("")
  say("== RSS: " .. CFG.rss_n2 .. " sequential pins")
  assert(srv:reset() == nil)
  local out, code = sh(lua_env("lua5.4") .. on_cpu(CFG.client_cpu) .. "lua5.4 bench/rss.lua "
    .. sq(srv.url .. "/lean/v1") .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " " .. CFG.rss_n1 .. " "
    .. CFG.rss_n2 .. " 2>&1")
  local points = {}
  for n, k, r, l in out:gmatch("rss pins=(%d+) ok=(%d+) vmrss_kib=(%d+) lua_kib=(%d+)") do
    points[#points + 1] = { pins = tonumber(n), ok = tonumber(k), rss = tonumber(r), lua = tonumber(l) }
  end
  if #points ~= 2 then
    md("RSS run FAILED: " .. out:sub(1, 600))
    md("")
    return nil
  end
  local counted = srv:stats().requests
  local a, b = points[1], points[2]
  local valid = code == 0 and b.ok == b.pins and counted == b.pins
  md("Against the lean endpoint (the pins' count, not the server, matters here). VmRSS read"
    .. " from `/proc/self/status` inside the process, with no forced collection (what a"
    .. " long-running process shows); the Lua heap from `collectgarbage(\"count\")`.")
  md("")
  md("| after | VmRSS KiB | Lua heap KiB |")
  md("| ---: | ---: | ---: |")
  md(("| %s pins | %s | %s |"):format(commas(a.pins), commas(a.rss), commas(a.lua)))
  md(("| %s pins | %s | %s |"):format(commas(b.pins), commas(b.rss), commas(b.lua)))
  md(("| growth | %s | %s |"):format(commas(b.rss - a.rss), commas(b.lua - a.lua)))
  md("")
  md(("%s/%s pins answered 204; the server counted %s requests%s.")
    :format(commas(b.ok), commas(b.pins), commas(counted), valid and "" or " — NOT VALID"))
  md("")
  return { growth = b.rss - a.rss, valid = valid }
end

------------------------------------------------------------------------------
-- 5. Shared pacing: fairness

-- The slowest a pin may wait with N processes at B per window: ceil(N/B) + 1 windows.
local function fair_bound(procs)
  return (math.ceil(procs / CFG.fair_rate) + 1) * CFG.fair_window
end

local function fair()
  md(("### 5. Shared pacing: processes pinning one at a time on one key and one Redis, %g per %g s")
    :format(CFG.fair_rate, CFG.fair_window))
  md("")
  local rows = {}
  for item in CFG.fair:gmatch("[^,%s]+") do
    local procs, pins = item:match("^(%d+)x(%d+)$")
    if not procs then error("BENCH_FAIR: each item is <processes>x<pins>, e.g. 16x5; got " .. item) end
    procs, pins = tonumber(procs), tonumber(pins)
    say(("== fair: %d LuaJIT processes x %d pins, one Redis"):format(procs, pins))
    local ok, r = pcall(fairness.run, { procs = procs, pins = pins, rate = CFG.fair_rate,
      window = CFG.fair_window })
    if not ok then
      md("Fairness run FAILED: " .. tostring(r))
      md("")
      return nil
    end
    say(fairness.line("fair", r))
    r.pins, r.bound = pins, fair_bound(procs)
    rows[#rows + 1] = r
  end
  md("Each process (`spec/support/one_at_a_time.lua`, LuaJIT) pins its messages one at a time, as a"
    .. " request handler does, through `periskope.limiter.redis` on one Redis; the local server allows"
    .. (" %g requests per %g s window and answers 429 past them. The ideal is the pins' share of"):format(
      CFG.fair_rate, CFG.fair_window)
    .. " windows (total / rate × window); a pin's wait is measured in its process, from the call"
    .. " to the answer. The bound on a single pin is ceil(N / B) + 1 windows.")
  md("")
  md("| processes × pins | total s | ideal s | × ideal | answered 429 | slowest pin s | p99 pin s | bound s"
    .. " | store failures | 204s |")
  md("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  local valid = true
  for _, r in ipairs(rows) do
    md(("| %d × %d | %s | %s | %s | %d | %s | %s | %s | %d | %d/%d |"):format(r.procs, r.pins,
      fmt(r.elapsed, 2), fmt(r.ideal, 1), fmt(r.elapsed / r.ideal, 2), r.answered429, fmt(r.slowest, 2),
      fmt(r.p99, 2), fmt(r.bound, 0), r.store_failures, r.ok, r.total))
    valid = valid and r.ok == r.total and not r.failure
  end
  md("")
  md("A store failure is an ask the store did not answer in time (a `limiter` event): that pin was"
    .. " paced by its process alone. Each run starts its own server and Redis; the machine's load"
    .. " average is in the Machine table, and timings move with it.")
  md("")
  return { rows = rows, valid = valid }
end

------------------------------------------------------------------------------
-- 6. An nginx worker pinning through periskope

-- The CPU seconds one process used so far (utime + stime, /proc).
local function pid_cpu(pid)
  local rest = (read_file("/proc/" .. pid .. "/stat") or ""):match("%)%s+(.*)$") or ""
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / CLK_TCK
end

-- A second nginx, the host: one worker whose content handler pins n times
-- in a loop through periskope (the LuaJIT build, as nginx's Lua is LuaJIT)
-- against the lean endpoint of srv. The worker's CPU time per pin is what
-- a pin takes from the other requests that worker serves.
local function host(srv)
  md("### 6. CPU per pin of an nginx worker pinning through periskope")
  md("")
  local root = sh("pwd"):match("[^\n]+")
  local loc = ([[
    location = /bench/pins {
      content_by_lua_block {
        local c = package.loaded.bench_host_client
        if not c then
          c = require("periskope").new { api_key = %q, phone = %q, base_url = %q }
          package.loaded.bench_host_client = c
        end
        local args = ngx.req.get_uri_args()
        local ok = 0
        for i = 1, tonumber(args.n) do
          local res = c:pin { message_id = args.prefix .. i }
          if res and res.status == 204 then ok = ok + 1 end
        end
        ngx.say("ok=", ok)
      }
    }]]):format(API_KEY, PHONE, srv.url .. "/lean/v1")
  local result
  local ok, err = pcall(server.with, { api_key = API_KEY, lua_cpath = root .. "/build/luajit/?.so",
      extra_server = loc }, function(h)
    local pids = server_pids(h)
    local worker = pids[2]
    if not worker then error("the host has no worker", 0) end
    if HAVE_TASKSET then sh("taskset -pc " .. CFG.client_cpu .. " " .. worker .. " >/dev/null 2>&1") end
    local function call(n, prefix)
      local out = sh("curl -s --max-time 600 " .. sq(h.url .. "/bench/pins?n=" .. n .. "&prefix=" .. prefix))
      return tonumber(out:match("ok=(%d+)"))
    end
    say(("== nginx host: %d pins from one worker's content handler"):format(CFG.host_pins))
    call(CFG.warmup, "host-warm-")
    assert(srv:reset() == nil)
    local c0, s0, t0 = pid_cpu(worker), server_cpu(srv), clock.now()
    local got = call(CFG.host_pins, "host-")
    local seconds = clock.elapsed(t0)
    local c1, s1 = pid_cpu(worker), server_cpu(srv)
    result = { ok = got or 0, cpu = c1 - c0, server = s1 - s0, seconds = seconds,
      counted = srv:stats().requests }
  end)
  if not ok or not result then
    md("host run FAILED: " .. tostring(err))
    md("")
    return nil
  end
  local n = CFG.host_pins
  result.valid = result.ok == n and result.counted == n
  md(("One nginx worker (the host, `lua_cpath` = `build/luajit`) serves one request whose"
    .. " content handler pins %s times in a loop on one client, against the lean endpoint of"
    .. " the main server. The worker's CPU time (user + system, `/proc/<pid>/stat`) over the"
    .. " request, divided by the pins, is what each pin takes from the other requests that"
    .. " worker would serve; the blocking pin also holds the worker for the whole round trip"
    .. " (the non-blocking way, periskope.ngx, is measured in bench/nonblocking.md)."):format(commas(n)))
  md("")
  md("| pins | seconds | pins/s | worker CPU µs/pin | server CPU µs/pin | checks |")
  md("| ---: | ---: | ---: | ---: | ---: | --- |")
  md(("| %s | %s | %s | %s | %s | %s/%s 204s; server counted %s%s |"):format(commas(n),
    fmt(result.seconds, 2), commas(n / result.seconds), fmt(result.cpu / n * 1e6, 1),
    fmt(result.server / n * 1e6, 1), commas(result.ok), commas(n), commas(result.counted),
    result.valid and "" or " — NOT VALID"))
  md("")
  return { cpu_us = result.cpu / n * 1e6, valid = result.valid }
end

------------------------------------------------------------------------------
-- Targets, chart, files

local function verdict(ok)
  return ok and "met" or "**missed**"
end

local function targets(summary)
  md("### Targets")
  md("")
  md("| target | measured | |")
  md("| --- | --- | --- |")
  for _, set in ipairs { { summary.rows, "mock" }, { summary.lean_rows, "lean endpoint" } } do
    local rows = set[1] or {}
    local raw = rows[1] and rows[1].rate
    for _, row in ipairs(rows) do
      if row.short:match("^periskope") and row.rate and raw then
        local x = row.ratio or row.rate / raw
        md(("| sequential %s ≥ %.2f× raw C (%s) | %.3f× | %s%s |"):format(row.short, TARGET.seq,
          set[2], x, verdict(x >= TARGET.seq), x >= TARGET.seq and ""
            or (" by %.1f %%"):format(100 * (TARGET.seq - x) / TARGET.seq)))
      end
    end
  end
  if summary.cg then
    local x = summary.cg.periskope / summary.cg.raw
    md(("| instructions per pin ≤ %.2f× raw C | %.3f× (%s vs %s) | %s%s |"):format(TARGET.instr, x,
      commas(summary.cg.periskope), commas(summary.cg.raw), verdict(x <= TARGET.instr),
      x <= TARGET.instr and "" or (": %s instructions per pin over the target")
        :format(commas(summary.cg.periskope - TARGET.instr * summary.cg.raw))))
  end
  if summary.many then
    for _, k in ipairs { "real", "stale" } do
      local x = summary.many[k]
      if x then
        md(("| pin_many c16 ≥ %.2f× libcurl's multi interface at 16 (%s headers) | %.3f× | %s%s |")
          :format(TARGET.many, k == "real" and "real-window" or "stale", x,
            verdict(x >= TARGET.many), x >= TARGET.many and ""
              or (" by %.1f %%"):format(100 * (TARGET.many - x) / TARGET.many)))
      end
    end
  end
  if summary.rss then
    local g = summary.rss.growth
    md(("| RSS growth 10k → 100k pins < %d kB | %s kB | %s |"):format(TARGET.rss_kib, commas(g),
      verdict(g < TARGET.rss_kib)))
  end
  for _, r in ipairs(summary.fair and summary.fair.rows or {}) do
    local x = r.elapsed / r.ideal
    md(("| %d processes: slowest pin ≤ %g windows (%g s) | %s s | %s |"):format(r.procs,
      r.bound / CFG.fair_window, r.bound, fmt(r.slowest, 2), verdict(r.slowest <= r.bound)))
    md(("| %d processes: total ≤ %.2f× ideal, no 429 | %.2f×, %d × 429 | %s |"):format(r.procs,
      TARGET.fair_total, x, r.answered429, verdict(x <= TARGET.fair_total and r.answered429 == 0)))
  end
  md("")
end

local function chart(rows, lean_rows)
  if not have("gnuplot") then
    md("Chart skipped: gnuplot is not installed (apt-get install -y gnuplot-nox).")
    md("")
    return
  end
  local dat = {}
  -- A row's ratio as the tables give it (seq_table).
  local function ratio(r, set)
    local ref = set[1] and set[1].rate
    if not (r and r.rate) or not (r.ratio or ref) then return "NaN" end
    return ("%.4f"):format(r.ratio or r.rate / ref)
  end
  for i, row in ipairs(rows) do
    local lr = lean_rows and lean_rows[i] and lean_rows[i].short == row.short and lean_rows[i] or nil
    local lean = lr and lr.rate
    if row.rate or lean then
      dat[#dat + 1] = ("%d \"%s\" %s %s %s %s"):format(#dat, row.short,
        row.rate and ("%.1f"):format(row.rate) or "NaN", lean and ("%.1f"):format(lean) or "NaN",
        ratio(row, rows), ratio(lr, lean_rows or {}))
    end
  end
  local datfile = CFG.dir .. "/pins_per_second.dat"
  write_file(datfile, table.concat(dat, "\n") .. "\n")
  local _, code = sh("gnuplot -e " .. sq("datafile='" .. datfile .. "'; outfile='" .. CFG.png
    .. "'; subtitle='" .. first_line("date -u '+%Y-%m-%d'") .. ": " .. commas(CFG.pins)
    .. " pins per round on one connection (Node " .. commas(CFG.node_pins) .. ", curl command "
    .. commas(CFG.curl_pins) .. "), local server'") .. " bench/chart.gp 2>&1")
  if code == 0 then
    md("Chart: [`pins_per_second.png`](pins_per_second.png).")
  else
    md("Chart FAILED (gnuplot exit " .. tostring(code) .. ").")
  end
  md("")
end

-- Puts text between the bench markers of the README (appends them when absent).
local BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
local function update_readme(text)
  local readme = read_file(CFG.readme)
  if not readme then return false end
  local a = readme:find(BEGIN, 1, true)
  local b = readme:find(END, 1, true)
  if a and b and b > a then
    readme = readme:sub(1, a - 1) .. BEGIN .. "\n" .. text .. "\n" .. readme:sub(b)
  else
    readme = readme .. "\n" .. BEGIN .. "\n" .. text .. "\n" .. END .. "\n"
  end
  write_file(CFG.readme, readme)
  return true
end

------------------------------------------------------------------------------
-- Main

sh("mkdir -p " .. sq(CFG.dir))
for _, prog in ipairs { CFG.raw, CFG.raw_multi } do
  if not read_file(prog) then
    io.stderr:write("bench: ", prog, " is missing: run `make bench`\n")
    os.exit(2)
  end
end

-- The exact User-Agent periskope sends, so the other clients send it too.
local ua = first_line(lua_env("lua5.4") .. "lua5.4 -e " .. sq(
  "local c = require('periskope').new{ api_key = 'k', base_url = 'http://127.0.0.1:1/v1' }"
  .. " print(c:build_pin{ message_id = 'x' }.headers['User-Agent'])"))
if not ua:match("^periskope%-lua/") then
  io.stderr:write("bench: cannot load build/lua5.4/periskope.so: ", ua, "\n")
  os.exit(2)
end
CFG.ua = ua

md("<!-- Written by `make bench` (bench/bench.lua); do not edit by hand. -->")
md("")
machine_notes(ua)

local summary = {}
-- The main server: no effective rate limit; also listening on
-- 127.0.0.1:8080 for the Node client's env 'local' when that port is free.
local main_opts = { api_key = API_KEY, rate_limit = 1000000000, window = 60,
  extra_server = ("location /lean/v1/ { content_by_lua_block { require('bench.lean').pin(%q) } }")
    :format(API_KEY) }
local node_url
if not port_in_use(NODE_PORT) then
  main_opts.extra_http = ("server { listen 127.0.0.1:%d; access_log off;"
    .. " location /v1/ { content_by_lua_block { require('spec.support.mock').pin() } } }")
    :format(NODE_PORT)
  node_url = "http://localhost:" .. NODE_PORT .. "/v1"
end
local started, srv = pcall(server.start, main_opts)
if not started and main_opts.extra_http then
  main_opts.extra_http, node_url = nil, nil
  started, srv = pcall(server.start, main_opts)
end
if not started then
  io.stderr:write("bench: the local server did not start: ", tostring(srv), "\n")
  os.exit(2)
end
node_url = node_url or srv.base_url
pin_server(srv)

local ok_main, err_main = pcall(function()
  if PARTS.seq then
    local rows, lean_rows = sequential(srv, node_url, ua)
    summarize(rows)
    summarize(lean_rows)
    seq_tables(rows, lean_rows)
    summary.rows, summary.lean_rows = rows, lean_rows
  end
  if PARTS.cg then
    summary.cg = callgrind(srv, ua)
    summary.syscalls = syscalls(srv, ua)
  end
  if PARTS.many then summary.many = pin_many() end
  if PARTS.rss then summary.rss = rss(srv) end
  if PARTS.fair then summary.fair = fair() end
  if PARTS.host then summary.host = host(srv) end
end)
srv:stop()
if not ok_main then
  io.stderr:write("bench: ", tostring(err_main), "\n")
  os.exit(1)
end
targets(summary)
if ALL_PARTS then chart(summary.rows or {}, summary.lean_rows) end
md(("`make bench` took %.0f s; load average at the end: %s.")
  :format(clock.elapsed(T_START), (read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?"))

local text = table.concat(out_lines, "\n") .. "\n"
-- The soak's section (make soak, bench/soak.lua) stays as the soak wrote it.
local soak = (read_file(CFG.results) or ""):match("<!%-%- soak:begin %-%->.-<!%-%- soak:end %-%->\n?")
write_file(CFG.results, soak and text .. "\n" .. soak or text)
say("")
say("bench: results in " .. CFG.results
  .. ((ALL_PARTS and update_readme(text)) and (" and " .. CFG.readme) or ""))

-- Exit 1 when some client's pins were not all valid: a figure from invalid
-- requests means nothing. Missed targets are results, not failures.
local valid = true
for _, row in ipairs(summary.rows or {}) do
  if row.rate and not row.valid then valid = false end
end
if summary.many and not summary.many.valid then valid = false end
if summary.rss and not summary.rss.valid then valid = false end
if summary.fair and not summary.fair.valid then valid = false end
if summary.host and not summary.host.valid then valid = false end
os.exit(valid and 0 or 1)
