-- What a server says and what an outage does, against the pacing and the
-- retries: values no window keeps (a reset an hour away, or in
-- milliseconds), a window that is spent past max_retry_wait, pins that
-- wait for an answer that never comes, and the circuit breaker. Every
-- case is timed on the local server's clock or the caller's, and checks
-- what the server received: nothing is sent on purpose when a pin is
-- refused.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local now = server.now
local of_type = util.of_type
local list = util.list
local within = util.within

local fake_dict = util.fake_dict

-- n scripted answers that never come in time (the server sleeps first).
local function hangs(n, seconds)
  local s = {}
  for i = 1, n do s[i] = { delay = seconds or 5 } end
  return s
end

-- Pins with c until the circuit lets a call go: while it is open a call
-- fails at once as "unavailable", sending nothing. Returns what the first
-- call let through returned.
local function pin_after_cooldown(c, id)
  local res, msg, kind
  util.wait_for("the circuit's cooldown to end", 5, function()
    res, msg, kind = c:pin { message_id = id }
    return kind ~= "unavailable"
  end)
  return res, msg, kind
end

describe("a server's values and outages", function()
  local srv

  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  describe("a far X-RateLimit-Reset", function()
    it("ends a batch within max_retry_wait: the rest is rate_limited, nothing is sent into the spent window",
      function()
      srv:script { { remaining = 0, reset_in = 3600, headers = { ["X-RateLimit-Limit"] = "2" } } }
      local events, hook = util.recorder()
      local c = util.client(srv, { max_retry_wait = 5, on_event = hook })
      local t0 = now()
      local res = c:pin_many(list(3))
      assert.truthy(now() - t0 < within(1), now() - t0)
      assert.equal(204, res[1].status)
      for i = 2, 3 do
        assert.is_false(res[i].ok)
        assert.equal("rate_limited", res[i].kind)
        assert.equal(0, res[i].attempts)
        assert.truthy(res[i].error:find(
          "^periskope: not sent: the rate limit is spent until its window resets in 3%d%d%d"), res[i].error)
      end
      assert.equal(1, #srv:requests())
      local refused = of_type(events, "failure")
      assert.equal(2, #refused)
      assert.equal("rate_limited", refused[1].kind)
      -- No wait was announced: none would be made.
      assert.equal(0, #of_type(events, "wait"))
      -- pin too: at once, sending nothing.
      t0 = now()
      local r, msg, kind = c:pin { message_id = "again" }
      assert.is_nil(r)
      assert.equal("rate_limited", kind)
      assert.truthy(msg:find("later than max_retry_wait (5 s) allows", 1, true), msg)
      -- (At once: no wait, and the count below shows nothing was sent.)
      assert.truthy(now() - t0 < within(2), now() - t0)
      assert.equal(1, #srv:requests())
      c:close()
    end)

    it("in milliseconds counts as absent: no wait of 1.7e12 s, the pins go", function()
      local ms = tostring((os.time() + 2) * 1000)
      srv:script { { remaining = 0, headers = { ["X-RateLimit-Reset"] = ms, ["X-RateLimit-Limit"] = "2" } } }
      local events, hook = util.recorder()
      local c = util.client(srv, { on_event = hook })
      local t0 = now()
      local res = c:pin_many(list(3))
      assert.truthy(now() - t0 < within(1))
      for i = 1, 3 do assert.equal(204, res[i].status) end
      assert.equal(0, #of_type(events, "wait"))
      assert.equal(0, #of_type(events, "failure"))
      c:close()
    end)

    it("is replaced by a nearer reset from a later answer", function()
      srv:script {
        { remaining = 4, reset_in = 3000, headers = { ["X-RateLimit-Limit"] = "5" } },
        { remaining = 0, reset_in = 2, headers = { ["X-RateLimit-Limit"] = "5" } },
      }
      local events, hook = util.recorder()
      local c = util.client(srv, { max_retry_wait = 10, on_event = hook })
      assert.equal(204, c:pin { message_id = "a" }.status)
      assert.equal(204, c:pin { message_id = "b" }.status)
      -- The window is spent and ends in about 2 s, not in 3000.
      local res = c:pin { message_id = "c" }
      assert.equal(204, res.status)
      local waits = of_type(events, "wait", "rate-limit")
      assert.equal(1, #waits)
      assert.truthy(waits[1].seconds > 0.5 and waits[1].seconds <= 3, waits[1].seconds)
      local gap = util.gaps(srv:requests())[2]
      assert.truthy(gap >= 0.5 and gap < within(3.5), gap)
      c:close()
    end)

    it("is never passed on by a shared store", function()
      local dict = fake_dict()
      local ms = tostring((os.time() + 2) * 1000)
      srv:script {
        { remaining = 0, headers = { ["X-RateLimit-Reset"] = ms, ["X-RateLimit-Limit"] = "2" } },
      }
      local c = util.client(srv, { limiter = periskope.limiter.shared_dict(dict) })
      assert.equal(204, c:pin { message_id = "a" }.status)
      local name = "periskope:" .. util.sha256_hex(srv.api_key)
      local words = {}
      for w in dict.data[name]:gmatch("%S+") do words[#words + 1] = w end
      assert.equal("p3", words[1])
      assert.equal("0", words[5])            -- no reset believed
      -- A second client on the same store is not held back.
      local d = util.client(srv, { limiter = periskope.limiter.shared_dict(dict) })
      local t0 = now()
      assert.equal(204, d:pin { message_id = "b" }.status)
      assert.truthy(now() - t0 < within(1))
      c:close()
      d:close()
    end)

    it("held by a store (a value an older version wrote) is forgotten", function()
      local dict = fake_dict()
      local name = "periskope:" .. util.sha256_hex(srv.api_key)
      -- Spent, with a reset 1.7e12 s away, as p2 text.
      dict.data[name] = ("p2 1 0 0 %d 2 2 2 0 0.000 0 0"):format((os.time() + 2) * 1000)
      local c = util.client(srv, { limiter = periskope.limiter.shared_dict(dict), max_retry_wait = 5 })
      local t0 = now()
      assert.equal(204, c:pin { message_id = "a" }.status)
      assert.truthy(now() - t0 < within(1))
      c:close()
    end)
  end)

  describe("a window spent past max_retry_wait", function()
    it("gets no request: the rest of a batch is rate_limited at once, no 429", function()
      local s = server.start { rate_limit = 2, window = 30 }
      local c = util.client(s, { max_retry_wait = 3 })
      local t0 = now()
      local res = c:pin_many(list(6), { concurrency = 2 })
      assert.truthy(now() - t0 < within(1.5), now() - t0)
      local ok, limited = 0, 0
      for i = 1, 6 do
        if res[i].ok then ok = ok + 1 end
        if res[i].kind == "rate_limited" then limited = limited + 1 end
      end
      assert.equal(2, ok)
      assert.equal(4, limited)
      assert.equal(2, #s:requests())
      assert.is_nil(s:stats().statuses[429])
      c:close()
      s:stop()
    end)

    it("is waited for by a batch as by pin when it resets within max_retry_wait", function()
      -- The batch looks every second: its wait is the time that passed,
      -- not the naps it was told.
      local s = server.start { rate_limit = 1, window = 4 }
      local c = util.client(s, { max_retry_wait = 8 })
      local res = c:pin_many(list(2), { concurrency = 2 })
      assert.equal(204, res[1].status)
      assert.equal(204, res[2].status, res[2].error)
      local gap = util.gaps(s:requests())[1]
      assert.truthy(gap >= 2, gap)
      c:close()
      s:stop()
    end)

    it("after a retry's 429 ends the call with that 429, not a refusal", function()
      srv:script { { status = 429, remaining = 0, reset_in = 2, headers = { ["X-RateLimit-Limit"] = "1" } },
                   { remaining = 0, reset_in = 40, headers = { ["X-RateLimit-Limit"] = "1" } } }
      local c = util.client(srv, { max_retry_wait = 5, retries = 2 })
      local res = c:pin { message_id = "a" }
      -- The retry went after the reset, got the 204; then nothing more.
      assert.equal(204, res.status)
      assert.equal(2, res.attempts)
      -- The next pin is refused: the window ends in 40 s.
      local r, _, kind = c:pin { message_id = "b" }
      assert.is_nil(r)
      assert.equal("rate_limited", kind)
      assert.equal(2, #srv:requests())
      c:close()
    end)
  end)

  describe("an outage", function()
    for _, warm in ipairs { false, true } do
      it(("fails concurrent pins together, in about one timeout (%s client)"):format(warm and "warmed" or "fresh"),
        function()
        local c = util.client(srv, { timeout = 1, retries = 0 })
        if warm then assert.equal(204, c:pin { message_id = "w" }.status) end
        srv:script(hangs(4))
        local t0 = now()
        local res = c:pin_many(list(4), { concurrency = 4 })
        local took = now() - t0
        -- About one timeout, not one each: the counts and arrivals below
        -- tell it apart however loaded the machine; the time bounds it.
        assert.truthy(took < within(3), took)
        for i = 1, 4 do
          assert.is_false(res[i].ok)
          assert.equal("timeout", res[i].kind, res[i].error)
        end
        if not warm then
          -- The first went alone to learn the budget; the others took its
          -- failure rather than a timeout each, and were never sent.
          assert.equal(1, #srv:requests())
          assert.equal(1, res[1].attempts)
          for i = 2, 4 do
            assert.equal(0, res[i].attempts)
            assert.truthy(res[i].error:find("not sent: the request it waited for got no answer", 1, true),
              res[i].error)
          end
        else
          -- All four were sent at once, within a timeout of each other.
          local reqs = srv:requests()
          assert.equal(5, #reqs)
          local first, last = math.huge, -math.huge
          for i = 2, 5 do
            first, last = math.min(first, reqs[i].time), math.max(last, reqs[i].time)
          end
          assert.truthy(last - first < 0.9, last - first)
        end
        c:close()
      end)
    end

    it("retries the pins that shared a failure together, not one at a time", function()
      local c = util.client(srv, { timeout = 0.3, retries = 1, circuit = false })
      srv:script(hangs(1))
      local t0 = now()
      local res = c:pin_many(list(4), { concurrency = 4 })
      local took = now() - t0
      -- One timeout, the backoff, then the four retried at once: 204s.
      for i = 1, 4 do assert.equal(204, res[i].status, res[i].error) end
      assert.truthy(took < within(0.3 + 0.7 + 0.3 + 0.5), took)
      c:close()
    end)
  end)

  describe("the circuit breaker", function()
    it("opens after failures in a row, fails fast sending nothing, probes, and closes", function()
      local events, hook = util.recorder()
      local c = util.client(srv, { timeout = 0.3, retries = 0, circuit = { failures = 3, cooldown = 1 },
        on_event = hook })
      srv:script(hangs(3))
      for i = 1, 3 do
        local r, _, kind = c:pin { message_id = "h" .. i }
        assert.is_nil(r)
        assert.equal("timeout", kind)
      end
      local circuit = of_type(events, "circuit")
      assert.equal(1, #circuit)
      assert.same({ "open", 3 }, { circuit[1].state, circuit[1].failures })
      -- Open: at once, nothing sent.
      local t0 = now()
      local r, msg, kind = c:pin { message_id = "x" }
      -- (At once: the request count below shows nothing was sent.)
      assert.truthy(now() - t0 < within(2), now() - t0)
      assert.is_nil(r)
      assert.equal("unavailable", kind)
      assert.truthy(msg:find("the circuit is open after 3 requests in a row got no answer", 1, true), msg)
      local res = c:pin_many(list(3))
      for i = 1, 3 do assert.equal("unavailable", res[i].kind) end
      assert.equal(3, #srv:requests())
      -- After the cooldown one probe goes, no sooner (the server's clock:
      -- the third request's timeout, then the second of cooldown); its
      -- answer closes the circuit.
      assert.equal(204, pin_after_cooldown(c, "probe").status)
      local reqs = srv:requests()
      assert.equal(4, #reqs)
      assert.equal("/v1/message/probe/pin", reqs[4].uri)
      assert.truthy(reqs[4].time - reqs[3].time >= 1, reqs[4].time - reqs[3].time)
      circuit = of_type(events, "circuit")
      assert.equal(2, #circuit)
      assert.same({ "closed", 0 }, { circuit[2].state, circuit[2].failures })
      assert.equal(204, c:pin { message_id = "after" }.status)
      assert.equal(5, #srv:requests())
      c:close()
    end)

    it("counts requests that got no answer, not the calls that took their failure", function()
      -- One hung answer with three waiters is one failure, not an outage.
      local events, hook = util.recorder()
      local c = util.client(srv, { timeout = 0.3, retries = 0, circuit = { failures = 2, cooldown = 5 },
        on_event = hook })
      srv:script(hangs(1))
      local res = c:pin_many(list(4), { concurrency = 4 })
      for i = 1, 4 do assert.equal("timeout", res[i].kind) end
      assert.equal(0, #of_type(events, "circuit"))
      assert.equal(204, c:pin { message_id = "x" }.status)
      -- Four requests that each got none open it.
      srv:script(hangs(4))
      res = c:pin_many(list(4), { concurrency = 4 })
      for i = 1, 4 do assert.equal("timeout", res[i].kind) end
      local circuit = of_type(events, "circuit")
      assert.equal(1, #circuit)
      assert.same({ "open", 2 }, { circuit[1].state, circuit[1].failures })
      assert.equal("unavailable", select(3, c:pin { message_id = "y" }))
      c:close()
    end)

    it("opens again when the probe gets no answer", function()
      local c = util.client(srv, { timeout = 0.3, retries = 0, circuit = { failures = 1, cooldown = 0.5 } })
      srv:script(hangs(2))
      assert.equal("timeout", select(3, c:pin { message_id = "a" }))
      assert.equal("unavailable", select(3, c:pin { message_id = "b" }))
      assert.equal("timeout", select(3, pin_after_cooldown(c, "probe")))
      assert.equal("unavailable", select(3, c:pin { message_id = "c" }))
      local reqs = srv:requests()
      assert.equal(2, #reqs)
      assert.truthy(reqs[2].time - reqs[1].time >= 0.5, reqs[2].time - reqs[1].time)
      c:close()
    end)

    it("lets no retry go while it is open: the call ends with its own failure", function()
      local c = util.client(srv, { timeout = 0.3, retries = 2, circuit = { failures = 1, cooldown = 5 } })
      srv:script(hangs(3))
      local t0 = now()
      local r, _, kind = c:pin { message_id = "a" }
      assert.is_nil(r)
      assert.equal("timeout", kind)
      assert.truthy(now() - t0 < within(1), now() - t0)   -- no backoff waited
      assert.equal(1, #srv:requests())
      c:close()
    end)

    it("is off with circuit = false, and checks its option", function()
      local c = util.client(srv, { timeout = 0.2, retries = 0, circuit = false })
      srv:script(hangs(6))
      for i = 1, 6 do assert.equal("timeout", select(3, c:pin { message_id = "a" .. i })) end
      assert.equal(6, #srv:requests())
      c:close()
      util.raises(function() util.client(srv, { circuit = 5 }) end,
        "option 'circuit' must be false, or a table { failures = 1 to 1000, "
          .. "cooldown = seconds > 0 and <= 86400 }, got 5")
      util.raises(function() util.client(srv, { circuit = { failures = 0 } }) end,
        "option 'circuit.failures' must be an integer from 1 to 1000, got 0")
      util.raises(function() util.client(srv, { circuit = { cooldown = -1 } }) end,
        "option 'circuit.cooldown' must be a number of seconds > 0 and <= 86400, got -1")
      util.raises(function() util.client(srv, { circuit = { tries = 1 } }) end,
        "unknown option 'circuit.tries' (failures, cooldown)")
      assert.is_userdata(util.client(srv, { circuit = true }))
    end)
  end)

  describe("a pin job", function()
    local HEAD = "HTTP/1.1 204 No Content\r\n\r\n"

    it("refuses a step from inside its own step, and nothing crashes", function()
      local job
      local c = util.client(srv, { retries = 1, on_event = function(ev)
        if ev.type == "request" then job:step(204, HEAD, "") end
      end })
      job = c:pin_job { message_id = "m" }
      util.raises(function() job:step() end, "periskope: job:step: this job is running")
      util.raises(function() job:step() end, "this pin job is over")
      -- From the response event of a retryable answer.
      c = util.client(srv, { retries = 1, on_event = function(ev)
        if ev.type == "response" then job:step() end
      end })
      job = c:pin_job { message_id = "m" }
      assert.equal("send", (job:step()))
      util.raises(function() job:step(503, "HTTP/1.1 503 Unavailable\r\n\r\n", "") end, "this job is running")
      collectgarbage()
      c:close()
      assert.equal(204, util.client(srv):pin { message_id = "still" }.status)
    end)

    it("can be cancelled between steps, and from its own hook", function()
      local c = util.client(srv)
      local job = c:pin_job { message_id = "m" }
      assert.equal("send", (job:step()))
      assert.is_true(job:cancel())
      assert.is_true(job:cancel())
      util.raises(function() job:step(204, HEAD, "") end, "this pin job is over")
      local j2
      c = util.client(srv, { on_event = function(ev) if ev.type == "request" then j2:cancel() end end })
      j2 = c:pin_job { message_id = "m" }
      assert.same({ "done", nil, "periskope: cancelled: the pin job was cancelled", "cancelled" },
        { j2:step() })
      -- The slot it took came back: the client pins on.
      assert.equal(204, c:pin { message_id = "after" }.status)
      c:close()
    end)

    it("caps what a driver feeds it: a long head or body is too_large, and repeats join in linear time", function()
      local c = util.client(srv, { max_body = 100 })
      local job = c:pin_job { message_id = "m" }
      job:step()
      local big = "HTTP/1.1 200 OK\r\n" .. ("X-Pad: " .. ("p"):rep(1000) .. "\r\n"):rep(300) .. "\r\n"
      local done, res, msg, kind = job:step(200, big, "")
      assert.same({ "done", nil, "too_large" }, { done, res, kind })
      assert.truthy(msg:find("response too large (a head over 256 KiB)", 1, true), msg)
      job = c:pin_job { message_id = "m" }
      job:step()
      local _, _, msg2, kind2 = job:step(200, "HTTP/1.1 200 OK\r\n\r\n", ("b"):rep(101))
      assert.equal("too_large", kind2, msg2)
      -- 43,000 repeats of one header in a head just under the cap.
      job = c:pin_job { message_id = "m" }
      job:step()
      local t0 = os.clock()
      local rep = "HTTP/1.1 204 No Content\r\n" .. ("a: b\r\n"):rep(43000) .. "\r\n"
      local _, res3 = job:step(204, rep, "")
      assert.equal(204, res3.status)
      assert.equal(43000 * 3 - 2, #res3.headers.a)
      assert.truthy(os.clock() - t0 < 1, os.clock() - t0)
      c:close()
    end)
  end)

  describe("periskope.perform", function()
    local function request(over)
      local job = util.client(srv):pin_job { message_id = "p" }
      local _, req = job:step()
      for k, v in pairs(over or {}) do req[k] = v end
      return req
    end

    it("sends each phone as given, however long their common start", function()
      local a, b = "phone-" .. ("a"):rep(57) .. "x", "phone-" .. ("a"):rep(57) .. "y"
      for _, phone in ipairs { a, b, a } do
        local req = request()
        for i, line in ipairs(req.headers) do
          if line:find("^x%-phone:") then req.headers[i] = "x-phone: " .. phone end
        end
        assert.equal(204, (periskope.perform(req)))
      end
      local got = {}
      for i, r in ipairs(srv:requests()) do got[i] = r.headers["x-phone"] end
      assert.same({ a, b, a }, got)
      local req = request()
      for i, line in ipairs(req.headers) do
        if line:find("^x%-phone:") then req.headers[i] = "x-phone: phone-" .. ("a"):rep(70) end
      end
      util.raises(function() periskope.perform(req) end,
        "bad argument #1 to 'perform' (field 'headers' x-phone must be a phone")
    end)

    it("checks its request as pin_job builds it", function()
      util.raises(function() periskope.perform(request { extra = 1 }) end,
        "bad argument #1 to 'perform' (unknown field 'extra'")
      util.raises(function() periskope.perform(request { method = "GET" }) end,
        "field 'method' must be \"POST\"")
      util.raises(function() periskope.perform(request { headers = { "bad name: x" } }) end,
        "field 'headers' must hold \"Name: value\" lines")
      util.raises(function() periskope.perform(request { max_body = 1.5 }) end,
        "field 'max_body' must be an integer number of bytes from 0 to 1073741824, got 1.5")
      util.raises(function() periskope.perform(7) end,
        "bad argument #1 to 'perform' (a request table expected, got number)")
      -- An empty header list is a request like another: the server answers.
      local status = periskope.perform(request { headers = {} })
      assert.equal(401, status)
    end)
  end)

  it("says what a number is, exactly", function()
    local c = util.client(srv)
    util.raises(function() c:pin { message_id = "m", time = 7 + 2 ^ -50 } end,
      "field 'time' must be 1, 7 or 30 (days), got 7.0000000000000009")
    c:close()
  end)
end)
