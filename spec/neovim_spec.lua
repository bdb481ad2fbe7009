-- periskope in Neovim (LuaJIT): a plain blocking pin, and the README's
-- recipe (examples/neovim/periskope_pin.lua) that pins on a thread of
-- libuv's pool while the editor's main loop keeps running. A headless nvim
-- runs spec/support/nvim_driver.lua against the local Periskope server.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"
local cjson = require("cjson").new()

local sh, sq = server.sh, server.quote

local EXAMPLE = "examples/neovim/periskope_pin.lua"
local UUID = "^%x+%-%x+%-%x+%-%x+%-%x+$"

describe("Neovim", function()
  local srv, out, result

  setup(function()
    local cpath = hosts.cpath()
    srv = server.start {}
    -- The first pin (off the main thread) takes 0.5 s: time for the timer.
    srv:script { { delay = 0.5 } }
    out = os.tmpname()
    local root = hosts.root()
    local env = {
      PERISKOPE_API_KEY = srv.api_key, PERISKOPE_BASE_URL = srv.base_url,
      PERISKOPE_PHONE = util.PHONE, PERISKOPE_NVIM_CPATH = cpath,
      PERISKOPE_NVIM_OUT = out, PERISKOPE_NVIM_EXAMPLE = root .. "/" .. EXAMPLE,
    }
    local words = {}
    for k, v in pairs(env) do words[#words + 1] = k .. "=" .. sq(v) end
    -- timeout: a hung nvim must not outlive the spec. -u NONE --clean: no
    -- config or plugins; -i NONE: no shada; -n: no swap file.
    local log, code = sh(table.concat(words, " ") .. " timeout 30 nvim --headless -u NONE -i NONE --clean -n"
      .. " -c " .. sq("luafile " .. root .. "/spec/support/nvim_driver.lua")
      .. " -c 'qa!' </dev/null 2>&1")
    local f = io.open(out, "rb")
    local text = f and f:read("*a") or ""
    if f then f:close() end
    assert(code == 0 and text ~= "", ("nvim failed (exit status %s):\n%s"):format(tostring(code), log))
    result = cjson.decode(text)
    assert(result.driver_error == nil, result.driver_error)
  end)

  teardown(function()
    if out then os.remove(out) end
    if srv then srv:stop() end
  end)

  it("is quoted verbatim by the README", function()
    assert.is_true(hosts.readme_quotes(EXAMPLE))
  end)

  it("pins off the main thread while the main loop runs", function()
    local a = result.async
    assert.equal(204, a.status)
    assert.matches(UUID, a.detail)                  -- the trace id
    assert.is_true(result.queue_ms < 100, result.queue_ms .. " ms")
    assert.is_true(a.ms >= 500, a.ms .. " ms")      -- the server's delay
    -- A 10 ms timer ticks about 50 times during the 0.5 s: the loop was free.
    assert.is_true(a.ticks - result.ticks_at_queue >= 20, a.ticks .. " ticks")
    local r = srv:requests()[1]
    assert.equal("/v1/message/a%40b/pin", r.uri)
    assert.equal("Bearer " .. srv.api_key, r.headers.authorization)
    assert.equal(util.PHONE, r.headers["x-phone"])
    assert.equal('{"pin":true}', r.body)
    assert.matches("LuaJIT", r.headers["user-agent"])
  end)

  it("pins on the main thread too, blocking it", function()
    local b = result.blocking
    assert.equal(204, b.status)
    assert.is_true(b.ok)
    assert.equal(1, b.attempts)
    assert.matches(UUID, b.trace_id)
    assert.equal("/v1/message/nvim%2Fblocking/pin", srv:requests()[2].uri)
  end)

  it("gives :PeriskopePin, which notifies the result", function()
    local notes = result.notes
    assert.equal(2, #notes)
    assert.equal("pinned cmd-1", notes[1].msg)
    -- pin's own message, after the position Lua puts in front of it.
    assert.equal(1, notes[2].msg:find("periskope: 0 ", 1, true))
    local want = "bad argument #1 to 'pin' (field 'message_id' must not be '.' or '..')"
    assert.equal(#notes[2].msg - #want + 1, notes[2].msg:find(want, 1, true))
    assert.equal(result.error_level, notes[2].level)
    local r = srv:requests()
    assert.equal(3, #r)                             -- the refused id sent nothing
    assert.equal("/v1/message/cmd-1/pin", r[3].uri)
  end)
end)
