-- The API key never appears: a sentinel key goes through every error path,
-- and no message, tostring, result or event may hold it.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local SENTINEL = "sk-SENTINEL-7f3a9c"

local strings = util.strings

local function assert_clean(...)
  for _, s in ipairs(strings({ ... })) do
    assert.falsy(s:find("SENTINEL", 1, true), ("leaked in %q"):format(s))
  end
end

describe("the API key", function()
  local srv, events

  setup(function() srv = server.start { api_key = SENTINEL } end)
  teardown(function() if srv then srv:stop() end end)

  local function client(opts)
    events = {}
    local o = { api_key = SENTINEL, on_event = function(ev) events[#events + 1] = ev end }
    for k, v in pairs(opts or {}) do o[k] = v end
    return util.client(srv, o)
  end

  it("is sent, and is in no result or event of a good pin", function()
    local c = client()
    local res = assert(c:pin { message_id = "m" })
    assert.equal(204, res.status)
    assert.equal("Bearer " .. SENTINEL, srv:requests()[#srv:requests()].headers.authorization)
    assert_clean(res, events, tostring(c))
    local saw_request = false
    for _, ev in ipairs(events) do
      if ev.type == "request" then
        saw_request = true
        assert.equal("Bearer ***", ev.headers.Authorization)
      end
    end
    assert.is_true(saw_request)
    c:close()
  end)

  it("is in no failure message or event, for every kind", function()
    local cases = {
      { { timeout = 0.2, retries = 1 }, { { delay = 2 }, { delay = 2 } } },
      { { base_url = "http://127.0.0.1:1/v1", retries = 0 } },
      { { base_url = "https://" .. ("a"):rep(70) .. ".invalid", retries = 0 } },
      { { base_url = "https://127.0.0.1:" .. srv.port .. "/v1", retries = 0 } },
      { { retries = 0 }, { { action = "close" } } },
      { { max_body = 10 }, { { status = 200, body_size = 100 } } },
      { { retries = 1 }, { { status = 429, headers = { ["Retry-After"] = "0" } },
        { status = 401, body = '{"message":"bad key ' .. "x" .. '"}' } } },
    }
    for _, case in ipairs(cases) do
      srv:reset()
      if case[2] then srv:script(case[2]) end
      local c = client(case[1])
      local a, b, k = c:pin { message_id = "m" }
      assert_clean(a, b, k, events, tostring(c))
      assert.truthy(#events >= 2)
      c:close()
    end
  end)

  it("is in no error raised for a bad option or argument", function()
    local errs = {}
    local function catch(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      errs[#errs + 1] = e
    end
    catch(function() periskope.new { api_key = SENTINEL .. "\n" } end)
    catch(function() periskope.new { api_key = SENTINEL, timeout = "x" } end)
    catch(function() periskope.new { api_key = SENTINEL, base_url = "http://example.com" } end)
    catch(function() periskope.new { api_key = SENTINEL, unknown = 1 } end)
    local c = client()
    catch(function() c:pin { message_id = SENTINEL .. "\r\n" } end)
    catch(function() c:pin { message_id = "m", phone = SENTINEL } end)
    catch(function() periskope.configure { api_key = SENTINEL, retries = 99 } end)
    c:close()
    catch(function() c:pin { message_id = "m" } end)
    assert_clean(errs)
  end)

  it("is not shown by PERISKOPE_DEBUG lines", function()
    -- A child process, so its stderr can be read.
    local lua = util.lua_bin()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      package.cpath = %q .. ";" .. package.cpath
      local p = require "periskope"
      local c = p.new { api_key = %q, base_url = %q, phone = "1234567" }
      assert(c:pin { message_id = "m" })
    ]]):format(os.getenv("PERISKOPE_CPATH") or "", SENTINEL, srv.base_url))
    f:close()
    local out = os.tmpname()
    local ok = os.execute(("PERISKOPE_DEBUG=1 %s %s 2>%s"):format(lua, script, out))
    assert.truthy(ok == true or ok == 0)
    local text = assert(io.open(out)):read("*a")
    os.remove(script)
    os.remove(out)
    assert.truthy(text:find("periskope: request", 1, true), text)
    assert.truthy(text:find("periskope: response", 1, true), text)
    assert.falsy(text:find("SENTINEL", 1, true), text)
  end)
end)

-- The key never crosses a network in clear: plain http goes only to a
-- host libcurl reads as loopback. The rule reads base_url (and perform's
-- url) as libcurl does, since libcurl is what sends to it; a URL written
-- to look like one host while libcurl reads another is judged by what
-- libcurl reads.
describe("plain http", function()
  local srv

  setup(function() srv = server.start { api_key = SENTINEL } end)
  teardown(function() if srv then srv:stop() end end)

  -- perform's request to url, as a job's "send" holds it.
  local function request(url)
    return { method = "POST", url = url, body = '{"pin":true}',
      headers = { "Authorization: Bearer " .. SENTINEL, "Content-Type: application/json",
        "x-phone: " .. util.PHONE } }
  end

  local function refused(url)
    local err = util.raises(function() periskope.new { api_key = SENTINEL, base_url = url } end,
      "option 'base_url' must")
    assert_clean(err)
    err = util.raises(function() periskope.perform(request(url .. "/v1/message/m/pin")) end,
      "bad argument #1 to 'perform' (field 'url' must")
    assert_clean(err)
  end

  it("refuses a host that libcurl reads as another than the loopback one it looks like", function()
    for _, host in ipairs {
      "127.0.0.1@evil.example",      -- user info: libcurl's host is evil.example
      "evil.example@127.0.0.1",      -- user info (refused: no user info in a base URL)
      "127.0.0.1\\@evil.example",    -- libcurl: user "127.0.0.1\", host evil.example
      "localhost.evil.example",
      "127.0.0.1.evil.example",
      "0x7f000001.evil.example",
      "127.1.evil.example",
      -- Read as 127.0.0.9 by the parser that used to decide, but no
      -- address to libcurl (09 is no octal number): a name it resolves.
      "127.0.0.09",
      "127.0.0.08:" .. srv.port,
      "[::ffff:127.0.0.1]",
    } do
      refused("http://" .. host)
    end
    assert.equal(0, #srv:requests())
  end)

  it("takes a loopback address as libcurl reads it, and keeps it so written", function()
    for _, host in ipairs { "127.1", "0x7f000001", "2130706433", "127.000.000.001", "0177.0.0.1" } do
      local c = periskope.new { api_key = SENTINEL, base_url = ("http://%s:%d/v1"):format(host, srv.port),
        phone = util.PHONE, timeout = 5, connect_timeout = 2 }
      local want = srv.base_url .. "/message/m/pin"     -- http://127.0.0.1:<port>/v1/...
      assert.equal(want, c:build_pin { message_id = "m" }.url, host)
      assert.truthy(tostring(c):find(srv.base_url, 1, true), host)
      local res = assert(c:pin { message_id = "m" })
      assert.equal(204, res.status, host)
      assert.equal("127.0.0.1:" .. srv.port, srv:requests()[#srv:requests()].headers.host, host)
      -- A host's own sockets are told libcurl's host, not the one written.
      local job = c:pin_job({ message_id = "m" }, { io = "bytes" })
      local action, target = job:step()
      assert.equal("connect", action)
      assert.equal("127.0.0.1", target.host, host)
      job:close()
      c:close()
    end
    local status = periskope.perform(request(("http://127.1:%d/v1/message/m/pin"):format(srv.port)))
    assert.equal(204, status)
    refused("http://[0:0:0:0:0:0:0:2]")
    assert.truthy(periskope.new { api_key = SENTINEL, base_url = "http://[0:0:0:0:0:0:0:1]:1" })
  end)
end)
