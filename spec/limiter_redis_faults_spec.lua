-- periskope.limiter.redis against a Redis that misbehaves: `timeout`
-- bounds each whole store operation, connect included, whatever the store
-- sends; a reply larger than the protocol needs is refused at its header,
-- before anything is allocated for it. Each pin still goes (paced by its
-- client, with a "limiter" event), and the store then rests. The faults
-- come from a stand-in (spec/support/redis_stand_in.lua) in front of a
-- real redis-server, or in its place.
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local util = require "spec.support.util"
local periskope = require "periskope"

local now = server.now
local of_type = util.of_type

-- This process's peak resident memory in MB since the last call
-- (Linux: VmHWM, which writing 5 to clear_refs starts again).
local function peak_mb()
  local text = server.read_file("/proc/self/status")
  local f = assert(io.open("/proc/self/clear_refs", "w"))
  assert(f:write("5"))
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+) kB")) / 1024
end

describe("periskope.limiter.redis against a faulty store #redis", function()
  local srv, rd
  setup(function()
    srv = server.start {}
    rd = redis.start()
  end)
  teardown(function()
    if rd then rd:stop() end
    if srv then srv:stop() end
  end)
  before_each(function()
    srv:reset()
    rd:cli("FLUSHALL")
  end)

  -- A client whose limiter talks to the stand-in; its events.
  local function client_of(stand_in, timeout)
    local events, hook = util.recorder()
    local c = util.client(srv, {
      limiter = periskope.limiter.redis { port = stand_in.port, timeout = timeout },
      on_event = hook,
    })
    return c, events
  end

  -- A pin that the store fails: it still succeeds, paced by the client,
  -- with one limiter event whose error contains `want`. How long it took.
  local function failed_store_pin(c, events, want, id)
    local t0 = now()
    local res, err = c:pin { message_id = id or "m" }
    local took = now() - t0
    assert(res, err)
    assert.equal(204, res.status)
    local ev = of_type(events, "limiter")
    assert.equal(1, #ev)
    assert.truthy(ev[1].error:find(want, 1, true), ev[1].error)
    return took
  end

  it("a Redis that trickles its replies costs one timeout per operation, not one per byte", function()
    -- One byte every 0.5 s: every read alone is quicker than the timeout.
    local s = redis.stand_in { mode = "proxy", upstream = rd.port, trickle = 0.5 }
    finally(function() s:stop() end)
    local c, events = client_of(s, 1)
    local took = failed_store_pin(c, events, "timed out")
    assert.is_true(took >= 0.95, ("the pin took %.2f s: the timeout was not waited"):format(took))
    -- (One timeout per byte read would be several seconds.)
    assert.is_true(took < util.within(3), ("the pin took %.2f s"):format(took))
    c:close()
  end)

  for _, case in ipairs {
    { "a reply announcing a huge array fails at its header, at once",
      { mode = "huge_array" }, "reply too large (an array too long)" },
    -- 64 MB follow the header, as fast as the client reads them.
    { "a reply announcing a huge string fails at its header, before the string is read",
      { mode = "huge_bulk", stream = 64 * 1024 * 1024 }, "reply too large (a bulk string too long)" },
  } do
    it(case[1], function()
      local s = redis.stand_in(case[2])
      finally(function() s:stop() end)
      local c, events = client_of(s, 5)
      local before = peak_mb()
      local took = failed_store_pin(c, events, case[3])
      local grew = peak_mb() - before
      -- At once: well before the timeout of 5 s.
      assert.is_true(took < util.within(2.5), ("the pin took %.2f s"):format(took))
      assert.is_true(grew < 16, ("peak memory grew %.1f MB"):format(grew))
      c:close()
    end)
  end

  it("a Redis that never answers costs one timeout, then rests: the next pins do not pay it", function()
    local s = redis.stand_in { mode = "never" }
    finally(function() s:stop() end)
    local c, events = client_of(s, 0.3)
    local t_fail = now()
    local took = failed_store_pin(c, events, "timed out (timeout 0.3 s)")
    assert.is_true(took >= 0.28 and took < util.within(1.5), ("the pin took %.2f s"):format(took))
    -- Within the rest (1 s from the failed operation's start): the store
    -- is left alone, no connection, no wait, no event.
    local t0 = now()
    assert.equal(204, c:pin { message_id = "r" }.status)
    -- (No connection: the time it takes is the pin's alone, however loaded
    -- the machine.)
    assert.is_true(now() - t0 < util.within(1), ("the next pin took %.2f s"):format(now() - t0))
    assert.equal(1, s:accepted())
    assert.equal(1, #of_type(events, "limiter"))
    -- After it, the store is tried again (and fails again, once).
    local i = 0
    util.wait_for("the store to be tried again", 5, function()
      i = i + 1
      assert.equal(204, c:pin { message_id = "after" .. i }.status)
      return s:accepted() == 2
    end)
    assert.is_true(now() - t_fail >= 1, "tried again within the rest")
    assert.equal(2, #of_type(events, "limiter"))
    c:close()
  end)

  it("a connect that never completes costs at most the timeout", function()
    -- The stand-in's listen queue is full: the kernel drops every SYN.
    local s = redis.stand_in { mode = "never", blackhole = -1 }
    finally(function() s:stop() end)
    local c, events = client_of(s, 0.5)
    local took = failed_store_pin(c, events, "connect timed out (timeout 0.5 s)")
    assert.is_true(took >= 0.45 and took < util.within(2), ("the pin took %.2f s"):format(took))
    assert.equal(0, s:accepted())
    c:close()
  end)

  it("a slow connect counts against the same timeout as the replies that follow", function()
    -- The first SYN is dropped (the queue frees once the kernel counted a
    -- dropped SYN, however slow the client is to try; the kernel sends it
    -- again about 1 s later); each reply then comes 0.6 s late: 1.6 s in
    -- all, past the timeout of 1.5 s that bounds the whole operation.
    -- The kernel's count is the machine's: should another connection's
    -- drop free the queue first, the fault did not happen (no event), and
    -- is set up again.
    for attempt = 1, 4 do
      local s = redis.stand_in { mode = "proxy", upstream = rd.port, blackhole = 0, untildrop = 1, delay = 0.6 }
      local c, events = client_of(s, 1.5)
      local t0 = now()
      local res = c:pin { message_id = "m" }
      local took = now() - t0
      c:close()
      s:stop()
      assert.equal(204, res.status)
      local ev = of_type(events, "limiter")
      if #ev == 1 then
        assert.truthy(ev[1].error:find("timed out (timeout 1.5 s)", 1, true), ev[1].error)
        assert.is_true(took >= 1.45 and took < util.within(3), ("the pin took %.2f s"):format(took))
        return
      end
      -- Without the dropped SYN the operation took its replies' time
      -- alone, within the timeout: no event.
      assert.equal(0, #ev, ("attempt %d, %.2f s"):format(attempt, took))
    end
    error("the dropped SYN never happened in 4 attempts")
  end)

  it("a Redis that closes each connection at once fails fast", function()
    local s = redis.stand_in { mode = "close" }
    finally(function() s:stop() end)
    local c, events = client_of(s, 5)
    local took = failed_store_pin(c, events, "redis 127.0.0.1:" .. s.port .. ": ")
    -- Fast: well before the timeout of 5 s.
    assert.is_true(took < util.within(2.5), ("the pin took %.2f s"):format(took))
    c:close()
  end)

  it("through the stand-in with nothing held back, the store serves as Redis does", function()
    -- The stand-in itself is no fault: a pin through it uses the store.
    local s = redis.stand_in { mode = "proxy", upstream = rd.port }
    finally(function() s:stop() end)
    local c, events = client_of(s, 1)
    assert.equal(204, c:pin { message_id = "m" }.status)
    assert.equal(204, c:pin { message_id = "m2" }.status)
    assert.equal(0, #of_type(events, "limiter"))
    assert.matches("^periskope:%x+\n$", rd:cli("KEYS", "*"))
    -- One connection for both pins (and their settles).
    assert.equal(1, s:accepted())
    c:close()
  end)
end)
