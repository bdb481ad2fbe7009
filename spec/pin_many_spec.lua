-- Client:pin_many: concurrency, order, pacing by the rate-limit headers,
-- retries, and failures, against the local Periskope server.
local server = require "spec.support.server"
local util = require "spec.support.util"

-- Item i carries phone-item<i>: each result can be matched to its item.
local list = util.list

-- A hook that tracks requests in flight and remembers the largest count.
local function flight()
  local f = { now = 0, max = 0, events = {} }
  f.hook = function(ev)
    f.events[#f.events + 1] = ev
    if ev.type == "request" then
      f.now = f.now + 1
      if f.now > f.max then f.max = f.now end
    elseif ev.type == "response" or ev.type == "failure" then
      f.now = f.now - 1
    end
  end
  return f
end

describe("Client:pin_many", function()
  local srv

  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  it("returns one result per item, in input order", function()
    local c = util.client(srv)
    local res = c:pin_many(list(20), { concurrency = 8 })
    assert.equal(20, #res)
    for i = 1, 20 do
      assert.is_true(res[i].ok)
      assert.equal(204, res[i].status)
      assert.equal("phone-item" .. i, res[i].headers["x-periskope-phone-id"])
      assert.equal(1, res[i].attempts)
    end
    assert.equal(20, #srv:requests())
    c:close()
  end)

  it("keeps at most concurrency requests in flight, and reuses its connections", function()
    local f = flight()
    local c = util.client(srv, { on_event = f.hook })
    local res = c:pin_many(list(30), { concurrency = 3 })
    for i = 1, 30 do assert.is_true(res[i].ok) end
    assert.equal(3, f.max)
    local conns = {}
    for _, r in ipairs(srv:requests()) do conns[r.connection] = true end
    local n = 0
    for _ in pairs(conns) do n = n + 1 end
    assert.truthy(n <= 3, n)
    c:close()
  end)

  it("defaults to 4 in flight", function()
    local f = flight()
    local c = util.client(srv, { on_event = f.hook })
    c:pin_many(list(12))
    assert.equal(4, f.max)
    c:close()
  end)

  it("runs requests concurrently", function()
    local slow = server.start { latency = 0.3 }
    finally(function() slow:stop() end)
    local c = util.client(slow)
    local res = c:pin_many(list(8), { concurrency = 8 })
    for i = 1, 8 do assert.is_true(res[i].ok) end
    -- After the first (which goes alone to learn the budget), the other
    -- seven reach the server together, not 0.3 s apart.
    local r = slow:requests()
    assert.equal(8, #r)
    -- (one after the other they would span 1.8 s).
    assert.truthy(r[8].time - r[2].time < util.within(0.9), r[8].time - r[2].time)
    c:close()
  end)

  it("keeps its concurrency when every answer's X-RateLimit-Reset lies long before its Date", function()
    -- A stand-in replaying the OpenAPI example: limit 10, remaining 9 and a
    -- reset of January 2025 on every answer, while Date says today. That
    -- reset says nothing about the current window, so it holds nothing back.
    local stale = server.start { latency = 0.4,
      fixed_rate = { limit = 10, remaining = 9, reset = 1737542181 } }
    finally(function() stale:stop() end)
    local f = flight()
    local c = util.client(stale, { on_event = f.hook })
    local res = c:pin_many(list(33), { concurrency = 16 })
    for i = 1, 33 do
      assert.is_true(res[i].ok)
      assert.same({ limit = 10, remaining = 9, reset = 1737542181 }, res[i].rate_limit)
    end
    assert.equal(16, f.max)
    -- The server saw it too: after the first (which goes alone to learn),
    -- sixteen together, not ten and then one at a time (each 0.4 s after
    -- the one before).
    local r = stale:requests()
    assert.equal(33, #r)
    assert.truthy(r[17].time - r[2].time < util.within(0.3), r[17].time - r[2].time)
    c:close()
  end)

  it("checks every item before sending anything", function()
    local c = util.client(srv)
    local l = list(5)
    l[3].time = 5
    util.raises(function() c:pin_many(l) end, "bad argument #1 to 'pin_many'",
      "item 3: field 'time' must be 1, 7 or 30")
    l[3] = "m3"
    util.raises(function() c:pin_many(l) end, "item 3: must be a table")
    l[3] = { message_id = "m3", extra = 1 }
    util.raises(function() c:pin_many(l) end, "item 3: unknown field 'extra'")
    l[3] = { message_id = "" }
    util.raises(function() c:pin_many(l) end, "item 3: field 'message_id'")
    assert.equal(0, #srv:requests())
    util.raises(function() c:pin_many("x") end, "table expected")
    util.raises(function() c:pin_many({}, { concurrency = 0 }) end, "option 'concurrency'")
    util.raises(function() c:pin_many({}, { concurrency = 65 }) end, "option 'concurrency'")
    util.raises(function() c:pin_many({}, { concurency = 2 }) end, "unknown option 'concurency'")
    c:close()
  end)

  it("returns an empty table for an empty list", function()
    local c = util.client(srv)
    assert.same({}, c:pin_many({}))
    c:close()
  end)

  it("retries as pin does, per item", function()
    srv:script { { status = 503, rate_headers = false }, { status = 404, body = '{"message":"gone"}' } }
    local c = util.client(srv)
    local res = c:pin_many(list(6), { concurrency = 2 })
    local oks, notfound, retried = 0, 0, 0
    for i = 1, 6 do
      if res[i].ok then oks = oks + 1 end
      if res[i].status == 404 then
        notfound = notfound + 1
        assert.equal("gone", res[i].error)
      end
      if res[i].attempts == 2 then retried = retried + 1 end
    end
    assert.equal(5, oks)
    assert.equal(1, notfound)
    assert.equal(1, retried)
    assert.equal(7, #srv:requests())
    c:close()
  end)

  it("gives { ok = false, error, kind } for an item that got no answer", function()
    srv:script { { action = "close" } }
    local c = util.client(srv, { retries = 0 })
    local res = c:pin_many(list(3), { concurrency = 1 })
    assert.is_false(res[1].ok)
    assert.equal("network", res[1].kind)
    assert.equal(1, res[1].error:find("periskope: ", 1, true))
    assert.is_true(res[2].ok)
    assert.is_true(res[3].ok)
    c:close()
  end)

  it("starts nothing new before the reset once remaining is 0", function()
    srv:script { { status = 204, remaining = 0, reset_in = 2 } }
    local c = util.client(srv)
    local res = c:pin_many(list(3), { concurrency = 3 })
    for i = 1, 3 do assert.is_true(res[i].ok) end
    local g = util.gaps(srv:requests())
    assert.truthy(g[1] >= 1.0, g[1])
    c:close()
  end)

  it("completes a batch larger than the rate limit without a 429", function()
    local limited = server.start { rate_limit = 10, window = 1 }
    finally(function() limited:stop() end)
    local f = flight()
    local c = util.client(limited, { on_event = f.hook })
    local res = c:pin_many(list(40), { concurrency = 4 })
    for i = 1, 40 do
      assert.is_true(res[i].ok, i)
      assert.equal(1, res[i].attempts)
      assert.equal("phone-item" .. i, res[i].headers["x-periskope-phone-id"])
    end
    assert.equal(40, #limited:requests())
    assert.truthy(f.max <= 4)
    local waits = 0
    for _, ev in ipairs(f.events) do
      assert.are_not.equal(429, ev.status)
      if ev.type == "wait" then
        assert.equal("rate-limit", ev.reason)
        waits = waits + 1
      end
    end
    assert.truthy(waits >= 3, waits)
    c:close()
  end)

  it("lets an error from on_event out after cleaning up; the client stays usable", function()
    local slow = server.start { latency = 0.2 }
    finally(function() slow:stop() end)
    local seen = 0
    local c = util.client(slow, { on_event = function(ev)
      if ev.type == "request" then
        seen = seen + 1
        if seen == 9 then error("hook says stop") end
      end
    end })
    util.raises(function() c:pin_many(list(20), { concurrency = 8 }) end, "hook says stop")
    seen = -1000
    local res = assert(c:pin { message_id = "again" })
    assert.equal(204, res.status)
    local again = c:pin_many(list(4), { concurrency = 4 })
    for i = 1, 4 do assert.is_true(again[i].ok) end
    c:close()
  end)

  it("lets the hook pin and pin_many on the same client, each with its own results", function()
    local c
    local inner, nested
    c = util.client(srv, { on_event = function(ev)
      if ev.type == "response" and ev.index == 1 and not inner then
        inner = c:pin { message_id = "from-hook", phone = "phone-hook" }
        nested = c:pin_many({ { message_id = "n1", phone = "phone-n1" },
                              { message_id = "n2", phone = "phone-n2" } }, { concurrency = 2 })
      end
    end })
    local res = c:pin_many(list(3), { concurrency = 2 })
    for i = 1, 3 do
      assert.is_true(res[i].ok)
      assert.equal("phone-item" .. i, res[i].headers["x-periskope-phone-id"])
    end
    assert.equal(204, inner.status)
    assert.equal("phone-hook", inner.headers["x-periskope-phone-id"])
    assert.equal(2, #nested)
    assert.equal("phone-n1", nested[1].headers["x-periskope-phone-id"])
    assert.equal("phone-n2", nested[2].headers["x-periskope-phone-id"])
    assert.equal(6, #srv:requests())
    c:close()
  end)
end)
