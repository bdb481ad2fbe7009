-- No answer: pin returns nil, message, kind for each kind of failure, and
-- the message says what failed and where.
local server = require "spec.support.server"
local util = require "spec.support.util"

describe("Client:pin when no answer comes", function()
  local srv

  setup(function() srv = server.start {} end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function fails(c, kind, ...)
    local res, msg, k = c:pin { message_id = "m" }
    assert.is_nil(res)
    assert.equal("string", type(msg))
    assert.equal(1, msg:find("periskope: ", 1, true), msg)
    assert.equal(kind, k, msg)
    for _, piece in ipairs { ... } do
      assert.truthy(msg:find(piece, 1, true), ("%q lacks %q"):format(msg, piece))
    end
    -- The cause, after the URL, is said once: not libcurl's words after ours.
    local cause = assert(msg:match("^periskope: POST %S+: (.*)$"), msg):lower()
    local word = ({ timeout = "timed out", connect = "connect", resolve = "resolve", tls = "tls",
                    network = "network", too_large = "too large" })[kind]
    local _, n = cause:gsub(word, "")
    assert.equal(1, n, msg)
    c:close()
    return msg
  end

  it("is a timeout when the server hangs past timeout", function()
    srv:script { { delay = 3 } }
    fails(util.client(srv, { timeout = 0.3, retries = 0 }), "timeout", "timed out", "/message/m/pin")
  end)

  it("is a connect failure when nothing listens", function()
    fails(util.client(srv, { base_url = "http://127.0.0.1:1/v1", retries = 0 }), "connect",
      "Failed to connect to 127.0.0.1 port 1")
  end)

  it("is a resolve failure when the host name cannot be resolved", function()
    -- A 70-byte label is not a valid DNS name: the resolver fails at once
    -- and no query leaves the machine.
    local host = ("a"):rep(70) .. ".invalid"
    fails(util.client(srv, { base_url = "https://" .. host .. "/v1", retries = 0 }), "resolve",
      "Could not resolve host: " .. host)
  end)

  it("is a tls failure when https meets a plain http port", function()
    -- Roomy timeouts: under valgrind, setting up TLS alone can take
    -- longer than the specs' usual 2 s to connect.
    fails(util.client(srv, { base_url = "https://127.0.0.1:" .. srv.port .. "/v1", retries = 0,
      timeout = 30, connect_timeout = 20 }), "tls", "TLS")
  end)

  it("is a network failure when the server closes without answering", function()
    srv:script { { action = "close" } }
    fails(util.client(srv, { retries = 0 }), "network")
  end)

  it("is a network failure when the connection drops mid-headers or mid-body", function()
    srv:script { { action = "close_mid_headers" }, { action = "close_mid_body" } }
    fails(util.client(srv, { retries = 0 }), "network")
    fails(util.client(srv, { retries = 0 }), "network")
  end)

  it("is too_large when the body passes max_body, with or without Content-Length", function()
    srv:script { { status = 200, body_size = 2000 } }
    fails(util.client(srv, { max_body = 1000 }), "too_large", "max_body")
    srv:script { { status = 200, body_size = 2000, headers = { ["Content-Length"] = "" } } }
    fails(util.client(srv, { max_body = 1000, retries = 0 }), "too_large")
    -- too_large is not retried: one request each.
    assert.equal(2, #srv:requests())
  end)

  it("keeps a body of exactly max_body", function()
    srv:script { { status = 200, body_size = 1000 } }
    local c = util.client(srv, { max_body = 1000 })
    local res = assert(c:pin { message_id = "m" })
    assert.equal(1000, #res.body)
    c:close()
  end)

  it("does not retry tls or resolve failures", function()
    for _, case in ipairs {
      { "tls", "https://127.0.0.1:" .. srv.port .. "/v1" },
      { "resolve", "https://" .. ("a"):rep(70) .. ".invalid/v1" },
    } do
      local events, hook = util.recorder()
      -- Roomy timeouts, as above: under valgrind a short one would make
      -- the TLS case a (retried) timeout.
      local c = util.client(srv, { base_url = case[2], retries = 2, timeout = 30, connect_timeout = 20,
        on_event = hook })
      local res, _, kind = c:pin { message_id = "m" }
      assert.is_nil(res)
      assert.equal(case[1], kind)
      assert.equal(1, #util.of_type(events, "request"), case[1])   -- one attempt, no retry
      assert.equal(0, #util.of_type(events, "wait"), case[1])
      c:close()
    end
    assert.equal(0, #srv:requests())
  end)
end)
