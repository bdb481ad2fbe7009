-- periskope in Neovim (LuaJIT): the plugin's module, periskope.nvim
-- (lua/periskope/nvim.lua), which pins through periskope.uv while the
-- editor's main loop keeps running, and a plain blocking pin. A headless
-- nvim runs spec/support/nvim_driver.lua against the local Periskope
-- server, with the options passed to setup, not the environment. The
-- plugin as installed, from a fresh clone: spec/neovim_plugin_spec.lua.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"
local cjson = require("cjson").new()

local sh, sq = server.sh, server.quote

local UUID = "^%x+%-%x+%-%x+%-%x+%-%x+$"
-- How long the server holds each of the 8 pins: they end in another order
-- than they start.
local DELAYS = { 0.8, 0.2, 0.6, 0.4, 0.5, 0.3, 0.7, 0.1 }

describe("Neovim", function()
  local srv, out, result

  setup(function()
    local cpath = hosts.cpath()
    srv = server.start {}
    local script = { {} }                       -- the first pin: at once
    for i, d in ipairs(DELAYS) do script[i + 1] = { delay = d } end
    srv:script(script)
    out = os.tmpname()
    local root = hosts.root()
    local env = {
      PERISKOPE_NVIM_KEY = srv.api_key, PERISKOPE_NVIM_BASE_URL = srv.base_url,
      PERISKOPE_NVIM_CPATH = cpath, PERISKOPE_NVIM_PATH = root .. "/lua/?.lua",
      PERISKOPE_NVIM_OUT = out,
    }
    local words = { "env -u PERISKOPE_API_KEY -u PERISKOPE_BASE_URL -u PERISKOPE_PHONE" }
    for k, v in pairs(env) do words[#words + 1] = k .. "=" .. sq(v) end
    -- timeout: a hung nvim must not outlive the spec. -u NONE --clean: no
    -- config or plugins; -i NONE: no shada; -n: no swap file.
    local log, code = sh(table.concat(words, " ") .. " timeout 60 nvim --headless -u NONE -i NONE --clean -n"
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

  it("takes its options from setup, not the environment", function()
    assert.is_false(result.env_key)
    assert.equal(204, result.warm)
    assert.equal("Bearer " .. srv.api_key, srv:requests()[1].headers.authorization)
  end)

  it("pins 8 at once off the main loop, which keeps running; each result as its pin ends", function()
    local m = result.many
    -- A pin made on the main loop would hold it for the server's delay,
    -- 800 ms for the first request; a loaded machine adds well under that.
    assert.is_true(result.queue_ms < util.within(400), result.queue_ms .. " ms")
    assert.equal(8, #m.done)
    -- A 10 ms timer kept ticking: the loop was never held for long (a
    -- loop held by a pin would have no tick for the 800 ms of the first).
    assert.is_true(m.gap < util.within(400), m.gap .. " ms (" .. m.ticks .. " ticks in " .. m.ms .. " ms)")
    assert.is_true(m.ticks >= 2, m.ticks .. " ticks in " .. m.ms .. " ms")
    -- The server held the k-th request to arrive DELAYS[k] seconds.
    local reqs = srv:requests()
    local delay_of, first, second = {}, nil, nil
    for k = 2, 9 do
      local id = reqs[k].uri:match("^/v1/message/(n%d)/pin$")
      assert.truthy(id, reqs[k].uri)
      assert.equal('{"pin":true,"time":7}', reqs[k].body)
      delay_of[id] = DELAYS[k - 1]
      if k == 2 then first = id end
      if k == 3 then second = id end
    end
    -- In order of completion: each callback came later than the one before,
    -- and each after its own answer.
    local seen = {}
    for i, d in ipairs(m.done) do
      assert.equal(204, d.status, d.id)
      assert.is_true(d.api, "vim.api refused in the callback")
      assert.is_nil(seen[d.id])
      seen[d.id] = true
      if i > 1 then assert.is_true(d.ms >= m.done[i - 1].ms, cjson.encode(m.done)) end
      assert.is_true(d.ms >= delay_of[d.id] * 1000, d.id .. " came back after " .. d.ms .. " ms")
    end
    -- Not in the order they started: the second to arrive (held 0.2 s)
    -- came back before the first (held 0.8 s).
    local pos = {}
    for i, d in ipairs(m.done) do pos[d.id] = i end
    assert.is_true(pos[second] < pos[first])
  end)

  it("unpins from a coroutine, without a callback", function()
    assert.equal(204, result.co)
    local reqs = srv:requests()
    assert.equal("/v1/message/co/pin", reqs[10].uri)
    assert.equal('{"pin":false}', reqs[10].body)
  end)

  it("runs on_event on the main loop, where vim.api works", function()
    assert.is_true(#result.events >= 20)
    for _, ev in ipairs(result.events) do assert.is_true(ev.api, ev.type) end
  end)

  it("pins on the main thread too, blocking it", function()
    local b = result.blocking
    assert.equal(204, b.status)
    assert.is_true(b.ok)
    assert.equal(1, b.attempts)
    assert.matches(UUID, b.trace_id)
    assert.equal("/v1/message/nvim%2Fblocking/pin", srv:requests()[11].uri)
  end)

  it("gives :PeriskopePin and :PeriskopeUnpin, which notify the result, naming no file", function()
    local notes = result.notes
    assert.equal(3, #notes)
    assert.equal("periskope: pinned cmd-1", notes[1].msg)
    assert.equal("periskope: unpinned cmd-2", notes[2].msg)
    assert.equal("bad argument #1 to 'pin' (field 'message_id' must not be '.' or '..')", notes[3].msg)
    assert.equal(result.error_level, notes[3].level)
    local r = srv:requests()
    assert.equal(13, #r)                            -- the refused id sent nothing
    assert.equal("/v1/message/cmd-1/pin", r[12].uri)
    assert.equal('{"pin":true,"time":7}', r[12].body)
    assert.equal('{"pin":false}', r[13].body)
  end)
end)
