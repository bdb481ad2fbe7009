-- Retries and their waits, measured on the server's clock.
local server = require "spec.support.server"
local util = require "spec.support.util"

describe("retries", function()
  local srv

  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function pin(opts)
    local c = util.client(srv, opts)
    local res, err, kind = c:pin { message_id = "m" }
    c:close()
    return res, err, kind
  end

  local function gap(i)
    return util.gaps(srv:requests())[i or 1]
  end

  -- Which statuses retry, not how long they wait: Retry-After: 0 lets the
  -- retry go at once (each wait reason is waited for really below).
  for _, status in ipairs { 429, 500, 502, 503, 504 } do
    it("retries after " .. status .. " and reports the attempts", function()
      srv:script { { status = status, rate_headers = false, headers = { ["Retry-After"] = "0" } } }
      local res = assert(pin {})
      assert.equal(204, res.status)
      assert.equal(2, res.attempts)
      assert.equal(2, #srv:requests())
    end)
  end

  for _, status in ipairs { 400, 401, 403, 404, 409, 422, 501 } do
    it("does not retry " .. status, function()
      srv:script { { status = status } }
      local res = assert(pin {})
      assert.equal(status, res.status)
      assert.equal(1, res.attempts)
      assert.equal(1, #srv:requests())
    end)
  end

  it("waits Retry-After seconds", function()
    srv:script { { status = 429, headers = { ["Retry-After"] = "1" } } }
    local res = assert(pin {})
    assert.equal(2, res.attempts)
    local g = gap()
    assert.truthy(g >= 0.95 and g < 1.8, g)
  end)

  it("waits until a Retry-After HTTP date, measured against the Date header", function()
    -- The server's clock is 1000 s behind ours: only Date makes the wait right.
    srv:script { { status = 503, date_offset = -1000, retry_after_in = 2 } }
    local res = assert(pin {})
    assert.equal(2, res.attempts)
    local g = gap()
    assert.truthy(g >= 1.9 and g < 2.9, g)
  end)

  it("waits until X-RateLimit-Reset on the server's clock, local clock skewed", function()
    for _, offset in ipairs { -1000, 1000 } do
      srv:reset()
      srv:script { { status = 429, remaining = 0, reset_in = 2, date_offset = offset } }
      local res = assert(pin {})
      assert.equal(2, res.attempts)
      local g = gap()
      assert.truthy(g >= 1.9 and g < 2.9, ("offset %d: gap %s"):format(offset, g))
    end
  end)

  it("backs off exponentially from 0.5 s without headers", function()
    srv:script { { status = 503, rate_headers = false }, { status = 503, rate_headers = false } }
    local res = assert(pin {})
    assert.equal(3, res.attempts)
    local g = util.gaps(srv:requests())
    assert.truthy(g[1] >= 0.45 and g[1] < util.within(0.9), g[1])
    assert.truthy(g[2] >= 0.95 and g[2] < util.within(1.6), g[2])
  end)

  it("returns the last answer when retries run out", function()
    srv:script { { status = 503, rate_headers = false }, { status = 503, rate_headers = false } }
    local res = assert(pin { retries = 1 })
    assert.equal(503, res.status)
    assert.is_false(res.ok)
    assert.equal(2, res.attempts)
  end)

  it("makes no retry with retries = 0", function()
    srv:script { { status = 503 } }
    local res = assert(pin { retries = 0 })
    assert.equal(503, res.status)
    assert.equal(1, res.attempts)
    assert.equal(1, #srv:requests())
  end)

  it("does not make a retry that would wait longer than max_retry_wait", function()
    srv:script { { status = 429, headers = { ["Retry-After"] = "30" } } }
    local res = assert(pin { max_retry_wait = 2 })
    assert.equal(429, res.status)
    assert.equal(1, res.attempts)
    assert.equal(1, #srv:requests())
  end)

  it("retries timeouts, connection failures and dropped connections", function()
    srv:script { { delay = 2 }, { action = "close" } }
    local res = assert(pin { timeout = 0.3 })
    assert.equal(204, res.status)
    assert.equal(3, res.attempts)
  end)

  it("returns the last failure when retries run out", function()
    srv:script { { action = "close" }, { action = "close" } }
    local res, err, kind = pin { retries = 1 }
    assert.is_nil(res)
    assert.equal("network", kind)
    assert.truthy(err:find("periskope: ", 1, true))
  end)

  describe("a kept-alive connection the server closed", function()
    local idle

    setup(function() idle = server.start { keepalive_timeout = 0.2 } end)
    teardown(function() if idle then idle:stop() end end)

    it("is reopened without a failure or an attempt, even with retries = 0", function()
      local c = util.client(idle, { retries = 0 })
      assert(c:pin { message_id = "a" })
      -- The server closes the idle connection after its keepalive_timeout.
      idle:wait_idle_closed()
      local res = assert(c:pin { message_id = "b" })
      assert.equal(204, res.status)
      assert.equal(1, res.attempts)
      local r = idle:requests()
      assert.equal(2, #r)
      assert.are_not.equal(r[1].connection, r[2].connection)
      c:close()
    end)

    it("is reopened when the server drops it with the request in flight", function()
      -- A server that keeps idle connections for long: the connection is
      -- alive when the second pin goes out on it.
      local busy = server.start {}
      finally(function() busy:stop() end)
      local c = util.client(busy, { retries = 0 })
      assert(c:pin { message_id = "a" })
      busy:script { { action = "close" } }
      local res = assert(c:pin { message_id = "b" })
      assert.equal(204, res.status)
      assert.equal(1, res.attempts)
      local r = busy:requests()
      assert.equal(3, #r)
      assert.equal(r[1].connection, r[2].connection)
      assert.are_not.equal(r[2].connection, r[3].connection)
      c:close()
    end)
  end)
end)

describe("pin pacing", function()
  it("waits for the window's reset once an answer shows remaining = 0", function()
    local srv = server.start {}
    finally(function() srv:stop() end)
    srv:script { { status = 204, remaining = 0, reset_in = 2 } }
    local waits = {}
    local c = util.client(srv, { on_event = function(ev)
      if ev.type == "wait" then waits[#waits + 1] = ev end
    end })
    assert(c:pin { message_id = "a" })
    local res = assert(c:pin { message_id = "b" })
    assert.equal(204, res.status)
    assert.equal(1, #waits)
    assert.equal("rate-limit", waits[1].reason)
    local g = util.gaps(srv:requests())[1]
    assert.truthy(g >= 1.0 and g < 3, g)
    c:close()
  end)

  it("pins a sequence longer than the limit without a 429", function()
    local srv = server.start { rate_limit = 5, window = 1 }
    finally(function() srv:stop() end)
    local c = util.client(srv)
    for i = 1, 12 do
      local res = assert(c:pin { message_id = "s" .. i })
      assert.equal(204, res.status, i)
      assert.equal(1, res.attempts)
    end
    c:close()
  end)
end)
