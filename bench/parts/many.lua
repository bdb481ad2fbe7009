-- Part 3 (many) of make bench: pin_many at concurrency 1, 4 and 16 beside
-- libcurl's multi interface (bench/raw_multi.c), against servers answering
-- after BENCH_MANY_LATENCY seconds, with real-window and with stale
-- X-RateLimit-* headers. Its clients: bench/pin_many.lua, raw_multi.
local server = require "spec.support.server"
local b = require "bench.common"

local CFG, sq, md, commas, fmt = b.CFG, b.sq, b.md, b.commas, b.fmt
local API_KEY, PHONE = b.API_KEY, b.PHONE

local M = {}

-- Target: pin_many at concurrency 16 at least this times the multi loop's rate.
local TARGET = 0.95

-- The X-RateLimit-* a stand-in sends when it replays the OpenAPI example:
-- a reset of January 2025 on every answer, while Date says today.
local STALE_RATE = { limit = 10, remaining = 9, reset = 1737542181 }

-- Runs cmd (pin_many.lua or raw_multi) against srv; returns its rows
-- (c, pins, ok, seconds) keyed by concurrency, and whether the server
-- counted every request sent (warm-ups included).
local function many_run(srv, cmd, pattern)
  assert(srv:reset() == nil)
  local out, code = b.sh(cmd .. " 2>&1")
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

-- Runs the part: { valid, real = × multi at 16 (real window), stale = ... } or nil.
function M.run(ctx)
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
      b.pin_server(srv)
      b.say(("== pin_many, %s: %d round trips of %g ms at concurrency %s")
        :format(case.name, CFG.many_trips, CFG.many_latency * 1000, table.concat(case.concs, ", ")))
      local psk, perr = many_run(srv, b.lua_env("lua5.4") .. b.on_cpu(CFG.client_cpu)
        .. "lua5.4 bench/pin_many.lua " .. sq(srv.base_url) .. " " .. sq(API_KEY) .. " "
        .. sq(PHONE) .. " " .. CFG.many_trips .. " " .. table.concat(case.concs, " "),
        "pin_many c=(%d+) pins=(%d+) ok=(%d+) seconds=([%d.]+)")
      if not psk then error("pin_many.lua: " .. perr, 0) end
      local raw = {}
      for _, c in ipairs(case.concs) do
        local r, rerr = many_run(srv, b.CLIENT_ENV .. b.on_cpu(CFG.client_cpu) .. sq(CFG.raw_multi)
          .. " " .. sq(srv.base_url) .. " " .. sq(API_KEY) .. " " .. sq(PHONE) .. " "
          .. sq(ctx.ua) .. " " .. c .. " " .. CFG.many_trips * c .. " multi-",
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
        lines[#lines + 1] = { case.name, tostring(c), commas(p.rate), commas(r.rate), fmt(p.rate / r.rate, 3),
          fmt(100 * p.rate / (c / CFG.many_latency), 1) .. " %", ("%s/%s, %s/%s%s"):format(commas(p.ok),
          commas(p.pins), commas(r.ok), commas(r.pins), valid and "" or " — NOT VALID") }
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
  b.table_head({ "X-RateLimit-* headers", "concurrency", "periskope pins/s", "libcurl multi pins/s",
    "× multi", "periskope, % of ideal", "204s (periskope, multi)" }, "lrrrrrl")
  for _, l in ipairs(lines) do b.row((table.unpack or unpack)(l)) end
  md("")
  return summary
end

function M.targets(result)
  for _, k in ipairs { "real", "stale" } do
    local x = result[k]
    if x then
      b.row(("pin_many c16 ≥ %.2f× libcurl's multi interface at 16 (%s headers)")
        :format(TARGET, k == "real" and "real-window" or "stale"),
        ("%.3f×"):format(x), b.verdict(x >= TARGET) .. b.short_by(x, TARGET))
    end
  end
end

function M.valid(result) return result.valid end

return M
