-- Client lifetime: close, use after close, garbage collection, <close>,
-- tostring, and the module table itself.
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

  it("defines VERSION once, in src/psk_core.h; make dist names the tarball and rockspec after it", function()
    local h = assert(io.open("src/psk_core.h")):read("*a")
    assert.equal(periskope.VERSION, h:match('#define PSK_VERSION "([^"]+)"'))
    local rs = assert(io.open("rockspec/periskope-scm-1.rockspec")):read("*a")
    assert.truthy(rs:find('package = "periskope"', 1, true))
    assert.truthy(rs:find('version = "scm-1"', 1, true))
    assert.truthy(rs:find('type = "make"', 1, true))    -- the Makefile builds it
    local dir = server.sh("mktemp -d"):match("[^\n]+")
    finally(function() server.sh("rm -rf " .. server.quote(dir)) end)
    local out, code = server.sh("make --no-print-directory -s dist DIST_DIR=" .. server.quote(dir)
      .. " DIST_URL=file:///x/tarball.tar.gz 2>&1")
    assert.equal(0, code, out)
    local name = "periskope-" .. periskope.VERSION
    local spec = assert(server.read_file(dir .. "/" .. name .. "-1.rockspec"))
    assert.truthy(spec:find('\nversion = "' .. periskope.VERSION .. '-1"\n', 1, true), spec)
    assert.truthy(spec:find('\n  url = "file:///x/tarball.tar.gz",\n', 1, true), spec)
    assert.truthy(spec:find('\n  dir = "' .. name .. '",\n', 1, true), spec)
    local md5 = server.sh("md5sum " .. server.quote(dir .. "/" .. name .. ".tar.gz")):match("^(%x+)")
    assert.truthy(spec:find('\n  md5 = "' .. md5 .. '",\n', 1, true), spec)
    -- The tarball holds the tree under one directory named after the version.
    local list = server.sh("tar tzf " .. server.quote(dir .. "/" .. name .. ".tar.gz"))
    for _, f in ipairs { "Makefile", "src/psk_core.h", "bin/periskope", "LICENSE", "doc/periskope.1",
                         "debian/control", "meta/periskope.lua", "spec/support/server.lua" } do
      assert.truthy(list:find("\n" .. name .. "/" .. f .. "\n", 1, true), f)
    end
    -- What a user builds, not the development tree (.gitattributes): no
    -- specs, fuzz harnesses, bench or CI; of spec/ only the local server.
    for path in list:gmatch("[^\n]+") do
      local f = path:sub(#name + 2)
      assert.falsy(f:match("^bench/.") or f:match("^fuzz/.") or f:match("^%.ci/") or f:match("_spec%.lua$")
        or (f:match("^spec/.") and not f:match("^spec/support/$")
            and not f:match("^spec/support/[%a_]+%.lua$")), f)
    end
    assert.falsy(list:find("/spec/support/util.lua\n", 1, true))
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
    -- The collector waits until the loop is over: run during it (its
    -- pace depends on how much the clients allocate), it would close
    -- some of them early and the count below would say nothing.
    collectgarbage("stop")
    for _ = 1, 200 do
      local c = util.client(srv)
      assert(c:pin { message_id = "m" })   -- each holds a kept-alive connection
    end
    local during = open_fds()
    collectgarbage("restart")
    assert.truthy(during >= before + 150, ("%d open before, %d with 200 clients"):format(before, during))
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
