-- Part 1 (seq) of make bench: sequential pins per second. BENCH_ROUNDS
-- rounds of BENCH_PINS pins after BENCH_WARMUP warm-up pins, each client on
-- one connection: the raw C loop (the reference), periskope under Lua 5.4
-- and LuaJIT, luacurl under LuaJIT; then the official Node.js client and
-- the curl command (one process per pin) with fewer pins. Against the mock
-- (table 1) and the lean endpoint (table 1b), in the same rounds. Every run
-- is checked: the client's 204s, the server's own request count, and
-- (first round) every recorded request's method, path, headers and body.
local b = require "bench.common"

local CFG, sq, md = b.CFG, b.sq, b.md
local API_KEY, PHONE = b.API_KEY, b.PHONE

local M = {}

-- Target: periskope's sequential rate at least this times the raw loop's.
local TARGET = 1.0

-- The fast clients, run in rounds: name, short name (chart, targets),
-- message id prefix, command (base URL, prefix) and what their recorded
-- requests must carry.
local function seq_clients(ua)
  local W, N = CFG.warmup, CFG.pins
  local list = {
    { name = "raw C loop, one libcurl handle (reference)", short = "raw C", prefix = "raw-",
      cmd = function(base, p) return b.CLIENT_ENV .. b.on_cpu(CFG.client_cpu) .. sq(CFG.raw) .. " "
        .. sq(base) .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " " .. sq(ua) .. " "
        .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } },
    { name = "periskope, Lua 5.4", short = "periskope 5.4", prefix = "p54-",
      cmd = function(base, p) return b.lua_env("lua5.4") .. b.on_cpu(CFG.client_cpu)
        .. "lua5.4 bench/seq_periskope.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } },
    { name = "periskope, LuaJIT", short = "periskope JIT", prefix = "pjit-",
      cmd = function(base, p) return b.lua_env("luajit") .. b.on_cpu(CFG.client_cpu)
        .. "luajit bench/seq_periskope.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json" } },
  }
  local _, has_luacurl = b.sh("luajit -e 'require \"curl\"' >/dev/null 2>&1")
  if has_luacurl == 0 then
    list[#list + 1] = {
      name = "luacurl 0.3 (Debian lua-curl), LuaJIT, one handle", short = "luacurl JIT",
      prefix = "lc-",
      cmd = function(base, p) return b.CLIENT_ENV .. b.on_cpu(CFG.client_cpu)
        .. "luajit bench/seq_luacurl.lua " .. sq(base) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. sq(ua) .. " " .. W .. " " .. N .. " " .. sq(p) end,
      want = { accept = "application/json", user_agent = ua } }
  else
    list[#list + 1] = { name = "luacurl (Debian lua-curl), LuaJIT", short = "luacurl JIT",
      skipped = "skipped: lua-curl not installed (apt-get install -y lua-curl)" }
  end
  return list
end

