-- Shared pacing is fair: 16 processes on one API key and one Redis, each
-- pinning one message at a time (as a request handler does: one pin, its
-- answer, the next) against the local Periskope server at 10 requests per
-- 2 s window. Every one waits for a slot most of the time; the budget's
-- queue serves them in the order they began to wait, so with N processes
-- and B per window no pin waits more than ceil(N / B) + 1 windows: here 3
-- windows, 6 s. Without the queue one pin waited 14 s while others were
-- served again and again. Total time within 1.25x the ideal, no 429.
--
-- Tagged "contention" (~16 s): make test-contention runs it beside
-- contention_spec.lua. The processes are spec/support/one_at_a_time.lua;
-- make bench runs the same with 4, 16 and 64 (spec/support/fairness.lua).
local fairness = require "spec.support.fairness"

local PROCS, PINS = 16, 5
local RATE, WINDOW = 10, 2

describe("shared pacing is fair #contention", function()
  it("16 processes pinning one at a time on one Redis: no pin waits over 3 windows, no 429", function()
    local r = fairness.run { procs = PROCS, pins = PINS, rate = RATE, window = WINDOW }
    io.stderr:write("\ncontention: " .. fairness.line("redis, one pin at a time", r) .. "\n")
    assert.is_nil(r.failure)
    assert.equal(r.total, r.ok)
    assert.equal(0, r.answered429)
    local bound = (math.ceil(PROCS / RATE) + 1) * WINDOW
    assert.is_true(r.slowest <= bound,
      ("a pin waited %.2f s, more than %d windows (%d s)"):format(r.slowest, bound / WINDOW, bound))
    assert.is_true(r.elapsed <= 1.25 * r.ideal,
      ("took %.1f s, more than 1.25x the ideal %.0f s"):format(r.elapsed, r.ideal))
    -- Eight windows: the last opens 14 s after the first.
    assert.is_true(r.span >= r.ideal - 2 - 0.5,
      ("first to last request %.1f s: faster than the limit allows"):format(r.span))
  end)
end)
