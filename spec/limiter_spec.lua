-- Shared pacing stores: periskope.limiter.shared_dict and .redis, the
-- `limiter` option, and what happens when a store fails (a pin never does).
-- A real redis-server (spec/support/redis.lua) and the local Periskope
-- server in its rate-limited mode; the nginx dictionary itself is in
-- contention_spec and openresty_spec, and a plain-Lua dictionary with the
-- same four operations stands in for it here.
local periskope = require "periskope"
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local util = require "spec.support.util"

local sh, sq = server.sh, server.quote

local sha256_hex = util.sha256_hex

local now = server.now

local fake_dict = util.fake_dict

local recorder = util.recorder

local of_type = util.of_type

describe("periskope.limiter", function()
  describe("constructors and the limiter option", function()
    it("has the two stores", function()
      assert.is_function(periskope.limiter.shared_dict)
      assert.is_function(periskope.limiter.redis)
    end)

    it("redis{} checks each option, naming it and what it accepts #redis", function()
      local R = periskope.limiter.redis
      util.raises(function() R { port = 0 } end, "option 'port' must be an integer from 1 to 65535")
      util.raises(function() R { port = 6379.5 } end, "option 'port'")
      util.raises(function() R { host = 5 } end, "option 'host' must be a host name or address")
      util.raises(function() R { host = "a\nb" } end, "option 'host'")
      util.raises(function() R { timeout = 0 } end, "option 'timeout' must be a number of seconds > 0")
      util.raises(function() R { timeout = "1" } end, "option 'timeout'")
      util.raises(function() R { db = -1 } end, "option 'db' must be an integer >= 0")
      util.raises(function() R { prefix = ("x"):rep(65) } end, "option 'prefix' must be a string of 1 to 64 bytes")
      util.raises(function() R { password = "" } end, "option 'password'")
      util.raises(function() R { hots = "x" } end, "unknown option 'hots'")
      util.raises(function() R "127.0.0.1" end, "table expected")
      assert.is_userdata(R())
      assert.is_userdata(R { host = "localhost", port = 1, db = 3, prefix = "a:", timeout = 0.1 })
    end)

    -- make says how the module was built (PERISKOPE_HIREDIS); .ci/run
    -- tests both builds, the one without hiredis with --exclude-tags=redis.
    it("redis is there when built with hiredis; without, it raises naming what is missing", function()
      if os.getenv("PERISKOPE_HIREDIS") == "no" then
        local why = "periskope.limiter.redis: this build of periskope has no Redis support: "
          .. "it was built without hiredis"
        util.raises(function() periskope.limiter.redis() end, why, "install libhiredis-dev and rebuild")
        util.raises(function() periskope.limiter.redis { port = 1 } end, why)
      else
        assert.is_userdata(periskope.limiter.redis { port = 1 })
      end
    end)

    it("shared_dict needs a dictionary", function()
      util.raises(function() periskope.limiter.shared_dict() end,
        "must be an nginx shared dictionary (ngx.shared.NAME), got no value")
      util.raises(function() periskope.limiter.shared_dict {} end, "it has no 'get' method")
      assert.is_userdata(periskope.limiter.shared_dict(fake_dict()))
    end)

    it("the limiter option takes a limiter only, in new and configure", function()
      util.raises(function() periskope.new { api_key = "k", limiter = {} } end,
        "option 'limiter' must be a limiter from periskope.limiter.shared_dict or periskope.limiter.redis, got table")
      util.raises(function() periskope.configure { limiter = "redis" } end, "option 'limiter'")
      local c = periskope.new { api_key = "k", limiter = periskope.limiter.shared_dict(fake_dict()) }
      c:close()
      periskope.configure { api_key = "k", limiter = periskope.limiter.shared_dict(fake_dict()) }
      periskope.configure {}
    end)

    it("never echoes a number given as a password or an API key #redis", function()
      local err = util.raises(function() periskope.limiter.redis { password = 987654 } end,
        "option 'password' must be a non-empty string without control bytes, got number")
      assert.is_nil(err:find("987654", 1, true))
      err = util.raises(function() periskope.new { api_key = 876543 } end,
        "option 'api_key' must be a string, got number")
      assert.is_nil(err:find("876543", 1, true))
    end)

    it("shows where it keeps the budget, never the password #redis", function()
      local text = tostring(periskope.limiter.redis { port = 7000, password = "sekrit-pw" })
      assert.equal("periskope.limiter (redis 127.0.0.1:7000)", text)
      assert.equal("periskope.limiter (shared_dict)", tostring(periskope.limiter.shared_dict(fake_dict())))
    end)
  end)

  describe("shared_dict", function()
    local srv
    -- The window outlasts three pins even when valgrind slows the client.
    setup(function() srv = server.start { rate_limit = 3, window = 2 * util.TIME_SCALE } end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    it("two clients on one dictionary share one budget: the second waits, no 429", function()
      local dict = fake_dict()
      local a = util.client(srv, { limiter = periskope.limiter.shared_dict(dict) })
      local events, hook = recorder()
      local b = util.client(srv, { limiter = periskope.limiter.shared_dict(dict), on_event = hook })
      for i = 1, 3 do assert.equal(204, a:pin { message_id = "a" .. i }.status) end
      local t0 = now()
      local res = b:pin { message_id = "b1" }
      assert.equal(204, res.status)
      assert.is_true(now() - t0 > 0.4, "b did not wait for the reset")
      assert.is_nil(srv:stats().statuses[429])
      local waits = of_type(events, "wait")
      assert.equal(1, #waits)
      assert.equal("rate-limit", waits[1].reason)
      -- The budget is stored under the key's hash, as text.
      local name = "periskope:" .. sha256_hex(srv.api_key)
      assert.matches("^p3 ", dict.data[name])
      assert.is_nil(dict.data[name .. ":lock"])
      a:close()
      b:close()
    end)

    for _, case in ipairs {
      { "set", "shared_dict set: no memory" },
      { "add", "dictionary broke" },
      { "locked", "its lock stayed held" },
    } do
      it("a dictionary that fails (" .. case[1] .. ") costs a limiter event, never the pin", function()
        local events, hook = recorder()
        local c = util.client(srv, {
          limiter = periskope.limiter.shared_dict(fake_dict(case[1])), on_event = hook,
        })
        local res = c:pin { message_id = "m" }
        assert.equal(204, res.status)
        local ev = of_type(events, "limiter")
        assert.is_true(#ev >= 1)
        assert.is_string(ev[1].error)
        assert.truthy(ev[1].error:find(case[2], 1, true), ev[1].error)
        c:close()
      end)
    end
  end)

  describe("redis #redis", function()
    local srv, rd
    setup(function()
      srv = server.start { rate_limit = 3, window = 2 * util.TIME_SCALE }
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

    local function limiter(opts)
      local o = { port = rd.port, timeout = 0.3 }
      for k, v in pairs(opts or {}) do o[k] = v end
      return periskope.limiter.redis(o)
    end

    it("two clients (two connections) share one budget: the second waits, no 429", function()
      local a = util.client(srv, { limiter = limiter() })
      local events, hook = recorder()
      local b = util.client(srv, { limiter = limiter(), on_event = hook })
      for i = 1, 3 do assert.equal(204, a:pin { message_id = "a" .. i }.status) end
      local t0 = now()
      assert.equal(204, b:pin { message_id = "b1" }.status)
      assert.is_true(now() - t0 > 0.4, "b did not wait for the reset")
      assert.is_nil(srv:stats().statuses[429])
      assert.equal(0, #of_type(events, "limiter"))
      assert.equal(1, #of_type(events, "wait"))
      a:close()
      b:close()
    end)

    it("keeps the budget under the SHA-256 of the key, never the key", function()
      local c = util.client(srv, { limiter = limiter() })
      assert.equal(204, c:pin { message_id = "m" }.status)
      local name = "periskope:" .. sha256_hex(srv.api_key)
      assert.equal(name .. "\n", rd:cli("KEYS", "*"))
      local value = rd:cli("GET", name)
      assert.matches("^p3 ", value)
      assert.is_nil(value:find(srv.api_key, 1, true))
      -- Kept an hour after its last use.
      local ttl = tonumber(rd:cli("TTL", name))
      assert.is_true(ttl > 3500 and ttl <= 3600, tostring(ttl))
      c:close()
    end)

    it("leaves alone a value under its name that is not a budget, with a limiter event", function()
      local name = "periskope:" .. sha256_hex(srv.api_key)
      -- Longer than any budget can be (with a full queue: 4.5 KB).
      rd:cli("SET", name, ("x"):rep(5000))
      local events, hook = recorder()
      local c = util.client(srv, { limiter = limiter(), on_event = hook })
      assert.equal(204, c:pin { message_id = "m" }.status)
      local ev = of_type(events, "limiter")
      assert.equal(1, #ev)
      assert.truthy(ev[1].error:find("holds something else", 1, true), ev[1].error)
      assert.equal(("x"):rep(5000) .. "\n", rd:cli("GET", name))
      c:close()
    end)

    it("uses its prefix and database", function()
      local c = util.client(srv, { limiter = limiter { prefix = "app1:", db = 2 } })
      assert.equal(204, c:pin { message_id = "m" }.status)
      assert.matches("^%s*$", rd:cli("KEYS", "*"))
      assert.equal("app1:" .. sha256_hex(srv.api_key) .. "\n", rd:cli("-n", "2", "KEYS", "*"))
      c:close()
    end)

    it("a store that cannot be reached costs a limiter event, never the pin", function()
      local events, hook = recorder()
      local dead = redis.start()
      local port = dead.port
      dead:stop()   -- nothing listens there now
      local c = util.client(srv, {
        limiter = periskope.limiter.redis { port = port, timeout = 0.3 }, on_event = hook,
      })
      local res = c:pin { message_id = "m" }
      assert.equal(204, res.status)
      local ev = of_type(events, "limiter")
      assert.equal(1, #ev)
      assert.truthy(ev[1].error:find("periskope: redis 127.0.0.1:" .. port, 1, true), ev[1].error)
      -- Resting after the failure: the next pins do not try it again at once.
      assert.equal(204, c:pin { message_id = "m2" }.status)
      assert.equal(1, #of_type(events, "limiter"))
      c:close()
    end)

    it("a store that stops answering holds a pin no longer than its timeout; sharing resumes", function()
      local events, hook = recorder()
      local c = util.client(srv, { limiter = limiter { timeout = 0.2 }, on_event = hook })
      assert.equal(204, c:pin { message_id = "m1" }.status)   -- connected
      rd:pause()
      local ok, err = pcall(function()
        local t0 = now()
        assert.equal(204, c:pin { message_id = "m2" }.status)
        local took = now() - t0
        -- The store's timeout (0.2 s) and the pin itself, with room for a
        -- loaded machine; a store waited on without a timeout would hang.
        assert.is_true(took < util.within(2), ("the pin took %.2f s"):format(took))
        local ev = of_type(events, "limiter")
        assert.equal(1, #ev)
        assert.truthy(ev[1].error:find("redis 127.0.0.1:" .. rd.port, 1, true), ev[1].error)
      end)
      rd:resume()
      assert(ok, err)
      rd:cli("FLUSHALL")
      -- After its rest (a second) the client asks the store again: pins
      -- until one goes through Redis, which then holds the key's state.
      local n = 0
      util.wait_for("a pin through Redis again", 5, function()
        n = n + 1
        assert.equal(204, c:pin { message_id = "m3-" .. n }.status)
        return rd:cli("KEYS", "*"):match("^periskope:%x+\n$") ~= nil
      end)
      -- The pins of the rest went without asking it: no failure counted.
      assert.equal(1, #of_type(events, "limiter"))
      c:close()
    end)

    it("survives a restart of Redis mid-batch: every pin ok, no 429, sharing resumes", function()
      local events = {}
      local restarted = false
      local c
      c = util.client(srv, {
        limiter = limiter(),
        on_event = function(ev)
          events[#events + 1] = ev
          if ev.type == "response" and not restarted and #of_type(events, "response") == 4 then
            restarted = true
            rd:restart()   -- empty, and every connection to it cut
          end
        end,
      })
      local list = {}
      for i = 1, 10 do list[i] = { message_id = "r" .. i } end
      local results = c:pin_many(list, { concurrency = 2 })
      assert.is_true(restarted)
      for i = 1, 10 do assert.equal(204, results[i].status, "item " .. i) end
      assert.is_nil(srv:stats().statuses[429])
      assert.is_true(#of_type(events, "limiter") >= 1)
      -- The batch outlived the rest: its last pins went through Redis again.
      assert.matches("^periskope:%x+\n$", rd:cli("KEYS", "*"))
      c:close()
    end)

    it("authenticates with a password, and a wrong one is an event that never shows it", function()
      local secured = redis.start { password = "redis-pw-123" }
      local ok, err = pcall(function()
        local good = util.client(srv, {
          limiter = periskope.limiter.redis { port = secured.port, password = "redis-pw-123" },
        })
        assert.equal(204, good:pin { message_id = "m" }.status)
        assert.matches("^periskope:%x+\n$", secured:cli("KEYS", "*"))
        good:close()
        local events, hook = recorder()
        local bad = util.client(srv, {
          limiter = periskope.limiter.redis { port = secured.port, password = "wrong-pw-456" },
          on_event = hook,
        })
        assert.equal(204, bad:pin { message_id = "m2" }.status)
        local ev = of_type(events, "limiter")
        assert.equal(1, #ev)
        assert.truthy(ev[1].error:find("AUTH", 1, true), ev[1].error)
        for _, s in ipairs(util.strings(events)) do
          assert.is_nil(s:find("wrong-pw-456", 1, true))
          assert.is_nil(s:find(srv.api_key, 1, true))
        end
        bad:close()
      end)
      secured:stop()
      assert(ok, err)
    end)

    it("PERISKOPE_DEBUG shows a store failure as one redacted line", function()
      local script = ([[
        package.cpath = %q .. ";" .. package.cpath
        local periskope = require "periskope"
        local c = periskope.new { api_key = %q, phone = "919874532456", base_url = %q,
          limiter = periskope.limiter.redis { port = %d, password = "pw-in-debug", timeout = 0.2 } }
        local res = c:pin { message_id = "dbg" }
        io.stdout:write(res.status)
      ]]):format(os.getenv("PERISKOPE_CPATH") or "", srv.api_key, srv.base_url, rd.port)
      local dir = sh("mktemp -d"):match("[^\n]+")
      server.write_file(dir .. "/t.lua", script)
      local out = sh("PERISKOPE_DEBUG=1 " .. util.lua_bin() .. " " .. sq(dir .. "/t.lua") .. " 2>&1")
      sh("rm -rf " .. sq(dir))
      assert.matches("periskope: limiter error=periskope: redis 127%.0%.0%.1:%d+: AUTH", out)
      assert.matches("204$", out)
      assert.is_nil(out:find("pw-in-debug", 1, true))
      assert.is_nil(out:find(srv.api_key, 1, true))
    end)
  end)
end)
