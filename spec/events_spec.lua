-- The on_event hook: the fields of every event type, their order around
-- retries, the Lua context the hook runs in, errors raised by the hook, and
-- the key absent from every event and PERISKOPE_DEBUG line. pin_many_spec
-- counts requests in flight with the hook and raises from it at a request
-- event; safety_spec walks the events of the failure kinds. This file
-- covers the rest, against the local Periskope server.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

-- The server accepts only this key, so every event below was made with it.
local SENTINEL = "sk-SENTINEL-e5b1d7"

-- A hook that keeps every event, and the events.
local function recorder()
  local evs = {}
  return function(ev) evs[#evs + 1] = ev end, evs
end

local only = util.of_type

local function list(n)
  local l = {}
  for i = 1, n do l[i] = { message_id = "m" .. i, phone = "phone-item" .. i } end
  return l
end

local strings = util.strings

local function sequence(evs)
  local out = {}
  for _, ev in ipairs(evs) do
    out[#out + 1] = ev.type .. (ev.attempt and ("#" .. ev.attempt) or "")
      .. (ev.reason and ("(" .. ev.reason .. ")") or "")
  end
  return table.concat(out, " ")
end

describe("on_event", function()
  local srv

  setup(function() srv = server.start { api_key = SENTINEL } end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function client(opts)
    return util.client(srv, opts)
  end

  describe("request events", function()
    it("carry attempt, method, url and the headers sent, Authorization as Bearer ***", function()
      local hook, evs = recorder()
      local c = client { on_event = hook }
      local want = c:build_pin { message_id = "a@b", time = 7 }
      assert(c:pin { message_id = "a@b", time = 7 })
      local ev = evs[1]
      assert.equal("request", ev.type)
      assert.equal(1, ev.attempt)
      assert.equal("POST", ev.method)
      assert.equal(srv.base_url .. "/message/a%40b/pin", ev.url)
      assert.equal(want.url, ev.url)
      assert.is_nil(ev.index)                      -- only pin_many's events have one
      local n = 0
      for name, value in pairs(want.headers) do
        n = n + 1
        if name == "Authorization" then
          assert.equal("Bearer " .. SENTINEL, value)
          assert.equal("Bearer ***", ev.headers[name])
        else
          assert.equal(value, ev.headers[name], name)
        end
      end
      for _ in pairs(ev.headers) do n = n - 1 end
      assert.equal(0, n)                           -- no header more, none less
      -- What the event shows is what the server got, the key aside.
      local got = srv:requests()[1].headers
      assert.equal(ev.headers["x-phone"], got["x-phone"])
      assert.equal(ev.headers["User-Agent"], got["user-agent"])
      assert.equal("Bearer " .. SENTINEL, got.authorization)
      c:close()
    end)
  end)

  describe("response events", function()
    it("carry attempt, status, elapsed, trace_id and rate_limit, as the result has them", function()
      srv:script { { delay = 0.3 } }
      local hook, evs = recorder()
      local c = client { on_event = hook }
      local res = assert(c:pin { message_id = "m" })
      local ev = only(evs, "response")[1]
      assert.equal(1, ev.attempt)
      assert.equal(204, ev.status)
      assert.equal("number", type(ev.elapsed))
      assert.truthy(ev.elapsed >= 0.3 and ev.elapsed < 5, ev.elapsed)
      assert.equal(res.trace_id, ev.trace_id)
      assert.truthy(ev.trace_id:match("^%x+%-%x+%-4%x+%-%x+%-%x+$"), ev.trace_id)
      assert.same(res.rate_limit, ev.rate_limit)
      assert.equal(1000, ev.rate_limit.limit)
      assert.is_nil(ev.headers)                    -- the result has them, the event not
      c:close()
    end)

    it("come for answers that are not ok too, and leave out what the answer lacked", function()
      srv:script {
        { status = 404, body = '{"message":"Message not found"}' },
        { status = 204, rate_headers = false, headers = { ["x-periskope-trace-id"] = false } },
      }
      local hook, evs = recorder()
      local c = client { on_event = hook }
      local res = assert(c:pin { message_id = "gone" })
      assert.equal(404, res.status)
      local ev = only(evs, "response")[1]
      assert.equal(404, ev.status)
      assert.is_nil(ev.error)                      -- the result says why, the event not
      assert(c:pin { message_id = "bare" })
      ev = only(evs, "response")[2]
      assert.equal(204, ev.status)
      assert.is_nil(ev.trace_id)
      assert.is_nil(ev.rate_limit)
      c:close()
    end)
  end)

  describe("failure events", function()
    it("carry attempt, kind and message, as pin returns them", function()
      srv:script { { action = "close" } }
      local hook, evs = recorder()
      local c = client { on_event = hook, retries = 0 }
      local res, msg, kind = c:pin { message_id = "m" }
      assert.is_nil(res)
      local ev = only(evs, "failure")[1]
      assert.equal(1, ev.attempt)
      assert.equal("network", ev.kind)
      assert.equal(kind, ev.kind)
      assert.equal(msg, ev.message)
      assert.equal(1, ev.message:find("periskope: ", 1, true))
      assert.is_nil(ev.status)
      c:close()
    end)

    it("say timeout for an answer that came too late", function()
      srv:script { { delay = 2 } }
      local hook, evs = recorder()
      local c = client { on_event = hook, retries = 0, timeout = 0.3 }
      local _, _, kind = c:pin { message_id = "m" }
      assert.equal("timeout", kind)
      assert.equal("timeout", only(evs, "failure")[1].kind)
      c:close()
    end)
  end)

  describe("wait events", function()
    it("say retry-after, with the seconds the server asked for", function()
      srv:script { { status = 429, headers = { ["Retry-After"] = "1" } } }
      local hook, evs = recorder()
      local c = client { on_event = hook }
      assert.equal(204, assert(c:pin { message_id = "m" }).status)
      local w = only(evs, "wait")
      assert.equal(1, #w)
      assert.equal("retry-after", w[1].reason)
      assert.truthy(w[1].seconds > 0.9 and w[1].seconds <= 1.01, w[1].seconds)
      c:close()
    end)

    it("say backoff after a 503 without rate-limit headers: 0.5 s plus up to a quarter", function()
      srv:script { { status = 503, rate_headers = false } }
      local hook, evs = recorder()
      local c = client { on_event = hook }
      assert(c:pin { message_id = "m" })
      local w = only(evs, "wait")
      assert.equal(1, #w)
      assert.equal("backoff", w[1].reason)
      assert.truthy(w[1].seconds >= 0.5 and w[1].seconds <= 0.625 + 1e-9, w[1].seconds)
      c:close()
    end)

    it("say rate-limit when a 429 shows a reset in the future, and before a pin once the budget is spent", function()
      srv:script { { status = 429, remaining = 0, reset_in = 1 }, { remaining = 0, reset_in = 1 } }
      local hook, evs = recorder()
      local c = client { on_event = hook }
      assert(c:pin { message_id = "retried" })     -- 429, wait, 204 with remaining 0
      assert(c:pin { message_id = "paced" })       -- waits before its request
      assert.equal("request#1 response#1 wait(rate-limit) request#2 response#2 "
        .. "wait(rate-limit) request#1 response#1", sequence(evs))
      for _, w in ipairs(only(evs, "wait")) do
        assert.truthy(w.seconds > 0 and w.seconds <= 2, w.seconds)
      end
      c:close()
    end)
  end)

  it("come in order for a retried pin: request, failure, wait, request, response, wait, request, response", function()
    -- The close comes first, on a fresh connection: on a reused one it
    -- would count as a stale connection, resent without an event.
    srv:script { { action = "close" }, { status = 503, rate_headers = false } }
    local hook, evs = recorder()
    local c = client { on_event = hook }
    local res = assert(c:pin { message_id = "m" })
    assert.equal(204, res.status)
    assert.equal(3, res.attempts)
    assert.equal("request#1 failure#1 wait(backoff) request#2 response#2 wait(backoff) "
      .. "request#3 response#3", sequence(evs))
    assert.equal("network", evs[2].kind)
    assert.equal(503, evs[5].status)
    assert.equal(3, #srv:requests())
    c:close()
  end)

  it("carry the item's index with pin_many, each item's events in order", function()
    -- The first request goes alone, to learn the budget: item 1 gets the 503.
    srv:script { { status = 503, rate_headers = false } }
    local hook, evs = recorder()
    local c = client { on_event = hook }
    local res = c:pin_many(list(6), { concurrency = 3 })
    for i = 1, 6 do assert.is_true(res[i].ok, i) end
    local per = {}
    for _, ev in ipairs(evs) do
      if ev.index then
        per[ev.index] = per[ev.index] or {}
        table.insert(per[ev.index], ev)
        if ev.type == "request" then
          assert.equal(srv.base_url .. "/message/m" .. ev.index .. "/pin", ev.url)
        end
      else
        -- Only the batch's own pacing waits belong to no item.
        assert.equal("wait", ev.type)
        assert.equal("rate-limit", ev.reason)
      end
    end
    assert.equal("request#1 response#1 wait(backoff) request#2 response#2", sequence(per[1]))
    assert.equal(503, per[1][2].status)
    for i = 2, 6 do
      assert.equal("request#1 response#1", sequence(per[i]), i)
    end
    c:close()
  end)

  it("come from a client built by periskope.configure too", function()
    local hook, evs = recorder()
    periskope.configure { api_key = SENTINEL, base_url = srv.base_url, phone = util.PHONE, on_event = hook }
    assert(periskope.pin { message_id = "m" })
    assert.equal("request#1 response#1", sequence(evs))
    periskope.configure { api_key = SENTINEL, base_url = srv.base_url }   -- no hook from here on
  end)

  describe("the hook's context", function()
    it("is the caller's: the main thread when called from it", function()
      local outside = { coroutine.running() }
      local inside
      local c = client { on_event = function(ev)
        if ev.type == "request" then inside = { coroutine.running() } end
      end }
      assert(c:pin { message_id = "m" })
      assert.same(outside, inside)                 -- 5.1: {}; 5.2+: {main, true}
      c:close()
    end)

    it("is the caller's coroutine, for pin and pin_many", function()
      local seen = {}
      local c = client { on_event = function() seen[#seen + 1] = coroutine.running() end }
      local co = coroutine.create(function()
        assert(c:pin { message_id = "m" })
        c:pin_many(list(3))
        return "done"
      end)
      assert.same({ true, "done" }, { coroutine.resume(co) })
      assert.truthy(#seen >= 8)
      for _, t in ipairs(seen) do assert.equal(co, t) end
      c:close()
    end)

    it("can call Lua functions, read and change upvalues, and use the client", function()
      local calls, texts = 0, {}
      local function note(s) calls = calls + 1; texts[#texts + 1] = s end
      local c
      c = client { on_event = function(ev)
        note(ev.type)
        if ev.type == "request" then
          -- build_pin has its own request: the one in flight stays as it was.
          local other = c:build_pin { message_id = "other", pin = false }
          note(other.url)
          note(tostring(c))
        end
      end }
      assert(c:pin { message_id = "outer" })
      assert.equal(4, calls)
      assert.equal(srv.base_url .. "/message/other/pin", texts[2])
      assert.truthy(texts[3]:find("periskope.Client", 1, true))
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal("/v1/message/outer/pin", reqs[1].uri)
      assert.equal('{"pin":true}', reqs[1].body)
      c:close()
    end)

    it("may pin on the same client from a pin's hook; each pin sends its own message", function()
      local c, inner
      local started = false                        -- the inner pin has events too
      c = client { on_event = function(ev)
        if ev.type == "request" and not started then
          started = true
          inner = assert(c:pin { message_id = "inner", phone = "phone-inner" })
        end
      end }
      local t0 = server.now()
      local res = assert(c:pin { message_id = "outer", phone = "phone-outer" })
      -- At once: the inner pin does not wait for the outer one's answer,
      -- which cannot come before the hook returns.
      local took = server.now() - t0
      assert.truthy(took < 3, took)
      assert.equal("phone-outer", res.headers["x-periskope-phone-id"])
      assert.equal("phone-inner", inner.headers["x-periskope-phone-id"])
      local uris = {}
      for _, r in ipairs(srv:requests()) do uris[#uris + 1] = r.uri end
      assert.same({ "/v1/message/inner/pin", "/v1/message/outer/pin" }, uris)
      c:close()
    end)

    it("cannot yield: that is an error out of pin, and the client stays usable", function()
      local c = client { on_event = function(ev)
        if ev.type == "response" then coroutine.yield("from the hook") end
      end }
      local co = coroutine.create(function() return c:pin { message_id = "m" } end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("yield", 1, true), err)
      assert.equal("dead", coroutine.status(co))
      local c2 = client {}
      assert.equal(204, assert(c2:pin { message_id = "after" }).status)
      c2:close()
      c:close()
    end)
  end)

  describe("an error raised by the hook", function()
    it("comes out of pin_many as raised, with 8 in flight, after cleanup; the client stays usable", function()
      local slow = server.start { api_key = SENTINEL, latency = 0.5 }
      finally(function() slow:stop() end)
      local boom = { why = "the hook says stop" }   -- a table: it must come out as is
      local requests, inflight, max, at_error, armed = 0, 0, 0, nil, true
      local c = util.client(slow, { on_event = function(ev)
        if ev.type == "request" then
          requests = requests + 1
          inflight = inflight + 1
          if inflight > max then max = inflight end
        elseif ev.type == "response" or ev.type == "failure" then
          if armed and inflight == 8 then
            armed, at_error = false, inflight
            error(boom)
          end
          inflight = inflight - 1
        end
      end })
      local ok, err = pcall(c.pin_many, c, list(20), { concurrency = 8 })
      assert.is_false(ok)
      assert.equal(boom, err)
      assert.equal(8, at_error)
      -- The probe and the 8 that were in flight; none started after the
      -- error, none without its event.
      assert.equal(9, requests)
      assert.equal(9, slow:stats().requests)
      -- Same client: a pin gets its own answer, not one of the 7 stopped.
      local res = assert(c:pin { message_id = "after", phone = "phone-after" })
      assert.equal(204, res.status)
      assert.equal(1, res.attempts)
      assert.equal("phone-after", res.headers["x-periskope-phone-id"])
      -- And a batch runs 8 in flight again, each item with its own answer.
      inflight, max = 0, 0
      local again = c:pin_many(list(8), { concurrency = 8 })
      for i = 1, 8 do
        assert.is_true(again[i].ok, i)
        assert.equal("phone-item" .. i, again[i].headers["x-periskope-phone-id"])
      end
      assert.equal(8, max)
      c:close()
    end)

    it("at a wait event stops pin before the retry", function()
      srv:script { { status = 503, rate_headers = false } }
      local c = client { on_event = function(ev)
        if ev.type == "wait" then error("no retries today") end
      end }
      util.raises(function() c:pin { message_id = "m" } end, "no retries today")
      assert.equal(1, #srv:requests())
      c:close()
    end)

    it("of a pin nested in pin_many's hook, caught there, leaves the batch running", function()
      -- Run in a child process with a deadline: a module that stops the
      -- batch's transfers for the inner error loops forever.
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([[
        package.cpath = %q .. ";" .. package.cpath
        local p = require "periskope"
        local c, depth, done = nil, 0, false
        c = p.new { api_key = %q, base_url = %q, phone = "1234567", on_event = function(ev)
          if depth > 0 then error("inner hook fails") end
          if ev.type == "response" and ev.index == 2 and not done then
            done = true
            depth = 1
            local ok = pcall(c.pin, c, { message_id = "inner" })
            depth = 0
            assert(not ok)
          end
        end }
        local l = {}
        for i = 1, 6 do l[i] = { message_id = "m" .. i } end
        local res = c:pin_many(l, { concurrency = 4 })
        for i = 1, 6 do assert(res[i].ok, i) end
        print("batch done")
      ]]):format(os.getenv("PERISKOPE_CPATH") or "", SENTINEL, srv.base_url))
      f:close()
      local out, code = server.sh("timeout 10 " .. server.quote(util.lua_bin()) .. " "
        .. server.quote(script) .. " 2>&1")
      os.remove(script)
      assert.equal("batch done\n", out)
      assert.equal(0, code)
    end)
  end)

  describe("with a sentinel key", function()
    -- One scenario per event type and wait reason; a fresh client each.
    local SCENARIOS = {
      { name = "ok", script = {}, run = function(c) return c:pin { message_id = "m" } end },
      { name = "failure", opts = { retries = 0 }, script = { { action = "close" } },
        run = function(c) return c:pin { message_id = "m" } end },
      { name = "retry-after", script = { { status = 429, headers = { ["Retry-After"] = "0" } } },
        run = function(c) return c:pin { message_id = "m" } end },
      { name = "backoff", script = { { status = 503, rate_headers = false } },
        run = function(c) return c:pin { message_id = "m" } end },
      { name = "rate-limit", script = { { remaining = 0, reset_in = 1 } },
        run = function(c) c:pin { message_id = "m" }; return c:pin { message_id = "n" } end },
      { name = "pin_many", script = {},
        run = function(c) return c:pin_many(list(3)) end },
      -- A dictionary whose set fails: the shared store fails, the pin goes on.
      { name = "limiter", script = {},
        opts = { limiter = periskope.limiter.shared_dict {
          get = function() end, set = function() return false, "no memory" end,
          add = function() return true end, delete = function() end,
        } },
        run = function(c) return c:pin { message_id = "m" } end },
    }

    it("is in no event of any type", function()
      local all = {}
      for _, sc in ipairs(SCENARIOS) do
        srv:reset()
        srv:script(sc.script)
        local hook, evs = recorder()
        local opts = { on_event = hook }
        for k, v in pairs(sc.opts or {}) do opts[k] = v end
        local c = client(opts)
        local a, b, k = sc.run(c)
        for _, s in ipairs(strings({ a, b, k, evs, tostring(c) })) do
          assert.falsy(s:find("SENTINEL", 1, true), ("%s: leaked in %q"):format(sc.name, s))
        end
        for _, ev in ipairs(evs) do all[#all + 1] = ev end
        c:close()
      end
      -- Every type and reason was walked.
      for _, kind in ipairs { "request", "response", "failure", "wait", "limiter" } do
        assert.truthy(#only(all, kind) > 0, kind)
      end
      for _, reason in ipairs { "retry-after", "rate-limit", "backoff" } do
        assert.truthy(#only(all, "wait", reason) > 0, reason)
      end
      local indexed = 0
      for _, ev in ipairs(all) do if ev.index then indexed = indexed + 1 end end
      assert.truthy(indexed >= 6, indexed)
    end)

    it("is in no PERISKOPE_DEBUG line, for any event type", function()
      for _, sc in ipairs(SCENARIOS) do
        srv:reset()
        srv:script(sc.script)
        -- A child process per scenario, so its stderr can be read; the run
        -- function travels as source text.
        local script = os.tmpname()
        local f = assert(io.open(script, "w"))
        local body = ({
          ok = 'c:pin { message_id = "m" }',
          failure = 'c:pin { message_id = "m" }',
          ["retry-after"] = 'c:pin { message_id = "m" }',
          backoff = 'c:pin { message_id = "m" }',
          ["rate-limit"] = 'c:pin { message_id = "m" }; c:pin { message_id = "n" }',
          pin_many = 'c:pin_many { { message_id = "a" }, { message_id = "b" }, { message_id = "c" } }',
          limiter = 'c:pin { message_id = "m" }',
        })[sc.name]
        local limiter = sc.name == "limiter" and (", limiter = p.limiter.shared_dict { get = function() end,"
          .. " set = function() return false, 'no memory' end, add = function() return true end,"
          .. " delete = function() end }") or ""
        f:write(([[
          package.cpath = %q .. ";" .. package.cpath
          local p = require "periskope"
          local c = p.new { api_key = %q, base_url = %q, phone = "1234567", retries = %d%s }
          %s
          io.stdout:write(tostring(c), "\n")
        ]]):format(os.getenv("PERISKOPE_CPATH") or "", SENTINEL, srv.base_url,
          (sc.opts and sc.opts.retries) or 2, limiter, body))
        f:close()
        local out, code = server.sh("PERISKOPE_DEBUG=1 " .. server.quote(util.lua_bin()) .. " "
          .. server.quote(script) .. " 2>&1")
        os.remove(script)
        assert.equal(0, code, out)
        assert.falsy(out:find("SENTINEL", 1, true), sc.name .. ": " .. out)
        assert.truthy(out:find("periskope: request attempt=1 method=POST url=", 1, true), out)
        local want = ({
          ok = "periskope: response attempt=1 status=204",
          failure = "periskope: failure attempt=1 kind=network",
          ["retry-after"] = "reason=retry-after",
          backoff = "reason=backoff",
          ["rate-limit"] = "reason=rate-limit",
          pin_many = "periskope: response attempt=1 status=204",
          limiter = "periskope: limiter error=periskope: shared_dict",
        })[sc.name]
        assert.truthy(out:find(want, 1, true), sc.name .. ": " .. out)
        if sc.name ~= "failure" then
          assert.truthy(out:find("periskope: response", 1, true), out)
        end
      end
    end)
  end)
end)

describe("periskope.debug_line", function()
  it("writes an event as PERISKOPE_DEBUG does: its type, then the fields it shows, in order", function()
    assert.equal("periskope: response attempt=2 status=204 elapsed=0.33333333333333 trace_id=t-1 index=3",
      periskope.debug_line { type = "response", index = 3, trace_id = "t-1", elapsed = 1 / 3, status = 204,
        attempt = 2, rate_limit = { limit = 10 }, headers = { Authorization = "Bearer ***" } })
    assert.equal("periskope: wait seconds=7 reason=backoff", periskope.debug_line {
      type = "wait", reason = "backoff", seconds = 7.0, extra = "not shown", kind = true })
    assert.equal("periskope: circuit", periskope.debug_line { type = "circuit", state = "open", failures = 5 })
    util.raises(function() periskope.debug_line {} end,
      "bad argument #1 to", "(field 'type' must be a string (the event's type), got nil)")
    util.raises(function() periskope.debug_line "request" end, "table expected")
  end)

  it("is the line the module writes for each event of a pin", function()
    local srv = server.start { api_key = SENTINEL }
    finally(function() srv:stop() end)
    local busy = { status = 503, headers = { ["Retry-After"] = "0" } }
    srv:script { busy, { status = 204 }, busy }   -- each pin: 503, then 204
    -- One pin writes its lines to stderr (no hook); the same pin, again,
    -- hands its events to a hook that writes debug_line's to stdout.
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      package.cpath = %q .. ";" .. package.cpath
      local p = require "periskope"
      local opts = { api_key = %q, base_url = %q, phone = "1234567" }
      assert(p.new(opts):pin { message_id = "m" })
      opts.on_event = function(ev) io.stdout:write(p.debug_line(ev), "\n") end
      assert(p.new(opts):pin { message_id = "m" })
    ]]):format(os.getenv("PERISKOPE_CPATH") or "", SENTINEL, srv.base_url))
    f:close()
    local err = os.tmpname()
    local out, code = server.sh("PERISKOPE_DEBUG=1 " .. server.quote(util.lua_bin()) .. " "
      .. server.quote(script) .. " 2>" .. server.quote(err))
    local written = assert(io.open(err)):read("*a")
    os.remove(script)
    os.remove(err)
    assert.equal(0, code, written)
    -- What differs from one pin to the next: the time taken, the trace id.
    local function same(text)
      return (text:gsub("elapsed=%S+", "elapsed=*"):gsub("trace_id=%S+", "trace_id=*"))
    end
    assert.truthy(written:find("periskope: wait seconds=0 reason=retry-after\n", 1, true), written)
    assert.equal(same(written), same(out))
  end)
end)
