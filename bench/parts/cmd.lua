-- Part 7 (cmd) of make bench: one pin through the periskope command, one
-- process per pin as a script calls it, against one curl process sending
-- the same request to the same server: wall time per call, measured by
-- hyperfine (Debian's hyperfine; make bench-deps installs it),
-- BENCH_CMD_ROUNDS rounds of BENCH_CMD_RUNS runs of every case after
-- BENCH_CMD_WARMUP, interleaved and pooled. The command is measured as make
-- install writes it for Lua 5.4 and for LuaJIT (the interpreter on its #!
-- line, the module's directory written in) and as bin/periskope runs from
-- the checkout (the sh launcher first); then the parts of its cost: each
-- interpreter alone, loading the module (libcurl and everything it links),
-- --version (the script and the module, no pin), and one shell (what
-- asking whether stderr is a terminal cost each call before one id asked
-- only when its pin waits).
local b = require "bench.common"

local CFG, sh, sq, md, say = b.CFG, b.sh, b.sq, b.md, b.say

local M = {}

-- Target: the faster installed command at most this times one curl process.
local TARGET = 1.0

local function ms(s) return ("%.1f"):format(s * 1000) end

-- Reads hyperfine's JSON export without a JSON library: each result's
-- command and the wall time of every run, in order.
local function hyperfine_times(text)
  local list = {}
  for obj in text:gmatch('{%s*"command":.-"times":%s*%b[]') do
    local times = {}
    for t in obj:match('"times":%s*(%b[])$'):gmatch("[%d.eE+-]+") do times[#times + 1] = tonumber(t) end
    list[#list + 1] = times
  end
  return list
end

local function quantile(sorted, q)
  local i = math.max(1, math.min(#sorted, math.floor(q * (#sorted - 1) + 1.5)))
  return sorted[i]
end

-- Runs the part: { ratio = the faster installed command / curl (medians,
-- seconds), command, curl, lua54, luajit, checkout = medians, valid = every
-- call answered 204 }, or { skipped = why } without hyperfine.
function M.run(ctx)
  local rounds, runs, warmup = CFG.cmd_rounds, CFG.cmd_runs, CFG.cmd_warmup
  md("### 7. One pin through the command against one curl process")
  md("")
  local _, has = sh("command -v hyperfine >/dev/null 2>&1")
  if has ~= 0 then
    md("skipped: hyperfine not installed (apt-get install -y hyperfine, or make bench-deps)")
    md("")
    say("bench: cmd: skipped: hyperfine not installed")
    return { skipped = "hyperfine not installed" }
  end

  -- The command as make install writes it for Lua 5.4 and for LuaJIT, the
  -- module left where make built it.
  local root = sh("pwd"):match("[^\n]+")
  local installed = {}
  for _, lua in ipairs { "lua5.4", "luajit" } do
    local prefix = root .. "/" .. CFG.dir .. "/cmd-" .. lua
    local out, code = sh("make --no-print-directory -s install-command LUA=" .. lua .. " PREFIX=" .. sq(prefix)
      .. " INSTALLED_CMOD=" .. sq(root .. "/build/" .. lua) .. " 2>&1")
    assert(code == 0, "make install-command: " .. out)
    installed[lua] = prefix .. "/bin/periskope"
  end
  local out, code

  local base = ctx.srv.base_url
  local id = "cmd-1"
  local env = "env -u LUA_CPATH -u LUA_CPATH_5_4 -u LUA_INIT -u PERISKOPE_DEBUG -u http_proxy -u HTTP_PROXY"
    .. " -u all_proxy -u ALL_PROXY PERISKOPE_API_KEY=" .. sq(b.API_KEY)
    .. " PERISKOPE_PHONE=" .. sq(b.PHONE) .. " PERISKOPE_BASE_URL=" .. sq(base) .. " "
  -- The request periskope sends for `periskope pin ID`, by curl.
  local curl = ("curl -s -o /dev/null -w %%{http_code} -X POST -H 'Authorization: Bearer %s'"
    .. " -H 'x-phone: %s' -H 'Content-Type: application/json' -H 'Accept: application/json'"
    .. " -d '{\"pin\":true}' %s/message/%s/pin"):format(b.API_KEY, b.PHONE, base, id)
  local function so(lua) return "package.cpath=[[" .. root .. "/build/" .. lua .. "/?.so]] " end
  local cases = {
    { key = "lua54", name = "`periskope pin ID`, installed for Lua 5.4 (#!/usr/bin/lua5.4)",
      cmd = installed["lua5.4"] .. " pin " .. id, want = id .. "  204 ok" },
    { key = "luajit", name = "`periskope pin ID`, installed for LuaJIT (#!/usr/bin/luajit)",
      cmd = installed.luajit .. " pin " .. id, want = id .. "  204 ok" },
    { key = "checkout", name = "`bin/periskope pin ID` in the checkout (sh launcher, Lua 5.4)",
      cmd = root .. "/bin/periskope pin " .. id, want = id .. "  204 ok" },
    { key = "curl", name = "`curl -X POST ...`, the same request", cmd = curl, want = "204" },
    { name = "part: lua5.4 alone", cmd = "lua5.4 -e ''" },
    { name = "part: luajit alone", cmd = "luajit -e ''" },
    { name = "part: lua5.4 loading the module (libcurl and all it links)",
      cmd = "lua5.4 -e '" .. so("lua5.4") .. "require[[periskope]]'" },
    { name = "part: luajit loading the module", cmd = "luajit -e '" .. so("luajit") .. "require[[periskope]]'" },
    { name = "part: `periskope --version`, Lua 5.4 (script and module, no pin)",
      cmd = installed["lua5.4"] .. " --version" },
    { name = "part: one shell (`sh -c 'test -t 2'`)", cmd = "sh -c 'test -t 2 || true'" },
  }
  -- Every pinning command is checked once: a figure from a failing call means nothing.
  local valid = true
  for _, c in ipairs(cases) do
    if c.want then
      local got = sh(env .. c.cmd .. " </dev/null 2>&1")
      if got:sub(1, #c.want) ~= c.want then
        valid = false
        say("bench: cmd: " .. c.name .. " answered: " .. got)
      end
    end
  end

  -- Interleaved: BENCH_CMD_ROUNDS rounds, each running every case
  -- BENCH_CMD_RUNS times (the order rotating), so that a change in the
  -- machine's load falls on every case alike; the times are pooled.
  local json = CFG.dir .. "/command.json"
  local times = {}
  for i = 1, #cases do times[i] = {} end
  for round = 1, rounds do
    local order, args = {}, {}
    for k = 0, #cases - 1 do order[#order + 1] = (k + round - 1) % #cases + 1 end
    for _, i in ipairs(order) do args[#args + 1] = sq(cases[i].cmd) end
    out, code = sh(env .. b.on_cpu(CFG.client_cpu) .. "hyperfine -N --style none --warmup " .. warmup
      .. " --runs " .. runs .. " --export-json " .. sq(json) .. " " .. table.concat(args, " ") .. " 2>&1")
    assert(code == 0, "hyperfine: " .. out)
    local f = assert(io.open(json))
    local got = hyperfine_times(f:read("*a"))
    f:close()
    assert(#got == #cases, "hyperfine: " .. #got .. " results for " .. #cases .. " commands")
    for k, i in ipairs(order) do
      for _, t in ipairs(got[k]) do table.insert(times[i], t) end
    end
  end

  md(("Wall time per call, hyperfine, one process per call, against the main local server:"
    .. " %d rounds of %d runs of every case (after %d warm-up runs), interleaved, pooled.")
    :format(rounds, runs, warmup))
  md("")
  b.table_head({ "command", "median ms", "p10 ms", "p90 ms", "min ms" }, "lrrrr")
  local median = {}
  for i, c in ipairs(cases) do
    local t = times[i]
    table.sort(t)
    median[c.key or i] = quantile(t, 0.5)
    b.row(c.name, ms(quantile(t, 0.5)), ms(quantile(t, 0.1)), ms(quantile(t, 0.9)), ms(t[1]))
    say(("bench: cmd: %-64s %6s ms median"):format(c.name, ms(quantile(t, 0.5))))
  end
  md("")
  local best = math.min(median.lua54, median.luajit)
  local ratio = best / median.curl
  md(("Installed, the command takes %.2f× the time of one curl process under Lua 5.4 and %.2f× under"
    .. " LuaJIT (medians: %s, %s and %s ms); from the checkout, %.2f×.")
    :format(median.lua54 / median.curl, median.luajit / median.curl, ms(median.lua54),
      ms(median.luajit), ms(median.curl), median.checkout / median.curl))
  md("")
  return { ratio = ratio, command = best, curl = median.curl, lua54 = median.lua54,
           luajit = median.luajit, checkout = median.checkout, valid = valid }
end


function M.targets(result)
  local x = result.ratio
  if not x then return end
  b.row(("one pin through the command ≤ %.2f× one curl process"):format(TARGET),
    ("%.2f× (%.1f ms vs %.1f ms)"):format(x, result.command * 1000, result.curl * 1000), b.verdict(x <= TARGET))
end

-- Skipped (no hyperfine) is not invalid.
function M.valid(result) return result.valid ~= false end

return M
