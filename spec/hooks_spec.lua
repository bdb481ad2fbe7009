-- What an on_event hook may do to the client that called it (README,
-- "Events"): close it, configure the default client, pin, pin_many, yield,
-- raise any value, run the collector. Each is done or refused with a clear
-- error; the process never crashes or hangs, and the client ends closed or
-- usable. The cases that once crashed the interpreter run in a child
-- process with a deadline, so that a regression fails its spec instead of
-- taking the whole run down.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local list = util.list

-- Seconds since the epoch, to the millisecond (os.time has whole seconds).
local now = server.now

-- Runs body in a fresh interpreter with the module of this run loaded as
-- p, BASE, KEY and PHONE set for srv, and client(opts) making a client of
-- it; returns what it printed and its exit status.
local function child(srv, body)
  return util.run_lua(([[
    local p = require "periskope"
    local BASE, KEY, PHONE = %q, %q, %q
    local function client(o)
      local opts = { api_key = KEY, base_url = BASE, phone = PHONE, timeout = 5, connect_timeout = 2 }
      for k, v in pairs(o or {}) do opts[k] = v end
      return p.new(opts)
    end
    %s
  ]]):format(srv.base_url, srv.api_key, util.PHONE, body))
end

describe("on_event", function()
  local srv

  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function client(opts)
    return util.client(srv, opts)
  end

  describe("may close the client", function()
    it("during pin: the attempt under way is answered, none follows, then the client is closed", function()
      local out, code = child(srv, [[
        local c
        c = client { on_event = function(ev)
          if ev.type == "request" then c:close() end
        end }
        local res = assert(c:pin { message_id = "m" })
        print(res.status, res.attempts, tostring(c))
        local ok, err = pcall(c.pin, c, { message_id = "n" })
        print(ok, err)
        collectgarbage()
      ]])
      assert.equal(0, code, out)
      assert.truthy(out:find("^204\t1\tperiskope.Client %(closed%)\n"), out)
      assert.truthy(out:find("false\t[^\n]*periskope: attempt to use a closed client\n"), out)
      assert.equal(1, #srv:requests())
    end)

    it("during pin, at a wait: no retry is made; pin returns the answer it has", function()
      srv:script { { status = 503, rate_headers = false } }
      local out, code = child(srv, [[
        local c
        c = client { on_event = function(ev)
          if ev.type == "wait" then c:close() end
        end }
        local res = assert(c:pin { message_id = "m" })
        print(res.status, res.attempts, tostring(c))
      ]])
      assert.equal(0, code, out)
      assert.equal("503\t1\tperiskope.Client (closed)\n", out)
      assert.equal(1, #srv:requests())
    end)

    it("during pin_many: the batch stops and raises; the client is closed", function()
      local out, code = child(srv, [[
        local c, seen = nil, 0
        c = client { on_event = function(ev)
          if ev.type == "response" then
            seen = seen + 1
            if seen == 2 then c:close() end
          end
        end }
        local l = {}
        for i = 1, 20 do l[i] = { message_id = "m" .. i } end
        local ok, err = pcall(c.pin_many, c, l, { concurrency = 4 })
        print(ok, err)
        print(tostring(c))
        collectgarbage()
      ]])
      assert.equal(0, code, out)
      assert.truthy(out:find("^false\tperiskope: attempt to use a closed client %(closed during pin_many%)\n"), out)
      assert.truthy(out:find("\nperiskope.Client %(closed%)\n$"), out)
      -- The probe, then at most 4 in flight when the close came: none after.
      assert.truthy(#srv:requests() <= 5, #srv:requests())
    end)

    it("and raise: the raised value comes out, not a closed-client error", function()
      local out, code = child(srv, [[
        local c
        local boom = { "boom" }
        c = client { on_event = function(ev)
          if ev.type == "response" and ev.index == 2 then c:close(); error(boom) end
        end }
        local ok, err = pcall(c.pin_many, c, { { message_id = "a" }, { message_id = "b" }, { message_id = "c" } })
        print(ok, err == boom, tostring(c))
      ]])
      assert.equal(0, code, out)
      assert.equal("false\ttrue\tperiskope.Client (closed)\n", out)
    end)

    it("from a nested pin's hook: both pins finish, then the client is closed", function()
      local out, code = child(srv, [[
        local c, depth = nil, 0
        c = client { on_event = function(ev)
          if ev.type == "request" and depth == 0 then
            depth = 1
            local inner = assert(c:pin { message_id = "inner" })
            print("inner", inner.status)
          elseif ev.type == "response" and depth == 1 then
            depth = 2
            c:close()
          end
        end }
        local res = assert(c:pin { message_id = "outer" })
        print("outer", res.status, tostring(c))
      ]])
      assert.equal(0, code, out)
      assert.equal("inner\t204\nouter\t204\tperiskope.Client (closed)\n", out)
      local uris = {}
      for _, r in ipairs(srv:requests()) do uris[#uris + 1] = r.uri end
      assert.same({ "/v1/message/inner/pin", "/v1/message/outer/pin" }, uris)
    end)
  end)

  describe("may configure the default client", function()
    it("during periskope.pin: that call finishes on the old client, the next uses the new options", function()
      local out, code = child(srv, [[
        local done = false
        p.configure { api_key = KEY, base_url = BASE, phone = "phone-first", on_event = function(ev)
          if ev.type == "request" and not done then
            done = true
            p.configure { api_key = KEY, base_url = BASE, phone = "phone-second" }
            collectgarbage()
            collectgarbage()
          end
        end }
        local res = assert(p.pin { message_id = "m" })
        print(res.status, res.headers["x-periskope-phone-id"])
        collectgarbage()
        res = assert(p.pin { message_id = "n" })
        print(res.status, res.headers["x-periskope-phone-id"])
      ]])
      assert.equal(0, code, out)
      assert.equal("204\tphone-first\n204\tphone-second\n", out)
    end)
  end)

  describe("may pin on the same client", function()
    it("from pin's hook, and that pin goes out at once on a fresh client", function()
      -- Before its first answer a client lets one request go alone; the
      -- nested pin must not wait for the outer one's, which cannot come
      -- before the hook returns (it waited timeout + connect_timeout).
      local c, inner
      local started = false                        -- the inner pin has events too
      c = client { timeout = 30, connect_timeout = 10, on_event = function(ev)
        if ev.type == "request" and not started then
          started = true
          inner = assert(c:pin { message_id = "inner" })
        end
      end }
      local t0 = now()
      local res = assert(c:pin { message_id = "outer" })
      local took = now() - t0
      assert.truthy(took < util.within(10), took)   -- not timeout + connect_timeout
      assert.equal(204, res.status)
      assert.equal(204, inner.status)
      local uris = {}
      for _, r in ipairs(srv:requests()) do uris[#uris + 1] = r.uri end
      assert.same({ "/v1/message/inner/pin", "/v1/message/outer/pin" }, uris)
      c:close()
    end)

    it("from pin_many's hook, at the batch's first request, at once too", function()
      local c, inner
      local started = false
      c = client { on_event = function(ev)
        if ev.type == "request" and ev.index == 1 and not started then
          started = true
          inner = assert(c:pin { message_id = "inner", phone = "phone-inner" })
        end
      end }
      local t0 = now()
      local res = c:pin_many(list(4), { concurrency = 2 })
      local took = now() - t0
      assert.truthy(took < 3, took)
      for i = 1, 4 do assert.equal("phone-item" .. i, res[i].headers["x-periskope-phone-id"]) end
      assert.equal("phone-inner", inner.headers["x-periskope-phone-id"])
      assert.equal(5, #srv:requests())
      c:close()
    end)

    it("over and over, until Lua's C stack runs out: a clear error, no hang, and the client pins again", function()
      local out, code = child(srv, [[
        local c, depth = nil, 0
        c = client { on_event = function(ev)
          if ev.type == "request" then depth = depth + 1; c:pin { message_id = "r" .. depth } end
        end }
        local ok, err = pcall(c.pin, c, { message_id = "m" })
        print(ok, depth > 10, (tostring(err):find("overflow")) ~= nil)
        c:close()
        -- A raise at each request event left no slot held: a new pin on a
        -- client of the same budget would have waited for them.
        local d = client {}
        print(assert(d:pin { message_id = "after" }).status)
      ]])
      assert.equal(0, code, out)
      assert.equal("false\ttrue\ttrue\n204\n", out)
      -- Every nested pin raised at its request event: none was sent.
      assert.equal(1, #srv:requests())
    end)
  end)

  describe("may pin_many on the same client", function()
    it("from pin_many's hook: each batch has its own transfers and results", function()
      local c, nested
      local started = false
      c = client { on_event = function(ev)
        if ev.type == "request" and ev.index == 1 and not started then
          started = true
          nested = c:pin_many({ { message_id = "n1", phone = "phone-n1" },
                                { message_id = "n2", phone = "phone-n2" },
                                { message_id = "n3", phone = "phone-n3" } }, { concurrency = 3 })
        end
      end }
      local t0 = now()
      local res = c:pin_many(list(5), { concurrency = 3 })
      assert.truthy(now() - t0 < 3)
      for i = 1, 5 do assert.equal("phone-item" .. i, res[i].headers["x-periskope-phone-id"]) end
      for i = 1, 3 do
        assert.is_true(nested[i].ok)
        assert.equal("phone-n" .. i, nested[i].headers["x-periskope-phone-id"])
      end
      assert.equal(8, #srv:requests())
      c:close()
    end)
  end)

  describe("may not yield", function()
    it("out of pin or pin_many: a clear error, and the same client pins again", function()
      local c = client { on_event = function(ev)
        if ev.type == "response" then coroutine.yield("from the hook") end
      end }
      for _, call in ipairs {
        function() return c:pin { message_id = "m" } end,
        function() return c:pin_many(list(3)) end,
      } do
        local co = coroutine.create(call)
        local ok, err = coroutine.resume(co)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("periskope: on_event may not yield", 1, true), err)
        assert.truthy(tostring(err):find("lua_pcall", 1, true), err)
        assert.equal("dead", coroutine.status(co))
      end
      -- The same client: a hook that does not yield now.
      local quiet = false
      c = client { on_event = function(ev)
        if ev.type == "response" and not quiet then coroutine.yield() end
      end }
      local co = coroutine.create(function() return c:pin { message_id = "m" } end)
      assert.is_false((coroutine.resume(co)))
      quiet = true
      assert.equal(204, assert(c:pin { message_id = "after" }).status)
      local again = c:pin_many(list(3))
      for i = 1, 3 do assert.is_true(again[i].ok) end
      c:close()
    end)
  end)

  describe("may raise any value", function()
    -- The values a hook may raise; each must come out as it went in.
    local VALUES = { "a string", { table = true }, 42, false, true }

    -- A scenario per event type: the script that makes the event happen,
    -- and options (a limiter that cannot be reached makes limiter events).
    local SCENARIOS = {
      { event = "request", script = {} },
      { event = "response", script = {} },
      { event = "failure", script = { { action = "close" } } },
      { event = "wait", script = { { status = 503, rate_headers = false } } },
      { event = "limiter", script = {}, limiter = true },
    }

    for _, sc in ipairs(SCENARIOS) do
      it("at a " .. sc.event .. " event of pin and pin_many: it comes out unchanged, "
        .. "and the client pins again at once", function()
        for _, many in ipairs { false, true } do
          for _, value in ipairs(VALUES) do
            srv:reset()
            srv:script(sc.script)
            local armed = true
            local opts = { on_event = function(ev)
              if armed and ev.type == sc.event then armed = false; error(value, 0) end
            end }
            if sc.limiter then
              -- A store that fails (its set refuses): a limiter event, in
              -- every build (with or without hiredis).
              opts.limiter = periskope.limiter.shared_dict {
                get = function() end, set = function() return false, "no memory" end,
                add = function() return true end, delete = function() end,
              }
            end
            local c = client(opts)
            local ok, err
            if many then
              ok, err = pcall(c.pin_many, c, list(3), { concurrency = 2 })
            else
              ok, err = pcall(c.pin, c, { message_id = "m" })
            end
            assert.is_false(ok)
            assert.equal(value, err)                 -- the same value, tables too
            -- Usable at once: no slot was left held, no transfer left running.
            local t0 = now()
            assert.equal(204, assert(c:pin { message_id = "after" }).status)
            local res = c:pin_many(list(2))
            assert.is_true(res[1].ok and res[2].ok)
            assert.truthy(now() - t0 < 3)
            c:close()
          end
        end
      end)
    end

    it("nil, out of pin and pin_many", function()
      local c = client { on_event = function(ev) if ev.type == "response" then error(nil) end end }
      local ok, err = pcall(c.pin, c, { message_id = "m" })
      assert.is_false(ok)
      assert.is_nil(err)
      ok, err = pcall(c.pin_many, c, list(2))
      assert.is_false(ok)
      assert.is_nil(err)
      c:close()
    end)
  end)

  describe("may run the collector", function()
    it("in every hook of pin and pin_many, with the client referenced only by the call", function()
      local events = 0
      local hook = function()
        events = events + 1
        collectgarbage()
        collectgarbage()
      end
      -- No local holds these clients: only the calls' own stacks do.
      local res = util.client(srv, { on_event = hook }):pin { message_id = "m" }
      assert.equal(204, res.status)
      local many = util.client(srv, { on_event = hook }):pin_many(list(6), { concurrency = 3 })
      for i = 1, 6 do
        assert.is_true(many[i].ok)
        assert.equal("phone-item" .. i, many[i].headers["x-periskope-phone-id"])
      end
      assert.truthy(events >= 14, events)
      collectgarbage()
      collectgarbage()
    end)
  end)
end)
