-- The fault matrix: the ways a server or the network misbehaves, played by
-- the local server (scripted behaviours, raw bytes). Each case checks the
-- exact outcome (a result, or nil, message, kind), what the server saw
-- (requests, gaps on its clock), that a sentinel key is in no message,
-- result or event, and that the same client pins again afterwards.
local server = require "spec.support.server"
local util = require "spec.support.util"

local SENTINEL = "sk-FAULTS-SENTINEL-41c9"

local strings = util.strings

-- A head: status line, then "Name: value" lines, then the blank line.
local function head(status_line, lines)
  return status_line .. "\r\n" .. table.concat(lines, "\r\n") .. (#lines > 0 and "\r\n" or "") .. "\r\n"
end

-- n header lines of exactly size bytes each, CRLF included.
local function big_lines(n, size)
  local lines = {}
  for i = 1, n do
    local name = ("X-Big-%03d: "):format(i)
    lines[i] = name .. ("v"):rep(size - #name - 2)
  end
  return lines
end

local of_type = util.of_type

describe("faults", function()
  local srv

  setup(function() srv = server.start { api_key = SENTINEL } end)
  teardown(function() if srv then srv:stop() end end)

  -- Pins once on a fresh client of s (default srv) after queueing script;
  -- opts override the client's options (retries = 0 unless given). Checks
  -- that the key appears nowhere and, unless opts.base_url points away,
  -- that the client pins again once the fault is over. Returns res, msg,
  -- kind, the requests the server recorded and the events.
  local function run(script, opts, s)
    s = s or srv
    s:reset()
    if script then s:script(script) end
    local events = {}
    local o = { api_key = SENTINEL, retries = 0, on_event = function(ev) events[#events + 1] = ev end }
    for k, v in pairs(opts or {}) do o[k] = v end
    local c = util.client(s, o)
    local res, msg, kind = c:pin { message_id = "m" }
    local reqs = s:requests()
    for _, str in ipairs(strings({ res, msg, kind, events, tostring(c) })) do
      assert.falsy(str:find("SENTINEL", 1, true), ("key leaked in %q"):format(str))
    end
    if res == nil then
      assert.equal("string", type(msg))
      assert.equal(1, msg:find("periskope: POST ", 1, true), msg)
      assert.truthy(msg:find("/v1/message/m/pin", 1, true), msg)
    end
    if not (opts and opts.base_url) then
      s:reset()                         -- drop what the fault left queued
      local again = assert(c:pin { message_id = "after" })
      assert.equal(204, again.status)
    end
    c:close()
    return res, msg, kind, reqs, events
  end

  -- Asserts nil, message, kind with kind `want`; returns the message.
  local function fails(want, res, msg, kind)
    assert.equal(want, kind, msg)
    assert.is_nil(res)
    return msg
  end

  describe("a connection cut by the server", function()
    it("mid-headers is a network failure, retried", function()
      local res, msg, kind, reqs, events = run({ { action = "close_mid_headers" }, { action = "close_mid_headers" } },
        { retries = 1 })
      fails("network", res, msg, kind)
      assert.equal(2, #reqs)
      assert.equal(2, #of_type(events, "failure"))
    end)

    it("mid-body (Content-Length) is a network failure", function()
      local msg = fails("network", run { { action = "close_mid_body" } })
      assert.truthy(msg:find("network error", 1, true), msg)
    end)

    it("mid-chunk is a network failure", function()
      fails("network", run { { action = "raw",
        raw = head("HTTP/1.1 200 OK", { "Transfer-Encoding: chunked" }) .. "a\r\nhello" } })
    end)

    it("between the head and a promised body is a network failure", function()
      fails("network", run { { action = "raw",
        raw = head("HTTP/1.1 200 OK", { "Content-Length: 5" }) } })
    end)

    describe("with a reset (RST), not a close", function()
      local rst

      -- nginx resets, rather than closes, the connections it drops with
      -- 444 when reset_timedout_connection is on (nginx >= 1.15.2).
      setup(function()
        rst = server.start { api_key = SENTINEL, extra_http = "reset_timedout_connection on;" }
      end)
      teardown(function() if rst then rst:stop() end end)

      it("mid-headers and mid-body is a network failure naming the reset", function()
        for _, action in ipairs { "close_mid_headers", "close_mid_body" } do
          local msg = fails("network", run({ { action = action } }, nil, rst))
          assert.truthy(msg:find("reset", 1, true), msg)
        end
      end)

      it("before any byte is a network failure, retried", function()
        local res, msg, kind, reqs = run({ { action = "close" }, { action = "close" } }, { retries = 1 }, rst)
        fails("network", res, msg, kind)
        assert.equal(2, #reqs)
      end)
    end)
  end)

  describe("no answer in time", function()
    it("is a timeout when the body drips slower than timeout, per attempt", function()
      -- 20 bytes at 0.2 s: 4 s per answer, timeout 0.8 s.
      local drip = { action = "drip", drip_bytes = 20, drip_interval = 0.2 }
      local res, msg, kind, reqs = run({ drip, drip }, { timeout = 0.8, retries = 1 })
      fails("timeout", res, msg, kind)
      assert.truthy(msg:find("timed out", 1, true), msg)
      assert.equal(2, #reqs)
      -- The retry starts one timeout plus one backoff (0.5-0.625 s) after
      -- the first request: bytes trickling in do not extend the attempt.
      local gap = util.gaps(reqs)[1]
      assert.truthy(gap >= 1.25 and gap < 2.5, gap)
    end)

    it("is a timeout when the server accepts and never answers", function()
      local t0 = os.time()
      local res, msg, kind, reqs = run({ { delay = 10 } }, { timeout = 0.5 })
      fails("timeout", res, msg, kind)
      assert.equal(1, #reqs)
      assert.truthy(os.time() - t0 <= 3, "took " .. (os.time() - t0) .. " s")
    end)

    it("is a network failure on an empty reply, retried", function()
      local res, msg, kind, reqs = run({ { action = "close" }, { action = "raw", raw = "" }, { action = "close" } },
        { retries = 2 })
      msg = fails("network", res, msg, kind)
      assert.truthy(msg:find("Empty reply", 1, true), msg)
      assert.equal(3, #reqs)
    end)
  end)

  describe("interim (1xx) responses", function()
    it("are skipped: the result is the final 204 with its headers only", function()
      local raw = head("HTTP/1.1 100 Continue", {})
        .. head("HTTP/1.1 103 Early Hints", {
          "Link: </style.css>; rel=preload",
          "X-RateLimit-Remaining: 0",
          "X-Interim: yes",
          "x-periskope-trace-id: interim-trace",
        })
        .. head("HTTP/1.1 204 No Content", {
          "X-RateLimit-Limit: 10",
          "X-RateLimit-Reset: 1700000002",
          "x-periskope-trace-id: final-trace",
        })
      local res = assert(run { { action = "raw", raw = raw } })
      assert.equal(204, res.status)
      assert.is_true(res.ok)
      assert.equal("", res.body)
      assert.equal("final-trace", res.trace_id)
      assert.is_nil(res.headers["link"])
      assert.is_nil(res.headers["x-interim"])
      assert.equal("10", res.headers["X-RateLimit-Limit"])
      assert.same({ limit = 10, reset = 1700000002 }, res.rate_limit)
    end)
  end)

  describe("a storm of interim (1xx) responses", function()
    it("past 256 KiB of heads in all is too_large, not a network failure, and not retried", function()
      -- 20,000 of them: 500,000 bytes of heads before the final one, each
      -- small; libcurl alone would call it a network error (its own 300 KiB
      -- limit), which is retried.
      local raw = ("HTTP/1.1 100 Continue\r\n\r\n"):rep(20000) .. head("HTTP/1.1 204 No Content", {})
      local res, msg, kind, reqs = run({ { action = "raw", raw = raw } }, { retries = 2 })
      msg = fails("too_large", res, msg, kind)
      assert.truthy(msg:find("256 KiB", 1, true), msg)
      assert.equal(1, #reqs)
    end)

    it("under 256 KiB in all is skipped", function()
      local raw = ("HTTP/1.1 100 Continue\r\n\r\n"):rep(1000) .. head("HTTP/1.1 204 No Content", { "X-Last: yes" })
      local res = assert(run { { action = "raw", raw = raw } })
      assert.equal(204, res.status)
      assert.equal("yes", res.headers["x-last"])
    end)
  end)

  describe("folded header lines (obs-fold)", function()
    it("are joined to their field with one space, and a folded rate-limit value is no number", function()
      local res = assert(run { { action = "raw", raw = head("HTTP/1.1 204 No Content", {
        "X-RateLimit-Limit: 10", " 20",
        "X-RateLimit-Remaining: 5",
        "X-Note: one  ", "\t  two", " three",
        "X-RateLimit-Reset: 1700000002",
      }) } })
      assert.equal(204, res.status)
      assert.equal("10 20", res.headers["x-ratelimit-limit"])
      assert.equal("one two three", res.headers["x-note"])
      assert.same({ remaining = 5, reset = 1700000002 }, res.rate_limit)
    end)
  end)

  describe("an HTTP/1.0 body delimited by the close", function()
    it("is read to the end", function()
      local res = assert(run { { action = "raw",
        raw = head("HTTP/1.0 200 OK", { "Content-Type: text/plain" }) .. "hello, world" } })
      assert.equal(200, res.status)
      assert.equal("hello, world", res.body)
      assert.equal("text/plain", res.headers["content-type"])
    end)

    it("chunked, with trailers: a trailer that starts like a status line starts no new head", function()
      local res = run { { action = "raw", raw = head("HTTP/1.1 200 OK", { "Transfer-Encoding: chunked" })
        .. "2\r\nok\r\n0\r\nHTTP/1.1: 500 no\r\nX-After: 1\r\n\r\n" } }
      assert.equal(200, res.status)
      assert.equal("ok", res.body)
      assert.equal("chunked", res.headers["transfer-encoding"])   -- the head was kept
      assert.equal("1", res.headers["x-after"])                    -- trailers join it
    end)

    it("gives the error text of a JSON error body", function()
      local res = assert(run { { action = "raw",
        raw = head("HTTP/1.0 503 Service Unavailable", { "Content-Type: application/json" })
          .. '{"message":"down for maintenance"}' } })
      assert.equal(503, res.status)
      assert.is_false(res.ok)
      assert.equal("down for maintenance", res.error)
    end)

    it("is too_large past max_body, and not retried", function()
      local raw = head("HTTP/1.0 200 OK", {}) .. ("x"):rep(5000)
      local res, msg, kind, reqs = run({ { action = "raw", raw = raw } }, { max_body = 1000, retries = 2 })
      msg = fails("too_large", res, msg, kind)
      assert.truthy(msg:find("max_body", 1, true), msg)
      assert.equal(1, #reqs)
    end)
  end)

  describe("repeated headers", function()
    it("are joined with ', ' in order, in any case of the name", function()
      local res = assert(run { { action = "raw",
        raw = head("HTTP/1.1 204 No Content", { "X-Dup: a", "x-dup: b", "X-DUP: c" }) } })
      assert.equal("a, b, c", res.headers["x-dup"])
      assert.equal("a, b, c", res.headers["X-Dup"])
    end)

    it("sent by the server's header API too", function()
      local res = assert(run { { headers = { ["X-Dup"] = { "1", "2" } } } })
      assert.equal("1, 2", res.headers["x-dup"])
    end)

    it("leave a joined X-RateLimit-* value out of rate_limit", function()
      local res = assert(run { { rate_headers = false, headers = {
        ["X-RateLimit-Limit"] = "10", ["X-RateLimit-Remaining"] = { "9", "8" },
      } } })
      assert.equal("9, 8", res.headers["x-ratelimit-remaining"])
      assert.same({ limit = 10 }, res.rate_limit)
    end)
  end)

  describe("long header lines", function()
    it("over 8 KiB are kept whole", function()
      for _, size in ipairs { 8 * 1024 + 1, 64 * 1024, 99 * 1024 } do
        local value = ("v"):rep(size)
        local res = assert(run { { action = "raw",
          raw = head("HTTP/1.1 204 No Content", { "X-Long: " .. value, "X-After: 1" }) } })
        assert.equal(size, #res.headers["x-long"])
        assert.equal(value, res.headers["x-long"])
        assert.equal("1", res.headers["x-after"])
      end
    end)

    it("over libcurl's 100 KiB line limit are too_large, not a network error", function()
      -- libcurl (CURL_MAX_HTTP_HEADER) refuses a longer line itself and
      -- says "Out of memory"; the head is still under 256 KiB.
      local res, msg, kind, reqs = run({ { action = "raw",
        raw = head("HTTP/1.1 204 No Content", { "X-Long: " .. ("v"):rep(101 * 1024) }) } }, { retries = 2 })
      fails("too_large", res, msg, kind)
      assert.equal(1, #reqs)
    end)

    it("make a head just under 256 KiB that is kept, and one just over that is too_large", function()
      -- 28 lines of 9225 bytes: 258,327 bytes with the status line and
      -- the blank line; 29 lines: 267,552, over the 262,144-byte cap.
      local res = assert(run { { action = "raw",
        raw = head("HTTP/1.1 204 No Content", big_lines(28, 9225)) } })
      assert.equal(204, res.status)
      assert.equal(9225 - #"X-Big-028: " - 2, #res.headers["x-big-028"])
      local _, msg, kind, reqs = run({ { action = "raw",
        raw = head("HTTP/1.1 204 No Content", big_lines(29, 9225)) } }, { retries = 2 })
      assert.equal("too_large", kind, msg)
      assert.truthy(msg:find("256 KiB", 1, true), msg)
      assert.equal(1, #reqs)                -- not retried
    end)
  end)

  describe("header values with a bare CR", function()
    it("never reach the result (RFC 9110 5.5)", function()
      local res = assert(run { { action = "raw", raw = head("HTTP/1.1 204 No Content", {
        "X-Bare: a\rb", "X-Doubled: c\r", "X-Fine: d",
      }) } })
      assert.equal(204, res.status)
      assert.equal("d", res.headers["x-fine"])
      for name, value in pairs(res.headers) do
        assert.falsy(value:find("\r", 1, true), ("%s: %q"):format(name, value))
      end
    end)
  end)

  describe("X-RateLimit-* values that are not whole numbers", function()
    local BAD = { "ten", "-1", "+5", "1e3", "0x10", "12abc", "1.5", "", " ",
      "99999999999999999999", "9007199254740992" }

    it("are left out of rate_limit, the good ones kept", function()
      for _, bad in ipairs(BAD) do
        local res = assert(run { { rate_headers = false, headers = {
          ["X-RateLimit-Limit"] = bad, ["X-RateLimit-Remaining"] = bad, ["X-RateLimit-Reset"] = " 1700000002 ",
        } } })
        assert.equal(204, res.status)
        assert.same({ reset = 1700000002 }, res.rate_limit, bad)
      end
      local res = assert(run { { rate_headers = false, headers = {
        ["X-RateLimit-Limit"] = "ten", ["X-RateLimit-Remaining"] = "-1", ["X-RateLimit-Reset"] = "1e9",
      } } })
      assert.is_nil(res.rate_limit)
    end)

    it("keep 2^53 - 1, the largest exact integer, exactly", function()
      local res = assert(run { { rate_headers = false, headers = {
        ["X-RateLimit-Reset"] = "9007199254740991" } } })
      assert.equal(9007199254740991, res.rate_limit.reset)
      if math.type then assert.equal("integer", math.type(res.rate_limit.reset)) end
    end)

    it("in X-RateLimit-Reset leave the retry wait to the backoff", function()
      for _, bad in ipairs { "99999999999999999999", "-5", "soon" } do
        local res, _, _, reqs, events = run({ { status = 429, rate_headers = false,
          headers = { ["X-RateLimit-Reset"] = bad } } }, { retries = 1 })
        assert.equal(204, res.status)
        assert.equal(2, res.attempts)
        local wait = of_type(events, "wait")[1]
        assert.equal("backoff", wait.reason, bad)
        assert.truthy(wait.seconds >= 0.5 and wait.seconds <= 0.625, wait.seconds)
        local gap = util.gaps(reqs)[1]
        assert.truthy(gap >= 0.45 and gap < 1.2, gap)
      end
    end)

    it("in X-RateLimit-Reset, past the hour after Date or in milliseconds, count as absent: the backoff", function()
      for _, far in ipairs { "9007199254740991", tostring((os.time() + 3700) * 1000),
                             tostring(os.time() + 3700) } do
        local res, _, _, reqs, events = run({ { status = 429, rate_headers = false,
          headers = { ["X-RateLimit-Reset"] = far } } }, { retries = 2 })
        assert.equal(204, res.status, far)
        assert.equal(2, res.attempts)
        assert.equal(2, #reqs)
        local wait = of_type(events, "wait")[1]
        assert.equal("backoff", wait.reason, far)
        assert.truthy(wait.seconds < 1, wait.seconds)
      end
    end)
  end)

  describe("a storm of 429s with Retry-After", function()
    local function storm(n, behaviour)
      local list = {}
      for i = 1, n do list[i] = behaviour end
      return list
    end

    it("of 0 seconds is retried at once until retries run out", function()
      local res, _, _, reqs, events = run(storm(3, { status = 429, headers = { ["Retry-After"] = "0" } }),
        { retries = 2 })
      assert.equal(429, res.status)
      assert.is_false(res.ok)
      assert.equal(3, res.attempts)
      assert.equal(3, #reqs)
      for _, g in ipairs(util.gaps(reqs)) do assert.truthy(g < util.within(0.3), g) end
      local waits = of_type(events, "wait")
      assert.equal(2, #waits)
      for _, w in ipairs(waits) do
        assert.equal("retry-after", w.reason)
        assert.equal(0, w.seconds)
      end
    end)

    it("as a date in the past, on the server's clock, is retried at once", function()
      -- The server's clock runs 5000 s ahead: its Retry-After dates lie
      -- in our future, but in its past, which is what counts.
      local res, _, _, reqs, events = run({
        { status = 429, date_offset = 5000, retry_after_in = -10 },
        { status = 503, date_offset = 5000, retry_after_in = -86400 * 365 },
      }, { retries = 2 })
      assert.equal(204, res.status)
      assert.equal(3, res.attempts)
      for _, g in ipairs(util.gaps(reqs)) do assert.truthy(g < util.within(0.3), g) end
      for _, w in ipairs(of_type(events, "wait")) do
        assert.equal("retry-after", w.reason)
        assert.equal(0, w.seconds)
      end
    end)

    it("far in the future (beyond max_retry_wait) is returned at once, in both forms", function()
      for _, b in ipairs {
        { status = 429, headers = { ["Retry-After"] = "3600" } },
        { status = 429, retry_after_in = 3600 },
        { status = 503, headers = { ["Retry-After"] = "9007199254740991" } },
        -- Too large to represent: a wait longer than any, not an absent
        -- Retry-After that the short backoff would replace.
        { status = 503, headers = { ["Retry-After"] = "99999999999999999999" } },
        { status = 503, headers = { ["Retry-After"] = "1e308" } },
        { status = 503, headers = { ["Retry-After"] = "1" .. ("0"):rep(308) } },
      } do
        local t0 = os.time()
        local res, _, _, reqs, events = run({ b, b, b }, { retries = 2, max_retry_wait = 60 })
        assert.equal(b.status, res.status)
        assert.equal(1, res.attempts)
        assert.equal(1, #reqs)
        assert.equal(0, #of_type(events, "wait"))
        assert.truthy(os.time() - t0 <= 2)
      end
    end)

    it("that is not a number or a date falls back to the backoff", function()
      for _, bad in ipairs { "soon", "-1", "1.5", "1e3", "Sun, 32 Nov 2025 00:00:00 GMT" } do
        local res, _, _, _, events = run({ { status = 429, rate_headers = false,
          headers = { ["Retry-After"] = bad } } }, { retries = 1 })
        assert.equal(204, res.status)
        local wait = of_type(events, "wait")[1]
        assert.equal("backoff", wait.reason, bad)
        assert.truthy(wait.seconds >= 0.5 and wait.seconds <= 0.625, wait.seconds)
      end
    end)
  end)

  describe("proxy variables", function()
    -- A child process, so that the variables are in its environment from
    -- the start (this one cannot set them); a second local server plays
    -- the proxy and records what reaches it.
    local function pin_with_proxy(proxy, base_url)
      local env = ("env http_proxy=%s HTTPS_PROXY=%s https_proxy=%s ALL_PROXY=%s all_proxy=%s no_proxy= NO_PROXY= ")
        :format(proxy.url, proxy.url, proxy.url, proxy.url, proxy.url)
      local out, code = util.run_lua(([[
        local p = require "periskope"
        local c = p.new { api_key = %q, base_url = %q, phone = "1234567", retries = 0,
                          timeout = 5, connect_timeout = 2 }
        local res, msg, kind = c:pin { message_id = "m1" }
        print(res and res.status or "nil", kind, msg)
      ]]):format(SENTINEL, base_url), env)
      assert.equal(0, code, out)
      return out
    end

    it("are ignored for a loopback base_url: the key never reaches a proxy", function()
      local proxy = server.start {}
      finally(function() proxy:stop() end)
      srv:reset()
      local out = pin_with_proxy(proxy, srv.base_url)
      assert.equal("204", out:match("^(%S+)"), out)
      assert.equal(0, #proxy:requests())
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal("/v1/message/m1/pin", reqs[1].uri)
    end)

    it("are honoured for an https base_url: the proxy sees a CONNECT, not the request", function()
      local proxy = server.start {}
      finally(function() proxy:stop() end)
      -- Without the proxy this host would not resolve; through it, the
      -- proxy (nginx, which refuses CONNECT) answers the tunnel request.
      local out = pin_with_proxy(proxy, "https://periskope-proxy-check.invalid/v1")
      assert.falsy(out:find("\tresolve\t", 1, true), out)
      assert.truthy(out:find("CONNECT", 1, true) or out:find("proxy", 1, true), out)
      assert.equal(0, #proxy:requests())          -- no request line of ours got through
      assert.falsy(out:find("SENTINEL", 1, true), out)
    end)
  end)

  describe("a failure message", function()
    it("names its cause even when the URL is long", function()
      -- 300 '/' are 900 bytes of URL once encoded; the cause comes after
      -- the URL in the message, which must not lose it.
      for _, case in ipairs {
        { { base_url = "http://127.0.0.1:1/v1" }, ("/"):rep(300), "Failed to connect" },
        { { base_url = "http://127.0.0.1:1/" .. ("a"):rep(1500) }, "m", "Failed to connect" },
        { { timeout = 0.3, script = { { delay = 3 } } }, ("@"):rep(1000), "timed out" },
      } do
        local opts, id, cause = case[1], case[2], case[3]
        srv:reset()
        if opts.script then srv:script(opts.script) end
        local c = util.client(srv, {
          api_key = SENTINEL, retries = 0, timeout = opts.timeout, base_url = opts.base_url,
        })
        local res, msg, kind = c:pin { message_id = id }
        c:close()
        assert.is_nil(res)
        assert.equal(1, msg:find("periskope: POST ", 1, true), msg)
        assert.truthy(msg:find(cause, 1, true), ("%s: %q"):format(kind, msg))
        assert.falsy(msg:find("SENTINEL", 1, true))
      end
    end)
  end)

  describe("TLS to a plain-HTTP port", function()
    it("is a tls failure, not retried, and nothing reaches the API", function()
      -- connect_timeout covers the handshake, and loading the CA store
      -- takes seconds under valgrind: a short one would make this a
      -- (retried) timeout there.
      local res, msg, kind, reqs, events = run(nil, {
        base_url = "https://127.0.0.1:" .. srv.port .. "/v1", retries = 2, connect_timeout = 20, timeout = 20,
      })
      msg = fails("tls", res, msg, kind)
      assert.truthy(msg:find("TLS", 1, true), msg)
      assert.equal(0, #reqs)
      assert.equal(1, #of_type(events, "failure"))
      assert.equal(1, #of_type(events, "request"))
    end)
  end)
end)
