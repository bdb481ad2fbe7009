-- The pin job under a second event loop, cqueues, as a user runs
-- examples/cqueues/pin.lua: several pins at once through client:pin_job's
-- watch exchange, each a coroutine of the loop, no thread.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"

local sh, sq = server.sh, server.quote

describe("examples/cqueues/pin.lua", function()
  it("pins several messages at once under cqueues, one line each", function()
    local srv = server.start { latency = 0.5 }
    local root = hosts.root()
    local out, code = sh("PERISKOPE_API_KEY=" .. sq(srv.api_key) .. " PERISKOPE_PHONE=919874532456"
      .. " PERISKOPE_BASE_URL=" .. sq(srv.base_url)
      .. " LUA_CPATH=" .. sq(hosts.build("lua5.4") .. ";;")
      .. " timeout 30 lua5.4 " .. sq(root .. "/examples/cqueues/pin.lua") .. " a b c d e f 2>&1")
    assert.equal(0, code, out)
    local seen = {}
    for id, status, what in out:gmatch("(%a)\t(%d+)\t(%a+)\n") do
      assert.equal("204", status)
      assert.equal("pinned", what)
      seen[#seen + 1] = id
    end
    assert.equal(6, #seen, out)
    -- The first alone (it learns the budget), then the five together, on
    -- the server's clock: the five arrived after the first was answered
    -- (0.5 s), and before the first of them was.
    local reqs = srv:requests()
    assert.equal(6, #reqs)
    assert.truthy(reqs[2].time - reqs[1].time >= 0.5, reqs[2].time - reqs[1].time)
    assert.truthy(reqs[6].time - reqs[2].time < 0.5, reqs[6].time - reqs[2].time)
    assert.equal('{"pin":true,"time":7}', reqs[1].body)
    srv:stop()
  end)
end)
