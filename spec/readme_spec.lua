-- Every Lua block of the README, and of the doc/ pages it links to, runs
-- as written: each in a process of its own under this run's interpreter,
-- against the local Periskope server (PERISKOPE_BASE_URL, _API_KEY and
-- _PHONE set, as run_with_server.lua sets them for make demo). A block
-- whose paragraph links one of the QUOTED example files quotes it: it must
-- be that file byte for byte, which the example's own spec runs in its
-- host (nginx, Neovim, Redis) and finds quoted (hosts.readme_quotes).
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"

local sh, sq = server.sh, server.quote
local ROOT = hosts.root()

-- The example files the docs quote whole, and the spec that runs each.
local QUOTED = {
  ["examples/openresty/pin_handlers.lua"] = "spec/openresty_spec.lua",
  ["examples/neovim/lazy.lua"] = "spec/neovim_plugin_spec.lua",
  ["examples/shared/batch.lua"] = "spec/contention_spec.lua",
}

-- The ```lua blocks of a Markdown file, with their line numbers, and the
-- QUOTED file each quotes: the one the paragraph just before it links
-- ("[`examples/x.lua`](../examples/x.lua):").
local function lua_blocks(path)
  local text = assert(hosts.read_file(ROOT .. "/" .. path))
  local blocks, n, current, prose = {}, 0, nil, {}
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    if current then
      if line == "```" then
        blocks[#blocks + 1] = current
        current = nil
      else
        current.code = current.code .. line .. "\n"
      end
    elseif line == "```lua" then
      local last = #prose
      while last > 0 and prose[last] == "" do last = last - 1 end
      local first = last
      while first > 0 and prose[first] ~= "" do first = first - 1 end
      current = { line = n + 1, code = "" }
      for file in table.concat(prose, "\n", first + 1, last):gmatch("%[`(examples/[^`]+)`%]%(") do
        if QUOTED[file] then current.quotes = file end
      end
      prose = {}
    elseif line:match("^```") then
      prose = {}
    else
      prose[#prose + 1] = line
    end
  end
  assert(not current, path .. ": a ```lua block is not closed")
  return blocks
end

-- Asserts that the block at `where` is `file` to the byte, naming the
-- first line that differs.
local function assert_quotes(where, code, file)
  local text = assert(hosts.read_file(ROOT .. "/" .. file), file)
  if code == text then return end
  local a, b = {}, {}
  for l in code:gmatch("([^\n]*)\n?") do a[#a + 1] = l end
  for l in text:gmatch("([^\n]*)\n?") do b[#b + 1] = l end
  for i = 1, math.max(#a, #b) do
    assert.equal(b[i], a[i], ("%s differs from %s at its line %d"):format(where, file, i))
  end
  error(where .. " differs from " .. file .. " in its last newline")
end

-- Runs command (shell words) with LUA_CPATH aimed at this run's module and
-- the server's URL, key and phone in the environment; returns stdout,
-- stderr and the exit status.
local function run_command(srv, command)
  local tmp = os.tmpname()
  local cpath = os.getenv("PERISKOPE_CPATH")
  local _, status = sh(table.concat({
    "env -u PERISKOPE_DEBUG -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4",
    "LUA_CPATH=" .. sq(((cpath and cpath ~= "") and cpath or ROOT .. "/build/lua5.4/?.so") .. ";;"),
    "PERISKOPE_BASE_URL=" .. sq(srv.base_url), "PERISKOPE_API_KEY=" .. sq(srv.api_key),
    "PERISKOPE_PHONE=" .. util.PHONE,
    command, "</dev/null >" .. sq(tmp .. ".out"), "2>" .. sq(tmp .. ".err"),
  }, " "))
  local out, err = server.read_file(tmp .. ".out"), server.read_file(tmp .. ".err")
  for _, f in ipairs { "", ".out", ".err" } do os.remove(tmp .. f) end
  return out, err, status
end

-- Runs code as a script under this run's interpreter.
local function run(srv, code)
  local script = os.tmpname() .. ".lua"
  server.write_file(script, code)
  local out, err, status = run_command(srv, sq(util.lua_bin()) .. " " .. sq(script))
  os.remove(script)
  return out, err, status
end

describe("the Lua in the README and doc/", function()
  local srv
  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  it("has blocks to run: the README's first example among them", function()
    local blocks = lua_blocks("README.md")
    assert.truthy(#blocks >= 5, #blocks)
    -- The first screen's example: ten lines or so, and it pins.
    local first = blocks[1].code
    local _, lines = first:gsub("\n", "")
    assert.truthy(lines <= 12, lines)
    assert.truthy(first:find("client:pin {", 1, true), first)
  end)

  for _, doc in ipairs(hosts.DOCS) do
    for _, block in ipairs(lua_blocks(doc)) do
      local where = doc .. ":" .. block.line
      local file = block.quotes
      if file then
        it(where .. " is " .. file .. " byte for byte, and compiles here", function()
          assert_quotes(where, block.code, file)
          local chunk, err = (loadstring or load)(block.code, "=" .. file)
          assert.truthy(chunk, err)
        end)
      elseif block.code:find("<close>", 1, true) and _VERSION ~= "Lua 5.4" then
        -- To-be-closed variables are Lua 5.4's: elsewhere the block does
        -- not compile, which is what the README says.
        it(where .. " is Lua 5.4 only, and says so", function()
          assert.is_nil((loadstring or load)(block.code))
        end)
      else
        it(where .. " runs as written", function()
          local out, err, status = run(srv, block.code)
          assert.equal(0, status, err .. out)
          assert.equal("", err)
          -- A block that pins reached the server, with the key it was given.
          if block.code:find(":pin[ _({]") or block.code:find("%.pin[ ({]") then
            local reqs = srv:requests()
            assert.truthy(#reqs >= 1, "no request reached the server")
            assert.equal("Bearer " .. srv.api_key, reqs[1].headers.authorization)
          end
        end)
      end
    end
  end
end)

describe("examples/pin.lua", function()
  local srv
  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local PIN = ROOT .. "/examples/pin.lua"

  it("runs by its own first line, which names lua5.4, not Debian's lua (5.2)", function()
    assert.equal("#!/usr/bin/env lua5.4", hosts.read_file(PIN):match("^[^\n]*"))
    -- As a user runs it when this run's module is the one that line
    -- loads; else under this run's interpreter, as its comment says.
    local command = util.lua_bin() == "lua5.4" and sq(PIN) or sq(util.lua_bin()) .. " " .. sq(PIN)
    local out, err, status = run_command(srv, command .. " m1 --time 7")
    assert.equal(0, status, err .. out)
    assert.equal("", err)
    assert.truthy(out:find("^pinned +m1\nstatus +204\n"), out)
    out, err, status = run_command(srv, command .. " m1 --unpin")
    assert.equal(0, status, err .. out)
    assert.truthy(out:find("^unpinned +m1\n"), out)
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    assert.equal('{"pin":true,"time":7}', reqs[1].body)
    assert.equal('{"pin":false}', reqs[2].body)
    -- Misuse is a usage error naming the problem, and sends nothing.
    out, err, status = run_command(srv, command .. " m1 --time 2")
    assert.equal(2, status, err .. out)
    assert.truthy(err:find("time", 1, true), err)
    assert.truthy(err:find("usage: examples/pin.lua", 1, true), err)
    assert.equal(2, #srv:requests())
  end)
end)
