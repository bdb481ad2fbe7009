-- Part 4 (rss) of make bench: VmRSS of a periskope Lua 5.4 process after
-- BENCH_RSS_N1 and BENCH_RSS_N2 sequential pins (bench/rss.lua).
local b = require "bench.common"

local CFG, sq, md, commas = b.CFG, b.sq, b.md, b.commas

local M = {}

-- Target: VmRSS grows by less than this (KiB) from N1 to N2 pins.
local TARGET_KIB = 100

-- Runs the part: { growth = KiB, valid } or nil.
function M.run(ctx)
  local srv = ctx.srv
  md(("### 4. Memory: VmRSS of a periskope Lua 5.4 process after %s and %s pins")
    :format(commas(CFG.rss_n1), commas(CFG.rss_n2)))
  md("")
  b.say("== RSS: " .. CFG.rss_n2 .. " sequential pins")
  assert(srv:reset() == nil)
  local out, code = b.sh(b.lua_env("lua5.4") .. b.on_cpu(CFG.client_cpu) .. "lua5.4 bench/rss.lua "
    .. sq(srv.url .. "/lean/v1") .. " " .. sq(b.API_KEY) .. " " .. sq(b.PHONE) .. " " .. CFG.rss_n1 .. " "
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
  local p1, p2 = points[1], points[2]
  local valid = code == 0 and p2.ok == p2.pins and counted == p2.pins
  md("Against the lean endpoint (the pins' count, not the server, matters here). VmRSS read"
    .. " from `/proc/self/status` inside the process, with no forced collection (what a"
    .. " long-running process shows); the Lua heap from `collectgarbage(\"count\")`.")
  md("")
  b.table_head({ "after", "VmRSS KiB", "Lua heap KiB" }, "rrr")
  b.row(commas(p1.pins) .. " pins", commas(p1.rss), commas(p1.lua))
  b.row(commas(p2.pins) .. " pins", commas(p2.rss), commas(p2.lua))
  b.row("growth", commas(p2.rss - p1.rss), commas(p2.lua - p1.lua))
  md("")
  md(("%s/%s pins answered 204; the server counted %s requests%s.")
    :format(commas(p2.ok), commas(p2.pins), commas(counted), valid and "" or " — NOT VALID"))
  md("")
  return { growth = p2.rss - p1.rss, valid = valid }
end

function M.targets(result)
  local g = result.growth
  b.row(("RSS growth 10k → 100k pins < %d kB"):format(TARGET_KIB), commas(g) .. " kB", b.verdict(g < TARGET_KIB))
end

function M.valid(result) return result.valid end

return M
