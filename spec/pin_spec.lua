-- Client:pin and periskope.pin: the arguments, the request on the wire,
-- and the result table, against the local Periskope server.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local raises = util.raises
local unpack = table.unpack or unpack

describe("Client:pin", function()
  local srv, c

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if c then c:close() end
    if srv then srv:stop() end
  end)

  before_each(function()
    srv:reset()
    c = util.client(srv)
  end)

  describe("arguments", function()
    -- Each bad call raises naming the field, and the server gets nothing.
    local bad_calls = {
      { {}, "field 'message_id' is required" },
      { { message_id = 42 }, "field 'message_id' must be a string", "got 42" },
      { { message_id = "" }, "field 'message_id'", "1 to 1024 bytes" },
      { { message_id = ("x"):rep(1025) }, "field 'message_id'", "1 to 1024 bytes" },
      { { message_id = "a\r\nX-Evil: 1" }, "field 'message_id'", "control bytes" },
      { { message_id = "a\0b" }, "field 'message_id'", "control bytes" },
      { { message_id = "." }, "field 'message_id'", "'.' or '..'" },
      { { message_id = ".." }, "field 'message_id'", "'.' or '..'" },
      { { message_id = "m", pin = "yes" }, "field 'pin' must be a boolean", "got string" },
      { { message_id = "m", pin = 1 }, "field 'pin' must be a boolean", "got 1" },
      { { message_id = "m", time = 5 }, "field 'time' must be 1, 7 or 30", "got 5" },
      { { message_id = "m", time = 7.5 }, "field 'time' must be 1, 7 or 30", "got 7.5" },
      { { message_id = "m", time = "7" }, "field 'time' must be 1, 7 or 30", "got string" },
      { { message_id = "m", time = 0 }, "field 'time'", "got 0" },
      { { message_id = "m", phone = "12" }, "field 'phone'", "7 to 15 digits" },
      { { message_id = "m", phone = 919874532456 }, "field 'phone' must be a string" },
      { { message_id = "m", pinned = true }, "unknown field 'pinned'" },
      { { message_id = "m", [1] = "x" }, "field names must be strings" },
    }
    for i, case in ipairs(bad_calls) do
      it(("raises before sending (case %d: %s)"):format(i, case[2]), function()
        local err = raises(function() c:pin(case[1]) end, select(2, unpack(case)))
        assert.truthy(err:find("bad argument #1 to 'pin'", 1, true), err)
        assert.equal(0, #srv:requests())
      end)
    end

    it("raises when the argument is not a table", function()
      raises(function() c:pin("m") end, "table expected")
      raises(function() periskope.pin("m") end, "table expected")
      assert.equal(0, #srv:requests())
    end)

    it("accepts 1024 bytes and an integral float time", function()
      local res = assert(c:pin { message_id = ("x"):rep(1024), time = 7.0 })
      assert.equal(204, res.status)
    end)
  end)

  describe("the request on the wire", function()
    it("is a POST to base_url/message/<id>/pin with the headers and body", function()
      local id = "true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95"
      local res = assert(c:pin { message_id = id, time = 7 })
      assert.equal(204, res.status)
      local r = srv:requests()
      assert.equal(1, #r)
      r = r[1]
      assert.equal("POST", r.method)
      assert.equal("/v1/message/true_919487126251%40c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95/pin", r.uri)
      assert.equal("POST " .. r.uri .. " HTTP/1.1", r.request_line)   -- origin-form, not the whole URL
      assert.equal("Bearer " .. srv.api_key, r.headers.authorization)
      assert.equal(util.PHONE, r.headers["x-phone"])
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("application/json", r.headers.accept)
      assert.equal(1, r.headers["user-agent"]:find("periskope-lua/" .. periskope.VERSION, 1, true))
      assert.equal('{"pin":true,"time":7}', r.body)
      assert.is_nil(r.headers.expect)
    end)

    it("percent-encodes every byte outside A-Z a-z 0-9 - . _ ~", function()
      local id = "a@b/c d?e#f%g+h&i=j~k.l_m-n\128\255é"
      assert(c:pin { message_id = id })
      local want = "a%40b%2Fc%20d%3Fe%23f%25g%2Bh%26i%3Dj~k.l_m-n%80%FF%C3%A9"
      assert.equal("/v1/message/" .. want .. "/pin", srv:requests()[1].uri)
    end)

    it("sends each body the contract names", function()
      assert(c:pin { message_id = "m" })
      assert(c:pin { message_id = "m", pin = true, time = 1 })
      assert(c:pin { message_id = "m", pin = true, time = 30 })
      assert(c:pin { message_id = "m", pin = false })
      assert(c:pin { message_id = "m", pin = false, time = 7 })
      local bodies = {}
      for _, r in ipairs(srv:requests()) do bodies[#bodies + 1] = r.body end
      assert.same({ '{"pin":true}', '{"pin":true,"time":1}', '{"pin":true,"time":30}',
        '{"pin":false}', '{"pin":false}' }, bodies)
    end)

    it("lets a call override the phone", function()
      assert(c:pin { message_id = "m", phone = "+1 (555) 123-4567" })
      assert(c:pin { message_id = "m", phone = "phone-abc123" })
      assert(c:pin { message_id = "m" })
      local r = srv:requests()
      assert.equal("15551234567", r[1].headers["x-phone"])
      assert.equal("phone-abc123", r[2].headers["x-phone"])
      assert.equal(util.PHONE, r[3].headers["x-phone"])
    end)

    it("reuses one connection for many pins", function()
      for i = 1, 5 do assert(c:pin { message_id = "m" .. i }) end
      local r = srv:requests()
      assert.equal(5, #r)
      for i = 2, 5 do assert.equal(r[1].connection, r[i].connection) end
    end)
  end)

  describe("build_pin", function()
    it("returns exactly the request pin sends", function()
      local args = { message_id = "x@y z", time = 30, phone = "phone-abc" }
      local req = c:build_pin(args)
      assert.equal("POST", req.method)
      assert(c:pin(args))
      local got = srv:requests()[1]
      assert.equal(srv.url .. got.uri, req.url)
      assert.equal(got.body, req.body)
      local n = 0
      for name, value in pairs(req.headers) do
        n = n + 1
        assert.equal(value, got.headers[name:lower()], name)
      end
      assert.equal(5, n)
    end)

    it("validates like pin and sends nothing", function()
      raises(function() c:build_pin { message_id = "m", time = 2 } end, "field 'time'")
      c:build_pin { message_id = "m" }
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("the result", function()
    it("has ok, status, headers, body, rate_limit, trace_id and attempts", function()
      local res = assert(c:pin { message_id = "m" })
      assert.is_true(res.ok)
      assert.equal(204, res.status)
      assert.equal("", res.body)
      assert.equal(1, res.attempts)
      assert.is_nil(res.error)
      assert.equal("string", type(res.trace_id))
      assert.equal(res.headers["x-periskope-trace-id"], res.trace_id)
      local rl = res.rate_limit
      assert.equal(1000, rl.limit)
      assert.equal(999, rl.remaining)
      assert.truthy(rl.reset > os.time() - 5)
      if math.type then
        assert.equal("integer", math.type(rl.limit))
        assert.equal("integer", math.type(rl.remaining))
        assert.equal("integer", math.type(rl.reset))
        assert.equal("integer", math.type(res.status))
      end
    end)

    it("looks headers up in any case; keys are lower-case", function()
      local res = assert(c:pin { message_id = "m" })
      local h = res.headers
      assert.equal("Express", h["x-powered-by"])
      assert.equal("Express", h["X-Powered-By"])
      assert.equal("Express", h["X-POWERED-BY"])
      assert.equal(h["x-ratelimit-limit"], h["X-RateLimit-Limit"])
      for k in pairs(h) do assert.equal(k:lower(), k) end
    end)

    it("joins repeated headers with a comma", function()
      srv:script { { status = 204, headers = { ["X-Multi"] = { "a", "b" } } } }
      local res = assert(c:pin { message_id = "m" })
      assert.equal("a, b", res.headers["x-multi"])
    end)

    it("has the headers of each answer, as the lines of the heads change", function()
      -- One client, one answer after another: lines that come back byte for
      -- byte, a value that changes, a name that becomes a repeat of the one
      -- before it and back, a line that comes back as a repeat of a name
      -- before it and then not, a name in another case, lines that shift,
      -- a long line, a fold.
      local long = ("y"):rep(300)
      local heads = {
        { "A: 1", "B: 2", "X-RateLimit-Remaining: 5" },
        { "A: 1", "B: 2", "X-RateLimit-Remaining: 5" },
        { "A: 1", "B: 3", "X-RateLimit-Remaining: 4" },
        { "A: 1", "A: 9", "X-RateLimit-Remaining: 4" },
        { "A: 1", "B: 3", "X-RateLimit-Remaining: 4" },
        { "a: 1", "b: 3", "x-ratelimit-remaining: 3" },
        { "Z: 0", "A: 1", "B: 3", "X-RateLimit-Remaining: 3" },
        { "A: 1", "L: " .. long, "B: 3" },
        { "A: 1", "L: " .. long, "B: 3" },
        { "A: 1", "L: " .. long .. "z", "B: 3", "B: 4" },
        { "A: 1", "B: 3", "B: 4" },
        { "A: 1", "B: 3", " 4", "C:  padded  " },
        { "A: 1", "B: 3" },
        { "B: 0", "B: 3" },
        { "A: 1", "B: 3" },
        { "A: 1" },
      }
      local want = {
        { a = "1", b = "2", ["x-ratelimit-remaining"] = "5" },
        { a = "1", b = "2", ["x-ratelimit-remaining"] = "5" },
        { a = "1", b = "3", ["x-ratelimit-remaining"] = "4" },
        { a = "1, 9", ["x-ratelimit-remaining"] = "4" },
        { a = "1", b = "3", ["x-ratelimit-remaining"] = "4" },
        { a = "1", b = "3", ["x-ratelimit-remaining"] = "3" },
        { z = "0", a = "1", b = "3", ["x-ratelimit-remaining"] = "3" },
        { a = "1", l = long, b = "3" },
        { a = "1", l = long, b = "3" },
        { a = "1", l = long .. "z", b = "3, 4" },
        { a = "1", b = "3, 4" },
        { a = "1", b = "3 4", c = "padded" },
        { a = "1", b = "3" },
        { b = "0, 3" },
        { a = "1", b = "3" },
        { a = "1" },
      }
      local script = {}
      for i, lines in ipairs(heads) do
        script[i] = { action = "raw", raw = "HTTP/1.1 204 No Content\r\n"
          .. table.concat(lines, "\r\n") .. "\r\nConnection: close\r\n\r\n" }
        want[i].connection = "close"
      end
      srv:script(script)
      for i = 1, #heads do
        local res = assert(c:pin { message_id = "m" .. i })
        assert.same(want[i], setmetatable(res.headers, nil), "answer " .. i)
        local remaining = want[i]["x-ratelimit-remaining"]
        assert.same(remaining and { remaining = tonumber(remaining) }, res.rate_limit, "answer " .. i)
      end
    end)

    it("omits rate_limit when the X-RateLimit headers are absent", function()
      srv:script { { status = 204, rate_headers = false } }
      local res = assert(c:pin { message_id = "m" })
      assert.is_nil(res.rate_limit)
    end)

    it("is not ok for 4xx, with the JSON message as error", function()
      srv:script {
        { status = 400, body = '{"message":"Invalid message id"}',
          headers = { ["Content-Type"] = "application/json" } },
        { status = 404, body = '{"error":"No such message"}' },
        { status = 404, body = "<html>not json</html>" },
        { status = 403 },
      }
      local a = assert(c:pin { message_id = "m" })
      assert.is_false(a.ok)
      assert.equal(400, a.status)
      assert.equal("Invalid message id", a.error)
      assert.equal('{"message":"Invalid message id"}', a.body)
      assert.equal("No such message", assert(c:pin { message_id = "m" }).error)
      assert.equal("HTTP 404", assert(c:pin { message_id = "m" }).error)
      assert.equal("HTTP 403", assert(c:pin { message_id = "m" }).error)
    end)

    it("is a 401 from the server for a wrong key", function()
      local other = util.client(srv, { api_key = "wrong-key" })
      local res = assert(other:pin { message_id = "m" })
      assert.equal(401, res.status)
      assert.equal("Unauthorized", res.error)
      assert.equal(1, res.attempts)
      other:close()
    end)

    it("does not follow redirects", function()
      srv:script { { status = 302, headers = { Location = srv.base_url .. "/message/elsewhere/pin" } } }
      local res = assert(c:pin { message_id = "m" })
      assert.equal(302, res.status)
      assert.is_false(res.ok)
      assert.equal("HTTP 302", res.error)
      assert.equal(1, #srv:requests())
    end)
  end)

  describe("periskope.pin", function()
    after_each(function() periskope.configure {} end)

    it("uses the default client set by configure", function()
      periskope.configure { api_key = srv.api_key, base_url = srv.base_url, phone = "phone-x1" }
      local res = assert(periskope.pin { message_id = "dflt" })
      assert.equal(204, res.status)
      local r = srv:requests()[1]
      assert.equal("/v1/message/dflt/pin", r.uri)
      assert.equal("phone-x1", r.headers["x-phone"])
    end)

    it("rebuilds the default client after configure", function()
      periskope.configure { api_key = srv.api_key, base_url = srv.base_url, phone = "1234567" }
      assert(periskope.pin { message_id = "a" })
      periskope.configure { api_key = srv.api_key, base_url = srv.base_url, phone = "7654321" }
      assert(periskope.pin { message_id = "b" })
      local r = srv:requests()
      assert.equal("1234567", r[1].headers["x-phone"])
      assert.equal("7654321", r[2].headers["x-phone"])
    end)

    it("raises naming the field, before sending", function()
      periskope.configure { api_key = srv.api_key, base_url = srv.base_url }
      raises(function() periskope.pin { message_id = "m", time = 3 } end,
        "bad argument #1 to 'pin'", "field 'time'")
      assert.equal(0, #srv:requests())
    end)
  end)
end)
