-- client:pin_job, job:step and periskope.perform: the pin driven from Lua,
-- as periskope.ngx and periskope.uv drive it, with everything pin does.
local periskope = require "periskope"
local server = require "spec.support.server"
local util = require "spec.support.util"

-- Drives job to its end with perform and a plain sleep; returns what the
-- last step returned after "done", and the actions taken.
local function drive(job)
  local actions = {}
  local action, a, b, c = job:step()
  while action ~= "done" do
    actions[#actions + 1] = action
    if action == "send" then
      action, a, b, c = job:step(periskope.perform(a))
    else
      assert.equal("wait", action)
      assert.is_number(a)
      if a > 0 then os.execute(("sleep %.3f"):format(a)) end
      action, a, b, c = job:step()
    end
  end
  return a, b, c, actions
end

describe("client:pin_job", function()
  local srv
  setup(function() srv = server.start { tls = true } end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  it("sends the request pin sends, and ends with what pin returns", function()
    local c = util.client(srv)
    local job = c:pin_job { message_id = "a@b", time = 7 }
    local action, req = job:step()
    assert.equal("send", action)
    assert.same({ "POST", srv.base_url .. "/message/a%40b/pin", '{"pin":true,"time":7}' },
      { req.method, req.url, req.body })
    assert.equal(5, req.timeout)
    assert.equal(2, req.connect_timeout)
    assert.equal(1048576, req.max_body)
    local lines = {}
    for _, l in ipairs(req.headers) do lines[l:match("^[^:]+")] = l end
    assert.equal("Authorization: Bearer " .. srv.api_key, lines.Authorization)
    assert.equal("x-phone: " .. util.PHONE, lines["x-phone"])
    local status, head, body, elapsed = periskope.perform(req)
    assert.equal(204, status)
    assert.matches("^HTTP/1.1 204", head)
    assert.equal("", body)
    assert.is_number(elapsed)
    local done, res = job:step(status, head, body, elapsed)
    assert.equal("done", done)
    assert.same({ true, 204, 1 }, { res.ok, res.status, res.attempts })
    assert.matches("^%x+%-", res.trace_id)
    assert.equal(999, res.rate_limit.remaining)
    assert.equal(res.headers["x-periskope-trace-id"], res.headers["X-Periskope-Trace-Id"])
    local r = srv:requests()
    assert.equal(1, #r)
    assert.equal("/v1/message/a%40b/pin", r[1].uri)
    assert.equal('{"pin":true,"time":7}', r[1].body)
    c:close()
  end)

  it("raises what pin raises, before anything is sent", function()
    local c = util.client(srv)
    util.raises(function() c:pin_job { message_id = ".." } end,
      "bad argument #1 to 'pin_job' (field 'message_id' must not be '.' or '..')")
    util.raises(function() c:pin_job { message_id = "m", time = 5 } end, "field 'time' must be 1, 7 or 30")
    util.raises(function() c:pin_job { message_id = "m", nope = 1 } end, "unknown field 'nope'")
    c:close()
    util.raises(function() c:pin_job { message_id = "m" } end, "attempt to use a closed client")
    assert.equal(0, #srv:requests())
  end)

  it("retries and waits as pin does, with the same events in the same order", function()
    local events = {}
    local c = util.client(srv, { on_event = function(ev) events[#events + 1] = ev.type end })
    -- The close comes twice: a kept-alive connection found closed is sent
    -- again once, uncounted.
    srv:script { { status = 503, rate_headers = false, headers = { ["Retry-After"] = "0" } },
                 { action = "close" }, { action = "close" } }
    local res, _, _, actions = drive(c:pin_job { message_id = "m" })
    assert.equal(204, res.status)
    assert.equal(3, res.attempts)
    assert.same({ "send", "wait", "send", "wait", "send" }, actions)
    assert.same({ "request", "response", "wait", "request", "failure", "wait", "request", "response" }, events)
    c:close()
  end)

  it("ends with nil, message, kind when no answer came", function()
    local c = util.client(srv, { base_url = "http://127.0.0.1:1/v1", retries = 0 })
    local res, msg, kind = drive(c:pin_job { message_id = "m" })
    assert.is_nil(res)
    assert.equal("connect", kind)
    assert.equal(1, msg:find("periskope: POST http://127.0.0.1:1/v1/message/m/pin: ", 1, true), msg)
    c:close()
  end)

  it("takes an answer got elsewhere, and a failure told by kind", function()
    local c = util.client(srv, { retries = 1 })
    local job = c:pin_job { message_id = "m" }
    assert.equal("send", (job:step()))
    local action, wait = job:step(nil, "periskope: timed out somewhere", "timeout", 1.5)
    assert.equal("wait", action)
    assert.is_true(wait >= 0.5)                       -- the backoff
    assert.equal("send", (job:step()))
    local done, res = job:step(404, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n",
      '{"message":"Message not found"}', 0.01)
    assert.equal("done", done)
    assert.same({ false, 404, "Message not found", 2 }, { res.ok, res.status, res.error, res.attempts })
    c:close()
  end)

  it("says how it is misused", function()
    local c = util.client(srv)
    local job = c:pin_job { message_id = "m" }
    util.raises(function() job:step(204, "") end, "no answer is awaited")
    assert.equal("send", (job:step()))
    util.raises(function() job:step() end, "job:step expects the answer")
    util.raises(function() job:step(99, "") end, "must be the HTTP status (100 to 599)")
    util.raises(function() job:step(nil, "x", "gone") end,
      "bad argument #4 to 'step' (the failure's kind must be one of timeout")
    util.raises(function() job:step(nil, "timeout") end,
      "bad argument #4 to 'step' (the failure's kind must be one of")
    util.raises(function() job:step(nil, 5, "timeout") end,
      "bad argument #3 to 'step' (the failure's message must be a string, got 5)")
    assert.equal("done", (job:step(204, "HTTP/1.1 204 No Content\r\n\r\n", "")))
    util.raises(function() job:step() end, "periskope: this pin job is over")
    c:close()
  end)

  it("a hook that closes the client or yields during a step: a clear error, no crash", function()
    local c
    c = util.client(srv, { on_event = function(ev) if ev.type == "request" then c:close() end end })
    local job = c:pin_job { message_id = "m" }
    assert.equal("send", (job:step()))   -- the hook closed the client meanwhile
    assert.equal("periskope.Client (closed)", tostring(c))
    util.raises(function() job:step(204, "HTTP/1.1 204 No Content\r\n\r\n", "") end,
      "attempt to use a closed client")
    util.raises(function() c:pin_job { message_id = "n" } end, "attempt to use a closed client")
    collectgarbage()
    local y = util.client(srv, { on_event = function() coroutine.yield() end })
    local co = coroutine.create(function() return y:pin_job({ message_id = "m" }):step() end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("on_event may not yield", 1, true), err)
    y:close()
    assert.equal(0, #srv:requests())
  end)

  it("is over after a step raised; the client pins again at once", function()
    local armed = true
    local c = util.client(srv, { on_event = function(ev)
      if armed and ev.type == "request" then armed = false; error({ "raised" }) end
    end })
    local job = c:pin_job { message_id = "m" }
    local ok, err = pcall(job.step, job)
    assert.is_false(ok)
    assert.same({ "raised" }, err)
    util.raises(function() job:step() end, "this pin job is over")
    assert.equal(204, c:pin { message_id = "again" }.status)   -- no slot left held
    c:close()
  end)

  it("lets a hook close the client: the step that runs finishes, the next one refuses", function()
    local c
    c = util.client(srv, { on_event = function(ev) if ev.type == "response" then c:close() end end })
    local job = c:pin_job { message_id = "m" }
    local _, req = job:step()
    local done, res = job:step(periskope.perform(req))
    assert.equal("done", done)
    assert.equal(204, res.status)
    assert.equal("periskope.Client (closed)", tostring(c))
    local job2 = periskope.new { api_key = "k" }:pin_job { message_id = "x" }
    collectgarbage()
    assert.equal("send", (job2:step()))    -- the job keeps its client alive
  end)

  it("refuses steps of a client closed between them", function()
    local c = util.client(srv)
    local job = c:pin_job { message_id = "m" }
    assert.equal("send", (job:step()))
    c:close()
    util.raises(function() job:step(204, "HTTP/1.1 204 No Content\r\n\r\n", "") end,
      "attempt to use a closed client")
  end)
end)

describe("periskope.perform", function()
  local srv
  setup(function() srv = server.start { tls = true } end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function request(over)
    -- Roomy timeouts: a TLS handshake under valgrind is slow.
    local c = util.client(srv, { base_url = srv.https_base_url, ca_file = srv.ca_file,
      timeout = 30, connect_timeout = 30 })
    local _, req = c:pin_job({ message_id = "p" }):step()
    c:close()
    for k, v in pairs(over or {}) do req[k] = v end
    return req
  end

  it("keeps its connections from call to call, and verifies TLS with ca_file", function()
    local req = request()
    assert.equal(204, (periskope.perform(req)))
    assert.equal(204, (periskope.perform(req)))
    local r = srv:requests()
    assert.equal(2, #r)
    assert.equal(r[1].connection, r[2].connection)
    -- The request target is the path, as client:pin sends it, not the URL.
    assert.equal("POST /v1/message/p/pin HTTP/1.1", r[1].request_line)
    req.ca_file = nil                                  -- the system's CAs: not this server's
    local status, msg, kind = periskope.perform(req)
    assert.is_nil(status)
    assert.equal("tls", kind)
    assert.truthy(msg:find("periskope: POST https://localhost:", 1, true), msg)
  end)

  it("sends only what a pin may: https, or http to loopback; no control bytes", function()
    util.raises(function() periskope.perform(request { url = "http://example.com/v1/message/p/pin" }) end,
      "field 'url' must use https")
    util.raises(function() periskope.perform(request { url = srv.https_base_url .. "/message/p/pin?x=1" }) end,
      "field 'url' must have a plain path")
    util.raises(function() periskope.perform(request { headers = { "x-phone: 1\r\nEvil: 1" } }) end,
      "field 'headers' must hold no control bytes")
    util.raises(function() periskope.perform(request { timeout = -1 }) end,
      "bad argument #1 to 'perform' (field 'timeout' must be a number of seconds > 0 and <= 86400, got -1)")
    util.raises(function() periskope.perform(request { headers = "x" }) end, "field 'headers' must be an array")
    assert.equal(0, #srv:requests())
  end)
end)
