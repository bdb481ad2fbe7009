-- periskope.read_response: a response obtained by other means becomes the
-- same result table pin returns.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

describe("periskope.read_response", function()
  it("builds the result pin builds", function()
    local res = periskope.read_response(204, {
      ["X-RateLimit-Limit"] = "10", ["X-RateLimit-Remaining"] = "9",
      ["X-RateLimit-Reset"] = "1737542181", ["x-periskope-trace-id"] = "b77a8810",
    }, "")
    assert.is_true(res.ok)
    assert.equal(204, res.status)
    assert.same({ limit = 10, remaining = 9, reset = 1737542181 }, res.rate_limit)
    assert.equal("b77a8810", res.trace_id)
    assert.equal("", res.body)
    assert.equal(1, res.attempts)
    assert.equal("9", res.headers["X-RATELIMIT-REMAINING"])
  end)

  it("accepts header names in any case and arrays of values", function()
    local res = periskope.read_response(200, { ["Set-Thing"] = { "a", "b" }, ["X-One"] = "1",
      ["x-one"] = "2" })
    assert.equal("a, b", res.headers["set-thing"])
    local one = res.headers["X-One"]
    assert.truthy(one == "1, 2" or one == "2, 1", one)
  end)

  it("decodes the JSON error message, else says HTTP <status>", function()
    assert.equal("slow down", periskope.read_response(429, {}, '{"message":"slow down"}').error)
    assert.equal("bad", periskope.read_response(400, nil, '{"error":"bad"}').error)
    assert.equal("nested", periskope.read_response(400, nil, '{"error":{"message":"nested"}}').error)
    assert.equal("HTTP 500", periskope.read_response(500, nil, "<html>").error)
    assert.equal("HTTP 500", periskope.read_response(500, nil, "null").error)
    assert.equal("HTTP 404", periskope.read_response(404).error)
  end)

  it("ignores X-RateLimit values that are not integers", function()
    local res = periskope.read_response(204, { ["X-RateLimit-Limit"] = "ten",
      ["X-RateLimit-Remaining"] = "-1", ["X-RateLimit-Reset"] = "99999999999999999999" })
    assert.is_nil(res.rate_limit)
    res = periskope.read_response(204, { ["X-RateLimit-Limit"] = 10 })
    assert.same({ limit = 10 }, res.rate_limit)
  end)

  it("raises on a bad status, headers or body", function()
    util.raises(function() periskope.read_response(99) end, "bad argument #1", "100 to 599")
    util.raises(function() periskope.read_response("204") end, "bad argument #1")
    util.raises(function() periskope.read_response(204, "x") end, "bad argument #2")
    util.raises(function() periskope.read_response(204, { [1] = "x" }) end, "header names must be strings")
    util.raises(function() periskope.read_response(204, { a = true }) end, "header 'a'")
    util.raises(function() periskope.read_response(204, { a = { {} } }) end, "header 'a'")
    util.raises(function() periskope.read_response(204, {}, {}) end, "bad argument #3")
  end)

  it("matches what pin returns for the same answer", function()
    local srv = server.start {}
    finally(function() srv:stop() end)
    local c = util.client(srv)
    srv:script { { status = 404, body = '{"message":"no such message"}' } }
    local res = assert(c:pin { message_id = "m" })
    local again = periskope.read_response(res.status, res.headers, res.body)
    for _, k in ipairs { "ok", "status", "body", "trace_id", "error", "attempts" } do
      assert.same(res[k], again[k], k)
    end
    assert.same(res.rate_limit, again.rate_limit)
    assert.same(res.headers, again.headers)
    c:close()
  end)
end)
