-- make bench: periskope against the raw libcurl loop and its peers, on the
-- local Periskope server (spec/support/server.lua), in one run.
--
--   lua5.4 bench/bench.lua        (from the checkout root; mk/bench.mk runs it)
--
-- The parts, in the order of the report; each is bench/parts/<name>.lua,
-- which says what it measures:
--
--   seq   1. sequential pins per second, against the mock and a lean endpoint
--   cg    2. client instructions (callgrind) and system calls (perf) per pin
--   many  3. pin_many beside libcurl's multi interface
--   rss   4. VmRSS after many pins
--   fair  5. shared pacing under contention: processes on one Redis
--   host  6. CPU per pin of an nginx worker pinning through periskope
--   cmd   7. one pin through the periskope command against one curl process
--   outage 8. pin_many through an outage: the circuit breaker
--
-- BENCH_PARTS (e.g. "cg" or "seq,many") runs some of them; every part runs
-- by default. It prints the results, writes them to BENCH_RESULTS
-- (Markdown), and, when every part ran, puts them between the bench
-- markers of BENCH_README and draws BENCH_PNG with gnuplot. Every setting is
-- an environment variable (bench/common.lua).
--
-- A part is a module with
--   part.run(ctx)         ctx.srv: the main server (bench/common.lua's
--                         start_main_server), ctx.ua: periskope's User-Agent,
--                         ctx.node_url; writes its section with common's md,
--                         row and table_head; returns its result, or nil
--                         when it failed (its section says so)
--   part.targets(result)  optional: its rows of the Targets table
--   part.valid(result)    optional: false when its figures came from invalid
--                         runs (the bench then exits 1)
-- and a name in PARTS below.

package.path = "./?.lua;" .. package.path
local b = require "bench.common"
local report = require "bench.report"

local PARTS = { "seq", "cg", "many", "rss", "fair", "host", "cmd", "outage" }

local CFG, md = b.CFG, b.md
local T_START = b.clock.now()

-- The parts asked for (BENCH_PARTS, else all), and whether that is all.
local chosen, all = {}, true
for p in (CFG.parts or table.concat(PARTS, ",")):gmatch("[^,%s]+") do chosen[p] = true end
for p in pairs(chosen) do
  local known = false
  for _, name in ipairs(PARTS) do known = known or name == p end
  if not known then
    io.stderr:write("bench: BENCH_PARTS: no part '", p, "' (the parts: ", table.concat(PARTS, ","), ")\n")
    os.exit(2)
  end
end
for _, p in ipairs(PARTS) do all = all and chosen[p] == true end
if not all then CFG.results = CFG.dir .. "/results-partial.md" end

b.sh("mkdir -p " .. b.sq(CFG.dir))
for _, prog in ipairs { CFG.raw, CFG.raw_multi } do
  if not b.read_file(prog) then
    io.stderr:write("bench: ", prog, " is missing: run `make bench`\n")
    os.exit(2)
  end
end

-- The exact User-Agent periskope sends, so the other clients send it too.
local ua = b.first_line(b.lua_env("lua5.4") .. "lua5.4 -e " .. b.sq(
  "local c = require('periskope').new{ api_key = 'k', base_url = 'http://127.0.0.1:1/v1' }"
  .. " print(c:build_pin{ message_id = 'x' }.headers['User-Agent'])"))
if not ua:match("^periskope%-lua/") then
  io.stderr:write("bench: cannot load build/lua5.4/periskope.so: ", ua, "\n")
  os.exit(2)
end

md("<!-- Written by `make bench` (bench/bench.lua); do not edit by hand. -->")
md("")
report.machine(ua)

local srv, node_url = b.start_main_server()
if not srv then
  io.stderr:write("bench: the local server did not start: ", node_url, "\n")
  os.exit(2)
end

-- The parts that ran, in order ({ name, part, result }), and their results by name.
local ran, results = {}, {}
local ok_main, err_main = pcall(function()
  local ctx = { srv = srv, ua = ua, node_url = node_url }
  for _, name in ipairs(PARTS) do
    if chosen[name] then
      local part = require("bench.parts." .. name)
      results[name] = part.run(ctx)
      ran[#ran + 1] = { name = name, part = part, result = results[name] }
    end
  end
end)
srv:stop()
if not ok_main then
  io.stderr:write("bench: ", tostring(err_main), "\n")
  os.exit(1)
end

md("### Targets")
md("")
md("| target | measured | |")
md("| --- | --- | --- |")
for _, r in ipairs(ran) do
  if r.result and r.part.targets then r.part.targets(r.result) end
end
md("")
if all then report.chart(results.seq) end
md(("`make bench` took %.0f s; load average at the end: %s.")
  :format(b.clock.elapsed(T_START), (b.read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?"))

local text = table.concat(b.lines, "\n") .. "\n"
-- The soak's section (make soak, bench/soak.lua) stays as the soak wrote it.
local soak = (b.read_file(CFG.results) or ""):match("<!%-%- soak:begin %-%->.-<!%-%- soak:end %-%->\n?")
b.write_file(CFG.results, soak and text .. "\n" .. soak or text)
b.say("")
b.say("bench: results in " .. CFG.results
  .. ((all and report.update_readme(text)) and (" and " .. CFG.readme) or ""))

-- Exit 1 when some part's figures came from invalid runs: a figure from
-- invalid requests means nothing. Missed targets are results, not failures.
local valid = true
for _, r in ipairs(ran) do
  if r.result and r.part.valid and not r.part.valid(r.result) then valid = false end
end
os.exit(valid and 0 or 1)
