-- periskope.new and periskope.configure: every option, its default, its
-- environment fallback and the error that names it.
local periskope = require "periskope"
local util = require "spec.support.util"

local raises = util.raises
local KEY = "test-key"

-- periskope.new with a key (unless given) and options merged in.
local function new(opts)
  local o = { api_key = KEY }
  for k, v in pairs(opts) do o[k] = v end
  return periskope.new(o)
end

describe("periskope.new", function()
  it("returns a client with pin, pin_many-free methods and close", function()
    local c = new {}
    assert.equal("userdata", type(c))
    assert.equal("function", type(c.pin))
    assert.equal("function", type(c.build_pin))
    assert.equal("function", type(c.close))
    c:close()
  end)

  -- In child processes whose environment is set here, whatever this one
  -- inherited (it cannot unset a variable it inherited).
  local ENV_PIN = [[
    local p = require "periskope"
    local ok, c = pcall(p.new)
    if not ok then print("raised", c) return end
    local req = c:build_pin { message_id = "m" }
    print(req.headers.Authorization, req.headers["x-phone"], req.url)
  ]]

  it("accepts no table when the environment has the key, and takes it from there", function()
    local out, code = util.run_lua(ENV_PIN, "env -u PERISKOPE_PHONE -u PERISKOPE_BASE_URL"
      .. " PERISKOPE_API_KEY=env-key")
    assert.equal(0, code, out)
    assert.equal("Bearer env-key\tnil\thttps://api.periskope.app/v1/message/m/pin\n", out)
  end)

  it("takes the phone and base_url from the environment too; an option given wins", function()
    local env = "env PERISKOPE_API_KEY=env-key PERISKOPE_PHONE='+91 98745 32456'"
      .. " PERISKOPE_BASE_URL=http://127.0.0.1:9/v1"
    local out, code = util.run_lua(ENV_PIN, env)
    assert.equal(0, code, out)
    assert.equal("Bearer env-key\t919874532456\thttp://127.0.0.1:9/v1/message/m/pin\n", out)
    out, code = util.run_lua([[
      local c = require("periskope").new { api_key = "given", phone = "1234567",
        base_url = "http://127.0.0.1:8/v2" }
      local req = c:build_pin { message_id = "m" }
      print(req.headers.Authorization, req.headers["x-phone"], req.url)
    ]], env)
    assert.equal(0, code, out)
    assert.equal("Bearer given\t1234567\thttp://127.0.0.1:8/v2/message/m/pin\n", out)
  end)

  it("without the key in the environment (or with it empty), names the missing option", function()
    for _, env in ipairs { "env -u PERISKOPE_API_KEY", "env PERISKOPE_API_KEY=" } do
      local out, code = util.run_lua(ENV_PIN, env)
      assert.equal(0, code, out)
      assert.equal(1, out:find("raised\t", 1, true), out)
      assert.truthy(out:find("option 'api_key' is required", 1, true), out)
      assert.truthy(out:find("PERISKOPE_API_KEY", 1, true), out)
    end
  end)

  it("rejects a non-table argument", function()
    raises(function() periskope.new("key") end, "table expected")
  end)

  it("rejects unknown options by name", function()
    raises(function() new { timeut = 3 } end, "unknown option 'timeut'")
  end)

  it("rejects option names that are not strings", function()
    raises(function() periskope.new { KEY } end, "option names must be strings")
  end)

  describe("api_key", function()
    it("is required", function()
      raises(function() periskope.new { phone = "919874532456" } end,
        "option 'api_key' is required")
    end)
    it("must be a string, and a number given as one is not echoed", function()
      local err = raises(function() periskope.new { api_key = 42 } end,
        "option 'api_key' must be a string, got number")
      assert.is_nil(err:find("42", 1, true))
    end)
    it("refuses control bytes without echoing the key", function()
      for _, bad in ipairs { "secret\r\nX-Evil: 1", "sec\0ret", "secret\n", "\127x" } do
        local err = raises(function() periskope.new { api_key = bad } end,
          "option 'api_key'", "control bytes")
        assert.falsy(err:find("secret", 1, true))
      end
    end)
    it("refuses the empty string", function()
      raises(function() periskope.new { api_key = "" } end, "option 'api_key'")
    end)
    it("is sent as a bearer token", function()
      local c = new { phone = "919874532456" }
      assert.equal("Bearer " .. KEY, c:build_pin { message_id = "m" }.headers.Authorization)
    end)
  end)

  describe("phone", function()
    it("strips spaces, +, -, (, ) and .", function()
      local cases = {
        ["+91 98745 32456"] = "919874532456",
        ["+1 (555) 123-4567"] = "15551234567",
        ["91.9874.532456"] = "919874532456",
        ["1234567"] = "1234567",
        ["123456789012345"] = "123456789012345",
        ["phone-bqzvyibhmwkaergr"] = "phone-bqzvyibhmwkaergr",
      }
      for given, sent in pairs(cases) do
        local c = new { phone = given }
        assert.equal(sent, c:build_pin { message_id = "m" }.headers["x-phone"])
      end
    end)
    it("refuses what is not 7 to 15 digits or a phone id", function()
      for _, bad in ipairs { "123456", "1234567890123456", "91987abc456", "",
        "phone-", "phone-a_b", "phone-ab cd", "+91\n9874532456" } do
        raises(function() new { phone = bad } end, "option 'phone'", "7 to 15 digits")
      end
    end)
    it("must be a string", function()
      raises(function() new { phone = 919874532456 } end,
        "option 'phone' must be a string", "got 919874532456")
    end)
    it("is optional: no x-phone header without one", function()
      local c = new {}
      assert.is_nil(c:build_pin { message_id = "m" }.headers["x-phone"])
    end)
  end)

  describe("base_url", function()
    it("defaults to the Periskope API", function()
      local c = new {}
      assert.equal("https://api.periskope.app/v1/message/m/pin",
        c:build_pin { message_id = "m" }.url)
    end)
    it("drops a trailing slash", function()
      local c = new { base_url = "http://127.0.0.1:8080/v1/" }
      assert.equal("http://127.0.0.1:8080/v1/message/m/pin", c:build_pin { message_id = "m" }.url)
    end)
    it("allows plain http only to loopback hosts", function()
      for _, ok in ipairs { "http://127.0.0.1:1", "http://127.8.9.10/v1", "http://localhost:80",
        "http://LOCALHOST", "http://[::1]:8080/v1", "https://example.com", "https://10.0.0.1:8443/api" } do
        assert.truthy(new { base_url = ok })
      end
      for _, bad in ipairs { "http://example.com/v1", "http://10.0.0.1", "http://127.0.0.1.evil.example",
        "http://localhost.evil.example", "http://128.0.0.1" } do
        raises(function() new { base_url = bad } end, "option 'base_url'", "loopback")
      end
    end)
    it("refuses other schemes, user info, queries and fragments", function()
      for _, bad in ipairs { "ftp://127.0.0.1", "file:///etc/passwd", "127.0.0.1:80",
        "https://user:pass@example.com", "https://example.com/v1?x=1",
        "https://example.com/v1#f", "https://", "https://example.com:0",
        "https://example.com:65536", "https://exa mple.com", "https://example.com/v1\r\n" } do
        raises(function() new { base_url = bad } end, "option 'base_url'")
      end
    end)
  end)

  describe("numbers", function()
    it("accept their ranges", function()
      assert.truthy(new { timeout = 0.5, connect_timeout = 0.25, retries = 0,
        max_retry_wait = 0, max_body = 0 })
      assert.truthy(new { timeout = 86400, connect_timeout = 86400, retries = 10,
        max_retry_wait = 86400, max_body = 1073741824 })
    end)
    local cases = {
      { "timeout", 0, "got 0" }, { "timeout", -1, "got -1" }, { "timeout", "30", "got string" },
      { "timeout", 1e9, "got 1000000000" },
      { "connect_timeout", 0, "got 0" }, { "connect_timeout", true, "got boolean" },
      { "retries", -1, "got -1" }, { "retries", 11, "got 11" }, { "retries", 1.5, "got 1.5" },
      { "max_retry_wait", -0.1, "got -0.1" }, { "max_retry_wait", {}, "got table" },
      { "max_body", -1, "got -1" }, { "max_body", 2.5, "got 2.5" },
      { "max_body", 2 ^ 31, "got 2147483648" },
    }
    for _, case in ipairs(cases) do
      local name, value, shown = case[1], case[2], case[3]
      it(("refuses %s = %s"):format(name, tostring(value)), function()
        raises(function() new { [name] = value } end, "option '" .. name .. "'", shown)
      end)
    end
    it("refuses NaN", function()
      raises(function() new { timeout = 0 / 0 } end, "option 'timeout'")
    end)
  end)

  describe("user_agent", function()
    it("defaults to periskope-lua/VERSION with libcurl's and Lua's versions", function()
      local ua = new {}:build_pin { message_id = "m" }.headers["User-Agent"]
      assert.equal(1, ua:find("periskope-lua/" .. periskope.VERSION .. " libcurl/", 1, true))
      assert.truthy(ua:find("Lua", #"periskope-lua/", true))
    end)
    it("can be set, and refuses control bytes", function()
      assert.equal("mine/1", new { user_agent = "mine/1" }:build_pin { message_id = "m" }.headers["User-Agent"])
      raises(function() new { user_agent = "a\r\nb: c" } end, "option 'user_agent'", "control bytes")
      raises(function() new { user_agent = "" } end, "option 'user_agent'")
    end)
  end)

  describe("ca_file", function()
    it("must name a readable file", function()
      raises(function() new { ca_file = "/nonexistent/ca.pem" } end, "option 'ca_file'", "readable")
      raises(function() new { ca_file = 1 } end, "option 'ca_file' must be a string")
    end)
    it("accepts a readable file", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write("not really a certificate\n")
      f:close()
      assert.truthy(new { ca_file = path })
      os.remove(path)
    end)
  end)

  describe("on_event", function()
    it("must be a function", function()
      raises(function() new { on_event = "print" } end, "option 'on_event' must be a function")
      assert.truthy(new { on_event = function() end })
    end)
  end)
end)

describe("periskope.configure", function()
  after_each(function()
    periskope.configure {}
  end)

  it("checks every option like new, and raises naming it", function()
    raises(function() periskope.configure { timeout = -1 } end, "option 'timeout'")
    raises(function() periskope.configure { nope = 1 } end, "unknown option 'nope'")
    raises(function() periskope.configure "x" end, "table expected")
  end)

  it("does not need the key yet: the default client asks at its first call", function()
    -- In a child process without PERISKOPE_API_KEY, which would otherwise
    -- supply the key (this process cannot unset a variable it inherited).
    local out, code = util.run_lua([[
      local p = require "periskope"
      p.configure { base_url = "http://127.0.0.1:9/v1" }
      print("configured")
      local ok, err = pcall(p.pin, { message_id = "m" })
      print(ok, err)
    ]], "env -u PERISKOPE_API_KEY")
    assert.equal(0, code, out)
    assert.equal("configured\nfalse\tperiskope: option 'api_key' is required: pass it, "
      .. "or set PERISKOPE_API_KEY\n", out)
  end)

  it("opens nothing and returns nothing", function()
    assert.same({}, { periskope.configure { api_key = KEY, base_url = "http://127.0.0.1:9/v1" } })
  end)

  it("takes a copy: later changes to the table do not leak in", function()
    local opts = { api_key = KEY, base_url = "http://127.0.0.1:9/v1", retries = 0, connect_timeout = 1 }
    periskope.configure(opts)
    opts.base_url = "not a url"
    local res, err, kind = periskope.pin { message_id = "m" }
    assert.is_nil(res)
    assert.equal("connect", kind)
    assert.truthy(err:find("127.0.0.1:9", 1, true))
  end)
end)
