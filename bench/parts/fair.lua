-- Part 5 (fair) of make bench: shared pacing under contention. For each
-- "<processes>x<pins>" of BENCH_FAIR, that many LuaJIT processes on one key
-- and one Redis, each pinning one message at a time, against a server
-- allowing BENCH_FAIR_RATE per BENCH_FAIR_WINDOW s: total time against the
-- ideal, 429s, the slowest and the 99th-percentile pin
-- (spec/support/fairness.lua, which the contention spec runs too).
local fairness = require "spec.support.fairness"
local b = require "bench.common"

local CFG, md, fmt = b.CFG, b.md, b.fmt

local M = {}

-- Target: the total time of a run at most this times the ideal; its
-- slowest pin is held to ceil(N/B) + 1 windows, which needs no setting.
local TARGET_TOTAL = 1.25

-- The slowest a pin may wait with N processes at B per window: ceil(N/B) + 1 windows.
local function fair_bound(procs)
  return (math.ceil(procs / CFG.fair_rate) + 1) * CFG.fair_window
end

-- Runs the part: { rows, valid } or nil.
function M.run()
  md(("### 5. Shared pacing: processes pinning one at a time on one key and one Redis, %g per %g s")
    :format(CFG.fair_rate, CFG.fair_window))
  md("")
  local rows = {}
  for item in CFG.fair:gmatch("[^,%s]+") do
    local procs, pins = item:match("^(%d+)x(%d+)$")
    if not procs then error("BENCH_FAIR: each item is <processes>x<pins>, e.g. 16x5; got " .. item) end
    procs, pins = tonumber(procs), tonumber(pins)
    b.say(("== fair: %d LuaJIT processes x %d pins, one Redis"):format(procs, pins))
    local ok, r = pcall(fairness.run, { procs = procs, pins = pins, rate = CFG.fair_rate,
      window = CFG.fair_window })
    if not ok then
      md("Fairness run FAILED: " .. tostring(r))
      md("")
      return nil
    end
    b.say(fairness.line("fair", r))
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
  b.table_head({ "processes × pins", "total s", "ideal s", "× ideal", "answered 429", "slowest pin s",
    "p99 pin s", "bound s", "store failures", "204s" }, "rrrrrrrrrl")
  local valid = true
  for _, r in ipairs(rows) do
    b.row(("%d × %d"):format(r.procs, r.pins), fmt(r.elapsed, 2), fmt(r.ideal, 1), fmt(r.elapsed / r.ideal, 2),
      ("%d"):format(r.answered429), fmt(r.slowest, 2), fmt(r.p99, 2), fmt(r.bound, 0),
      ("%d"):format(r.store_failures), ("%d/%d"):format(r.ok, r.total))
    valid = valid and r.ok == r.total and not r.failure
  end
  md("")
  md("A store failure is an ask the store did not answer in time (a `limiter` event): that pin was"
    .. " paced by its process alone. Each run starts its own server and Redis; the machine's load"
    .. " average is in the Machine table, and timings move with it.")
  md("")
  return { rows = rows, valid = valid }
end

function M.targets(result)
  for _, r in ipairs(result.rows) do
    local x = r.elapsed / r.ideal
    b.row(("%d processes: slowest pin ≤ %g windows (%g s)"):format(r.procs, r.bound / CFG.fair_window, r.bound),
      fmt(r.slowest, 2) .. " s", b.verdict(r.slowest <= r.bound))
    b.row(("%d processes: total ≤ %.2f× ideal, no 429"):format(r.procs, TARGET_TOTAL),
      ("%.2f×, %d × 429"):format(x, r.answered429), b.verdict(x <= TARGET_TOTAL and r.answered429 == 0))
  end
end

function M.valid(result) return result.valid end

return M
