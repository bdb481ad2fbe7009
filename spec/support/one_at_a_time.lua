-- One process of the fairness runs (spec/contention_fair_spec.lua, make
-- bench): pins its ids one at a time, as a request handler does, each
-- through periskope.pin's wait for a slot of the budget it shares through
-- Redis with every other such process; prints "<id> <status or error
-- kind> <seconds the pin took>" per id, then "limiter failures <n>
-- [<first error>]" (pins paced alone). Run from the checkout's root
-- (bench/clock.lua: to the microsecond under LuaJIT, which the runs use).
--
--   luajit one_at_a_time.lua PREFIX COUNT     (ids PREFIX-1 ... PREFIX-COUNT)
--
-- Environment: PERISKOPE_API_KEY, PERISKOPE_BASE_URL, PERISKOPE_PHONE and
-- PERISKOPE_REDIS_PORT; PERISKOPE_LIMITER=none leaves the limiter out (a
-- control run: each process paces alone).
local periskope = require "periskope"
local clock = require "bench.clock"

local prefix, count = arg[1], tonumber(arg[2])
assert(prefix and count, "usage: one_at_a_time.lua PREFIX COUNT")

local limiter
if os.getenv("PERISKOPE_LIMITER") ~= "none" then
  limiter = periskope.limiter.redis {
    port = tonumber(os.getenv("PERISKOPE_REDIS_PORT")),
    timeout = 0.5,
  }
end
-- max_retry_wait: a pin that waits longer than any bound the runs check
-- still goes, late, rather than give up: its wait is then measured.
-- Store failures (limiter events: the pin was paced by this process
-- alone) are counted, and the first one's error is kept.
local failures, first_failure = 0, nil
local client = periskope.new {
  limiter = limiter, max_retry_wait = 120,
  on_event = function(ev)
    if ev.type == "limiter" then
      failures = failures + 1
      first_failure = first_failure or ev.error
    end
  end,
}

for k = 1, count do
  local id = prefix .. "-" .. k
  local t0 = clock.now()
  local res, _, kind = client:pin { message_id = id }
  local took = clock.elapsed(t0)
  io.stdout:write(id, " ", res and tostring(res.status) or kind, (" %.4f\n"):format(took))
  io.stdout:flush()
end
client:close()
io.stdout:write("limiter failures ", failures, " ", first_failure or "", "\n")