-- The rounds of the fast clients against the mock's /v1/ and against the
-- lean endpoint: the rows of both tables.
local function rounds(srv, ua)
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
  b.say(("== sequential: %d round(s) of %d pins after %d warm-up pins, per client and endpoint")
    :format(CFG.rounds, CFG.pins, CFG.warmup))
  for round = 1, CFG.rounds do
    -- A different order each round, so no client always runs first or last.
    local order = {}
    for i = 1, #clients do order[i] = ((i - 1 + round - 1) % #clients) + 1 end
    for _, ep in ipairs(endpoints) do
      for _, i in ipairs(order) do
        local c, row = clients[i], ep.rows[i]
        if not c.skipped then
          local r, err = b.run_client(srv, c.cmd(ep.base, c.prefix), CFG.warmup + CFG.pins)
          if not r then
            row.failed = err
            b.say(("   %-5s %-14s round %d FAILED: %s"):format(ep.name, c.short, round, err))
          else
            r.round = round
            if round == 1 and ep.name == "mock" then
              local n, problems = b.check_records(srv, c.prefix, c.want)
              row.records, row.problems = n, problems
            end
            row.runs[#row.runs + 1] = r
            b.say(("   %-5s %-14s round %d: %6.0f pins/s  (%d/%d 204s, server counted %d)")
              :format(ep.name, c.short, round, r.pins / r.seconds, r.ok, r.pins, r.server_requests))
          end
        end
      end
    end
  end
  return endpoints[1].rows, endpoints[2].rows
end

-- The Node client, env 'local' (localhost:8080, or node_url), once: its row.
local function node(srv, node_url)
  local row = { name = "@periskope/periskope-client (Node.js), env 'local'",
    short = "Node client", runs = {}, notes = {} }
  local mods = CFG.node_dir .. "/node_modules/@periskope/periskope-client"
  if not b.have("node") then
    row.skipped = "skipped: node unavailable"
  elseif not b.read_file(mods .. "/package.json") then
    row.skipped = "skipped: npm unavailable (bench/node/node_modules missing)"
  else
    b.say(("== Node client: %d pins after 200 warm-up"):format(CFG.node_pins))
    local env = b.CLIENT_ENV .. "PERISKOPE_API_KEY=" .. sq(API_KEY) .. " PERISKOPE_PHONE="
      .. sq(PHONE) .. " "
    if node_url ~= "http://localhost:" .. b.NODE_PORT .. "/v1" then
      env = env .. "BENCH_BASE_URL=" .. sq(node_url) .. " "
      row.notes[#row.notes + 1] = "port 8080 was taken: fetch redirected"
    end
    local r, err = b.run_client(srv, env .. b.on_cpu(CFG.client_cpu) .. "timeout 300 node "
      .. sq(CFG.node_dir .. "/pin.js") .. " 200 " .. CFG.node_pins .. " node-",
      200 + CFG.node_pins)
    if r then
      row.runs[1] = r
      row.records, row.problems = b.check_records(srv, "node-", {})
      b.say(("   Node client: %.0f pins/s"):format(r.pins / r.seconds))
    else
      row.failed = err
      b.say("   Node client FAILED: " .. err)
    end
  end
  return row
end

-- The curl command, one process per pin, once: its row.
local function curl_command(srv, ua)
  local row = { name = "curl command, one process per pin", short = "curl cmd",
    runs = {}, notes = {} }
  if not b.have("curl") then
    row.skipped = "skipped: curl not installed"
    return row
  end
  b.say(("== curl command: %d pins, one process each"):format(CFG.curl_pins))
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
  b.write_file(CFG.dir .. "/curl_loop.sh", script .. "\n")
  assert(srv:reset() == nil)
  local s0 = b.server_cpu(srv)
  local t0 = b.clock.now()
  local out, code = b.sh(b.CLIENT_ENV .. b.on_cpu(CFG.client_cpu) .. "sh " .. sq(CFG.dir .. "/curl_loop.sh"))
  local seconds = b.clock.elapsed(t0)
  local s1 = b.server_cpu(srv)
  -- `times`: the shell's user and system time, then its children's.
  local cpu = 0
  for m, s in out:gmatch("(%d+)m([%d.]+)s") do cpu = cpu + tonumber(m) * 60 + tonumber(s) end
  local r = { pins = CFG.curl_pins, ok = tonumber(out:match("ok=(%d+)")) or 0,
    seconds = seconds, cpu = cpu, server_cpu = s1 - s0, code = code,
    server_requests = srv:stats().requests, expect_requests = CFG.curl_pins }
  r.valid = r.ok == r.pins and r.server_requests == r.pins
  row.runs[1] = r
  row.records, row.problems = b.check_records(srv, "cmd-",
    { accept = "application/json", user_agent = ua })
  b.say(("   curl command: %.0f pins/s"):format(r.pins / r.seconds))
  return row
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
    row.ratio = b.median(ratios)
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
      row.cpu_us = #cpus > 0 and b.median(cpus) or nil
      row.server_us = b.median(scpus)
      row.valid = true
      for _, r in ipairs(row.runs) do row.valid = row.valid and r.valid end
    end
  end
end

local function seq_table(rows, heading, intro)
  md(heading)
  md("")
  md(intro)
  md("")
  b.table_head({ "client", "pins", "seconds", "pins/s", "range", "× raw C", "client CPU µs/pin",
    "server CPU µs/pin", "checks" }, "lrrrrrrrl")
  for _, row in ipairs(rows) do
    if row.rate then
      local range = #row.runs > 1 and (b.commas(row.min) .. "–" .. b.commas(row.max)) or ""
      b.row(row.name, b.commas(row.pins), b.fmt(row.seconds, 2), b.commas(row.rate), range,
        b.fmt(b.ratio(row, rows), 3), b.fmt(row.cpu_us, 1), b.fmt(row.server_us, 1), b.check_text(row))
    else
      b.row(row.name, "–", "–", "–", "–", "–", "–", "–",
        row.skipped or ("FAILED: " .. tostring(row.failed):gsub("[\n|]", " ")))
    end
  end
  md("")
end

-- Runs the part: { rows = the mock's, lean_rows = the lean endpoint's }.
function M.run(ctx)
  local rows, lean_rows = rounds(ctx.srv, ctx.ua)
  rows[#rows + 1] = node(ctx.srv, ctx.node_url)
  rows[#rows + 1] = curl_command(ctx.srv, ctx.ua)
  summarize(rows)
  summarize(lean_rows)
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
    :format(CFG.rounds, b.commas(CFG.pins), CFG.warmup, b.commas(CFG.node_pins), b.commas(CFG.curl_pins)))
  seq_table(lean_rows, "### 1b. The same, against a lean endpoint",
    "The mock records each request as JSON, makes a trace id and decodes the body with"
    .. " cjson, which costs about as much CPU per pin as the clients spend, and a sequential"
    .. " client waits for all of it. `bench/lean.lua`, in the same nginx, checks method,"
    .. " path, Authorization, x-phone, Content-Type and body with plain comparisons, answers"
    .. " 204 with the same headers and counts in the same counter, but records nothing:"
    .. " close to nginx's own floor (a bare `return 204` costs about 50 µs of server CPU per"
    .. " request on this machine). Still not client-bound: the server's share stays large."
    .. " Same rounds, interleaved with the ones above.")
  return { rows = rows, lean_rows = lean_rows }
end

function M.targets(result)
  for _, set in ipairs { { result.rows, "mock" }, { result.lean_rows, "lean endpoint" } } do
    local rows = set[1]
    for _, row in ipairs(rows) do
      local x = row.short:match("^periskope") and b.ratio(row, rows)
      if x then
        b.row(("sequential %s ≥ %.2f× raw C (%s)"):format(row.short, TARGET, set[2]),
          ("%.3f×"):format(x), b.verdict(x >= TARGET) .. b.short_by(x, TARGET))
      end
    end
  end
end

-- Every row that has a rate came from valid runs only.
function M.valid(result)
  for _, row in ipairs(result.rows) do
    if row.rate and not row.valid then return false end
  end
  return true
end

return M
