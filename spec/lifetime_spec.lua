-- Client lifetime: close, use after close, garbage collection, <close>,
-- tostring, and the module table itself (make dist, named after its
-- VERSION: dist_spec).
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

describe("the module", function()
  it("has VERSION and the functions of the contract", function()
    assert.equal("string", type(periskope.VERSION))
    assert.truthy(periskope.VERSION:match("^%d+%.%d+%.%d+$"))
    for _, name in ipairs { "new", "configure", "pin", "read_response" } do
      assert.equal("function", type(periskope[name]), name)
    end
  end)

  it("sets no global", function()
    assert.is_nil(rawget(_G, "periskope"))
  end)
end)

describe("Client:close", function()
  local srv
  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)

  it("can be called twice", function()
    local c = util.client(srv)
    assert.is_true(c:close())
    assert.is_true(c:close())
  end)

  it("makes every later use raise", function()
    local c = util.client(srv)
    assert(c:pin { message_id = "m" })
    c:close()
    util.raises(function() c:pin { message_id = "m" } end, "closed client")
    util.raises(function() c:build_pin { message_id = "m" } end, "closed client")
    assert.equal("periskope.Client (closed)", tostring(c))
  end)

  it("raises on a value that is not a client", function()
    local c = util.client(srv)
    util.raises(function() c.pin({}, { message_id = "m" }) end, "periskope.Client expected")
    c:close()
  end)

  -- Open file descriptors of this process (Linux /proc; io.open, so the
  -- directory read is ours), counted by a child that lists them.
  local function open_fds()
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("*l"):match("^(%d+)")
    f:close()
    local out = server.sh("ls /proc/" .. pid .. "/fd | wc -l")
    return tonumber(out:match("%d+"))
  end

  it("lets the collector close clients, many times over", function()
    collectgarbage()
    collectgarbage()
    local before = open_fds()
    -- Held until all are open (the collector may run at any allocation);
    -- each holds a kept-alive connection.
    local clients = {}
    for i = 1, 200 do
      clients[i] = util.client(srv)
      assert(clients[i]:pin { message_id = "m" })
    end
    local open = open_fds()
    assert.truthy(open >= before + 200, ("%d open before, %d with the clients"):format(before, open))
    clients = nil   -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    -- __gc closed each collected client: its connection is gone.
    local after = open_fds()
    assert.truthy(after <= before + 5, ("%d open before, %d after"):format(before, after))
    local c = util.client(srv)
    assert(c:pin { message_id = "m" })
    c:close()
  end)

  it("runs __close, then tolerates __gc on the closed client", function()
    local c = util.client(srv)
    local mt = getmetatable(c)
    assert.equal("function", type(mt.__close))
    mt.__close(c)
    assert.equal("periskope.Client (closed)", tostring(c))
    mt.__gc(c)
    util.raises(function() c:pin { message_id = "m" } end, "closed client")
  end)

  if _VERSION == "Lua 5.4" then
    it("is a to-be-closed value in Lua 5.4", function()
      local chunk = assert(load([[
        local util, srv = ...
        local keep
        do
          local c <close> = util.client(srv)
          assert(c:pin { message_id = "m" })
          keep = c
        end
        return keep
      ]]))
      local c = chunk(util, srv)
      assert.equal("periskope.Client (closed)", tostring(c))
    end)
  end
end)

describe("tostring(client)", function()
  it("shows the base URL and phone, never the key", function()
    local c = periskope.new { api_key = "sk-tostring-secret", phone = "+91 98745 32456",
      base_url = "http://127.0.0.1:9/v1" }
    local s = tostring(c)
    assert.equal("periskope.Client (http://127.0.0.1:9/v1, phone 919874532456)", s)
    assert.falsy(s:find("secret", 1, true))
    c:close()
  end)
end)
