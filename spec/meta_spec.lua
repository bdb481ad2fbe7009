-- meta/periskope.lua, the LuaLS annotations, against the module itself:
-- every function, option, field and event field annotated exists, and
-- everything the module has is annotated. (lua-language-server itself
-- cannot be installed here: neither Debian 12 nor the npm registry has it.)
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

local ROOT = (function()
  local src = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  local dir = src:match("^(.*)/spec/[^/]*$") or "."
  return dir
end)()

local META = assert(server.read_file(ROOT .. "/meta/periskope.lua"))

-- The fields of ---@class NAME, as a set.
local function class_fields(name)
  local block = META:match("\n%-%-%-@class " .. name:gsub("%p", "%%%0") .. "[^\n]*\n(.-)\n[^%-]")
    or META:match("\n%-%-%-@class " .. name:gsub("%p", "%%%0") .. "[^\n]*\n(.-)$")
  assert(block, "no class " .. name)
  local set = {}
  for field in block:gmatch("%-%-%-@field ([%w_]+)") do set[field] = true end
  return set
end

-- The functions declared on table t ("periskope.", "limiters.", "Client:").
local function functions(prefix)
  local set = {}
  for f in META:gmatch("\nfunction " .. prefix:gsub("%p", "%%%0") .. "([%w_]+)%(") do set[f] = true end
  return set
end

local function union(a, b)
  local out = {}
  for k in pairs(a) do out[k] = true end
  for k in pairs(b) do out[k] = true end
  return out
end

local function keys(t)
  local set = {}
  for k in pairs(t) do set[k] = true end
  return set
end

-- A value no option or field accepts: each is then named in the error,
-- which says "unknown" only for names the module does not have.
local WRONG = coroutine.create(function() end)

describe("meta/periskope.lua (LuaLS annotations)", function()
  it("declares itself the meta file of require 'periskope'", function()
    assert.equal(1, META:find("---@meta periskope\n", 1, true))
  end)

  it("annotates exactly the module's functions and fields", function()
    assert.same(keys(periskope), union(functions("periskope."), class_fields("periskope")))
    assert.same(keys(periskope.limiter), functions("limiters."))
  end)

  it("annotates exactly a client's methods", function()
    local c = periskope.new { api_key = "k" }
    local methods = keys(getmetatable(c).__index)
    c:close()
    assert.same(methods, functions("Client:"))
  end)

  it("annotates every option of new and field of pin, and nothing they refuse as unknown", function()
    local options = class_fields("periskope.Options")
    for name in pairs(options) do
      local err = util.raises(function() periskope.new { api_key = "k", [name] = WRONG } end)
      assert.truthy(err:find("option '" .. name .. "'", 1, true), err)
    end
    local c = periskope.new { api_key = "k" }
    for name in pairs(class_fields("periskope.PinArgs")) do
      local args = { message_id = "m", [name] = WRONG }
      local err = util.raises(function() c:build_pin(args) end)
      assert.truthy(err:find("field '" .. name .. "'", 1, true), err)
    end
    local err = util.raises(function() c:pin_many({}, { concurrency = WRONG }) end)
    assert.truthy(err:find("concurrency", 1, true), err)
    c:close()
    -- The module's own list of redis options, in its unknown-option error.
    if os.getenv("PERISKOPE_HIREDIS") ~= "no" then
      err = util.raises(function() periskope.limiter.redis { nope = 1 } end)
      local listed = {}
      for name in err:match("%(([%w_, ]+)%)"):gmatch("[%w_]+") do listed[name] = true end
      assert.same(listed, class_fields("periskope.RedisOptions"))
    end
  end)

  it("annotates every field of a result, a failure and an event", function()
    local result_fields = class_fields("periskope.Result")
    local res = periskope.read_response(404, {
      ["X-RateLimit-Limit"] = "10", ["X-RateLimit-Remaining"] = "9", ["X-RateLimit-Reset"] = "99",
      ["x-periskope-trace-id"] = "t",
    }, '{"message":"Message not found"}')
    assert.same(result_fields, keys(res))
    assert.same(class_fields("periskope.RateLimit"), keys(res.rate_limit))

    local srv = server.start { rate_limit = 2, window = 1 }
    finally(function() srv:stop() end)
    local events = {}
    local c = util.client(srv, { on_event = function(ev) events[#events + 1] = ev end })
    srv:script { { status = 503, rate_headers = false } }
    c:pin { message_id = "a" }                      -- request, response, wait (backoff), ...
    c:pin_many { { message_id = "b" }, { message_id = "c" }, { message_id = "d" } }  -- rate-limit waits
    c:close()
    local dead = util.client(srv, { base_url = "http://127.0.0.1:1/v1", retries = 0,
      circuit = { failures = 1 }, on_event = function(ev)
      events[#events + 1] = ev
    end, limiter = periskope.limiter.shared_dict {
      get = function() end, set = function() return false, "no memory" end,
      add = function() return true end, delete = function() end,
    } })
    local failures = dead:pin_many { { message_id = "e" }, { message_id = "f" } }
    dead:close()
    assert.same(class_fields("periskope.Failure"), keys(failures[1]))

    local seen_types, event_fields = {}, class_fields("periskope.Event")
    for _, ev in ipairs(events) do
      seen_types[ev.type] = true
      for k in pairs(ev) do assert.truthy(event_fields[k], ev.type .. ": field " .. k .. " is not annotated") end
    end
    local types = {}
    for t in META:match("\n%-%-%-@field type ([^\n]+)"):gmatch('"([%w%-]+)"') do types[t] = true end
    assert.same(types, seen_types)
  end)
end)
