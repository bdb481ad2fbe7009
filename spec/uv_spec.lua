-- periskope.uv in an event loop without threads: under plain luv (Lua 5.4)
-- and in Neovim (LuaJIT, vim.loop). spec/support/uv_driver.lua runs the
-- scenarios in the host and writes what happened; here each is checked
-- against what the local server got. The pins take no thread of libuv's
-- pool: the host's own fs work is answered at once while they wait.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local redis = require "spec.support.redis"
local util = require "spec.support.util"
local cjson = require("cjson").new()

local sh, sq = server.sh, server.quote

-- The server's answers, in the order the driver's requests arrive.
local SCRIPT = {
  {},                                                   -- warm
  { delay = 2 }, { delay = 2 }, { delay = 2 }, { delay = 2 }, -- four slow pins
  {},                                                   -- warm2 (blocking)
  { delay = 2 },                                        -- closed under it
  {},                                                   -- raising
  { delay = 2 },                                        -- cancelled
  {}, {}, {},                                           -- after a raise, co
}
for _ = 1, 16 do SCRIPT[#SCRIPT + 1] = { delay = 0.3 } end -- eight at once, twice

local function read(path)
  local f = io.open(path, "rb")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return text
end

-- Runs the driver in `host` ("luv" or "nvim") with scenario; returns its
-- result table, the host's output and the time it ended (epoch seconds).
local function drive(host, srv, scenario, redis_port)
  local out = os.tmpname()
  local root = hosts.root()
  local env = {
    PERISKOPE_UV_KEY = srv.api_key, PERISKOPE_UV_BASE_URL = srv.base_url,
    PERISKOPE_UV_CPATH = host == "nvim" and hosts.cpath() or hosts.build("lua5.4"),
    PERISKOPE_UV_PATH = root .. "/lua/?.lua", PERISKOPE_UV_OUT = out,
    PERISKOPE_UV_SCENARIO = scenario, PERISKOPE_UV_REDIS = redis_port and tostring(redis_port) or "",
  }
  local words = { "env" }
  for k, v in pairs(env) do words[#words + 1] = k .. "=" .. sq(v) end
  local driver = root .. "/spec/support/uv_driver.lua"
  local cmd = host == "nvim"
    and (" timeout 60 nvim --headless -u NONE -i NONE --clean -n -c " .. sq("luafile " .. driver)
      .. " -c 'qa!' </dev/null 2>&1")
    or (" timeout 60 lua5.4 " .. sq(driver) .. " 2>&1")
  local log, code = sh(table.concat(words, " ") .. cmd)
  local ended = server.now()
  local text = read(out)
  os.remove(out)
  assert(code == 0 and text ~= "", ("%s failed (exit status %s):\n%s"):format(host, tostring(code), log))
  local result = cjson.decode(text)
  assert(result.driver_error == nil, result.driver_error)
  return result, log, ended
end

for _, host in ipairs { "luv", "nvim" } do
  describe("periskope.uv under " .. host, function()
    local srv, result, log

    setup(function()
      srv = server.start {}
      srv:script(SCRIPT)
      result, log = drive(host, srv, "all")
    end)
    teardown(function() if srv then srv:stop() end end)

    it("takes no thread of libuv's pool: the host's fs_stat is answered while 4 pins wait 2 s", function()
      local slow = result.slow
      -- On libuv's pool the fs_stat waited for a pin's 2 s; here a loaded
      -- machine may still delay the loop a little.
      assert.truthy(slow.stat_ms < util.within(500), slow.stat_ms .. " ms")
      assert.truthy(slow.gap < util.within(400), slow.gap .. " ms")
      for _, p in ipairs(slow.pins) do
        assert.equal(1, p.n)
        assert.equal(204, p.status)
        assert.truthy(p.ms >= 2000, p.ms)
      end
    end)

    it("calls back once with \"closed\" when the client is closed under a pin", function()
      local r = result.closed
      assert.equal(1, r.n)
      assert.equal("closed", r.kind)
      assert.truthy(r.err:find("closed client", 1, true), r.err)
      assert.truthy(r.after_close_ms < util.within(300), r.after_close_ms)
    end)

    it("calls back once with the hook's error when on_event raises", function()
      local r = result.raised
      assert.equal(1, r.n)
      assert.equal("error", r.kind)
      assert.truthy(r.err:find("boom in the hook", 1, true), r.err)
    end)

    it("calls back once with \"cancelled\", at once, when cancelled; a second cancel does nothing", function()
      local r = result.cancelled
      assert.equal(1, r.n)
      assert.equal("cancelled", r.kind)
      assert.is_true(r.first_cancel)
      assert.is_false(r.second_cancel)
      assert.truthy(r.after_cancel_ms < util.within(100), r.after_cancel_ms)
    end)

    it("keeps the connections of 8 pins in flight: the next 8 connect to nothing new", function()
      for round = 1, 2 do
        for i = 1, 8 do assert.equal(204, result["eight" .. round][i].status) end
      end
      -- Every connection the second eight used was open before them
      -- (libcurl's default keeps 4 per multi handle, and a job has its own).
      local before, second = {}, {}
      for _, r in ipairs(srv:requests()) do
        if r.uri:find("/eight2-", 1, true) then second[#second + 1] = r.connection
        else before[r.connection] = true end
      end
      assert.equal(8, #second)
      for _, conn in ipairs(second) do
        assert.truthy(before[conn], ("connection %d is new: %s"):format(conn, cjson.encode(second)))
      end
    end)

    it("survives a callback that raises, and pins on; yields in a coroutine", function()
      assert.equal(204, result.after_raise)
      assert.equal(204, result.co)
      if host == "luv" then assert.truthy(log:find("the caller's own bug", 1, true), log) end
    end)
  end)
end

for _, host in ipairs { "luv", "nvim" } do
  describe("periskope.uv under " .. host .. " with the Redis limiter #redis", function()
    it("does the store's operations over the loop's own TCP: the loop keeps ticking while Redis is slow", function()
      local rd = redis.start {}
      local slow = redis.stand_in { mode = "proxy", upstream = rd.port, delay = 0.1 }
      local srv = server.start { rate_limit = 2, window = 1 }
      local result = drive(host, srv, "store", slow.port)
      local st = result.store
      for _, p in ipairs(st.pins) do
        assert.equal(1, p.n)
        assert.equal(204, p.status, p.err)
      end
      assert.truthy(st.gap < util.within(400), st.gap .. " ms")
      assert.truthy(st.ms >= 500, st.ms)             -- the budget made them wait a window
      assert.is_nil(srv:stats().statuses[429])
      local stored = rd:cli("GET", "periskope:" .. util.sha256_hex(srv.api_key))
      assert.truthy(stored:find("^p3 "), stored)
      srv:stop()
      slow:stop()
      rd:stop()
    end)
  end)
end

describe("periskope.uv in Neovim, quitting", function()
  it(":qa! with 8 pins in flight ends at once, not after their timeout", function()
    local srv = server.start {}
    local script = { {} }
    for i = 2, 9 do script[i] = { delay = 30 } end
    srv:script(script)
    local result, _, ended = drive("nvim", srv, "quit")
    assert.truthy(ended - result.quit_at < util.within(1), ended - result.quit_at)
    assert.equal(9, #srv:requests())
    srv:stop()
  end)
end)
