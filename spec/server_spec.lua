-- Proves the mock Periskope server itself (spec/support/server.lua and
-- mock.lua): every other spec trusts what it answers and records, so this
-- one talks to it with the curl command and raw bash sockets only, never
-- with the periskope module.

-- luacheck: std +busted
local server = require "spec.support.server"

local sh, sq = server.sh, server.quote

local read_file, write_file = server.read_file, server.write_file

-- True while process pid exists and is not a zombie (nothing here reaps
-- nginx: it is a daemon, reparented to init).
-- Whether nginx runs as pid: not a zombie, and still nginx (a busy machine
-- may give the pid of a server just stopped to another process at once).
local function alive(pid)
  local _, code = sh("kill -0 " .. pid .. " 2>/dev/null"
    .. " && [ \"$(cut -d' ' -f3 /proc/" .. pid .. "/stat 2>/dev/null)\" != Z ]"
    .. " && tr '\\0' ' ' < /proc/" .. pid .. "/cmdline 2>/dev/null | grep -q nginx")
  return code == 0
end

local function workers_of(pid)
  local out = sh("pgrep -P " .. pid)
  local list = {}
  for w in out:gmatch("%d+") do list[#list + 1] = tonumber(w) end
  return list
end

-- Parses a curl -D header file: status, {lower name -> first value},
-- {lower name -> every value}.
local function parse_head(text)
  local status = tonumber(text:match("^HTTP/%S+ (%d+)"))
  local first, all = {}, {}
  for name, value in text:gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    name = name:lower()
    first[name] = first[name] or value
    all[name] = all[name] or {}
    table.insert(all[name], value)
  end
  return status, first, all
end

-- Sends one request with the curl command. o (all optional): method (POST),
-- path under base_url ("/message/m1/pin"), headers (name -> value, a list
-- of values, or false to send none; merged over a valid pin request's),
-- body (string, false for none; default {"pin":true}), max_time (10).
-- Returns { status, headers, all (every value per name), body, rc, time }.
local function request(srv, o)
  o = o or {}
  local headers = {
    Authorization = "Bearer " .. srv.api_key,
    ["x-phone"] = "919874532456",
    ["Content-Type"] = "application/json",
  }
  for k, v in pairs(o.headers or {}) do headers[k] = v end
  local hfile, bfile, dfile = os.tmpname(), os.tmpname(), os.tmpname()
  local args = {
    "curl -sS --noproxy '*' --path-as-is --max-time", o.max_time or 10,
    "-D", sq(hfile), "-o", sq(bfile), "-w '%{time_total}'", "-X", o.method or "POST",
  }
  for name, v in pairs(headers) do
    -- "Name:" makes curl drop its own header of that name and send none.
    local values = type(v) == "table" and v or { v or "" }
    for _, value in ipairs(values) do
      args[#args + 1] = "-H " .. sq(name .. ":" .. (value ~= "" and " " .. value or ""))
    end
  end
  local body = o.body
  if body == nil then body = '{"pin":true}' end
  if body then
    write_file(dfile, body)
    args[#args + 1] = "--data-binary " .. sq("@" .. dfile)
  end
  args[#args + 1] = sq(srv.base_url .. (o.path or "/message/m1/pin"))
  local out, rc = sh(table.concat(args, " ") .. " 2>/dev/null")
  local res = { rc = rc, time = tonumber(out), body = read_file(bfile) }
  res.status, res.headers, res.all = parse_head(read_file(hfile))
  os.remove(hfile); os.remove(bfile); os.remove(dfile)
  return res
end

-- Writes bytes on a fresh TCP connection and reads until the server closes
-- it; returns what came back and the exit status (124: the server kept the
-- connection open for 5 s).
local function raw_exchange(srv, bytes)
  local file = os.tmpname()
  write_file(file, bytes)
  local out, code = sh("timeout 5 bash -c " .. sq("exec 3<>/dev/tcp/127.0.0.1/" .. srv.port
    .. " && cat " .. sq(file) .. " >&3 && cat <&3"))
  os.remove(file)
  return out, code
end

local function pin_bytes(srv, path)
  return "POST " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    .. "Authorization: Bearer " .. srv.api_key .. "\r\nx-phone: 919874532456\r\n"
    .. "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"pin\":true}"
end

-- Seconds since the epoch of an HTTP date (days_from_civil, H. Hinnant).
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function http_date(s)
  local d, mon, y, hh, mm, ss = s:match("^%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT$")
  local m = assert(MONTHS[mon], "bad date " .. s)
  y = tonumber(y) - (m <= 2 and 1 or 0)
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + tonumber(d) - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return ((era * 146097 + doe - 719468) * 24 + hh) * 3600 + mm * 60 + ss
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

describe("mock server", function()
  describe("start and stop", function()
    it("runs nginx with its workers until stop, then leaves no process or temp dir", function()
      local srv = server.start{ workers = 2 }
      finally(function() srv:stop() end)
      assert.is_true(alive(srv.pid))
      local workers = workers_of(srv.pid)
      assert.equal(2, #workers)
      assert.is_true(srv.port >= 20000 and srv.port <= 60999)
      assert.equal("http://127.0.0.1:" .. srv.port, srv.url)
      assert.equal(srv.url .. "/v1", srv.base_url)
      assert.equal("test-key", srv.api_key)
      local _, code = sh("test -d " .. sq(srv.dir))
      assert.equal(0, code)

      srv:stop()
      assert.is_false(alive(srv.pid))
      for _, w in ipairs(workers) do assert.is_false(alive(w)) end
      _, code = sh("test -e " .. sq(srv.dir))
      assert.equal(1, code)
      local _, rc = sh("curl -s --noproxy '*' --max-time 2 " .. sq(srv.url) .. " >/dev/null")
      assert.equal(7, rc)                       -- connection refused
      srv:stop()                                -- idempotent
      assert.has_error(function() srv:requests() end, "mock server: already stopped")
    end)

    it("raises with nginx's own error text when nginx cannot start", function()
      local ok, err = pcall(server.start, { extra_http = "no_such_directive on;" })
      assert.is_false(ok)
      assert.matches('unknown directive "no_such_directive"', err, 1, true)
    end)

    it("raises on an unknown or ill-typed option", function()
      assert.has_error(function() server.start{ nope = 1 } end,
                       "mock server: unknown option 'nope'")
      assert.has_error(function() server.start{ workers = "2" } end,
                       "mock server: option 'workers' must be a number, got string")
      assert.has_error(function() server.start{ window = 0 } end,
                       "mock server: option 'window' must be a number > 0")
    end)

    it("with() stops the server and re-raises the error of its function", function()
      local seen
      local boom = setmetatable({}, { __tostring = function() return "boom" end })
      local ok, err = pcall(server.with, {}, function(srv)
        seen = srv
        assert.is_true(alive(srv.pid))
        error(boom)
      end)
      assert.is_false(ok)
      assert.equal(boom, err)                   -- the very same error value
      assert.is_false(alive(seen.pid))
      assert.equal(42, server.with({}, function() return 42 end))
    end)

    it("applies keepalive_timeout, latency, extra_main, extra_server, lua_cpath and records", function()
      local srv = server.start{
        keepalive_timeout = 3, latency = 0.3, records = 3,
        extra_main = "env PERISKOPE_MOCK_PROBE=hello;",
        lua_cpath = "/nonexistent/periskope-probe/?.so",
        extra_server = [[location = /probe { content_by_lua_block {
          ngx.print(os.getenv("PERISKOPE_MOCK_PROBE"), " ", package.cpath) } }]],
      }
      finally(function() srv:stop() end)
      local res = request(srv)
      assert.equal(204, res.status)
      assert.equal("timeout=3", res.headers["keep-alive"])
      assert.is_true(res.time >= 0.3, "answered after " .. res.time .. " s")
      local out = sh("curl -sS --noproxy '*' " .. sq(srv.url .. "/probe"))
      assert.matches("^hello /nonexistent/periskope%-probe/%?%.so;", out)
      assert.truthy(read_file(srv.dir .. "/nginx.conf"):find("lua_shared_dict periskope_mock_requests 3m;", 1, true))
    end)
  end)

  describe("default answer", function()
    local srv
    setup(function() srv = server.start{} end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    it("is 204 with Periskope's headers and no body", function()
      local res = request(srv)
      assert.equal(0, res.rc)
      assert.equal(204, res.status)
      assert.equal("", res.body)
      local h = res.headers
      assert.equal("*", h["access-control-allow-origin"])
      assert.equal("Express", h["x-powered-by"])
      assert.equal("keep-alive", h["connection"])
      assert.equal("timeout=5", h["keep-alive"])
      assert.is_nil(h["server"])
      assert.equal("1000", h["x-ratelimit-limit"])
      assert.equal("999", h["x-ratelimit-remaining"])
      assert.matches(UUID, h["x-periskope-org-id"])
      assert.equal("phone-bqzvyibhmwkaergr", h["x-periskope-phone-id"])
      assert.matches(UUID, h["x-periskope-trace-id"])
      -- The window opened at the whole second nearest this request's
      -- arrival: it ends 2 s after that second, as Periskope's reset is
      -- about 2 s after its Date.
      local t = srv:requests()[1].time
      local reset = tonumber(h["x-ratelimit-reset"])
      assert.equal(math.floor(t + 0.5) + 2, reset, "reset " .. reset .. " for arrival " .. t)
      assert.is_true(math.abs(http_date(h["date"]) - t) <= 1)
      local again = request(srv, { body = '{"pin":false}' })
      assert.equal(204, again.status)
      assert.equal("998", again.headers["x-ratelimit-remaining"])
      assert.equal(h["x-ratelimit-reset"], again.headers["x-ratelimit-reset"])
      assert.are_not.equal(h["x-periskope-trace-id"], again.headers["x-periskope-trace-id"])
    end)

    it("accepts a phone id and every allowed time", function()
      for _, body in ipairs{ '{"pin":true,"time":1}', '{"time":7,"pin":true}',
                             '{"pin":true,"time":30}', ' {"pin":false} ' } do
        local res = request(srv, { headers = { ["x-phone"] = "phone-abc123XYZ" }, body = body })
        assert.equal(204, res.status, body)
        assert.equal("phone-abc123XYZ", res.headers["x-periskope-phone-id"])
      end
      local res = request(srv, { headers = { ["Content-Type"] = "application/json; charset=utf-8" } })
      assert.equal(204, res.status)
    end)

    it("records method, raw uri, headers, body, time and connection", function()
      local before = os.time()
      local res = request(srv, { headers = { ["X-Dup"] = { "a", "b" } } })
      assert.equal(204, res.status)
      local list = srv:requests()
      assert.equal(1, #list)
      local r = list[1]
      assert.equal("POST", r.method)
      assert.equal("/v1/message/m1/pin", r.uri)
      assert.equal('{"pin":true}', r.body)
      assert.equal("Bearer test-key", r.headers["authorization"])
      assert.equal("919874532456", r.headers["x-phone"])
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("12", r.headers["content-length"])
      assert.equal("a, b", r.headers["x-dup"])
      assert.is_true(r.time >= before - 1 and r.time <= os.time() + 1)
      assert.equal(1, r.connection_requests)
      assert.is_number(r.connection)
    end)

    it("keeps the uri's percent-encoding and the body's bytes exactly", function()
      local body = '{"pin":true}\0\r\n\255\128"\\ end'
      local res = request(srv, { path = "/message/a%40b%2F%25%20c%3F/pin?x=%41", body = body })
      assert.equal(400, res.status)            -- not JSON, yet recorded as sent
      local raw = raw_exchange(srv, "POST /v1/message/true_1%40c.us_3EB0/pin HTTP/1.1\r\n"
        .. "Host: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
      assert.matches("^HTTP/1.1 401", raw)
      local list = srv:requests()
      assert.equal(2, #list)
      assert.equal("/v1/message/a%40b%2F%25%20c%3F/pin?x=%41", list[1].uri)
      assert.equal(body, list[1].body)
      assert.equal("/v1/message/true_1%40c.us_3EB0/pin", list[2].uri)
      assert.equal("abc", list[2].body)
      assert.is_nil(list[2].headers["authorization"])
    end)

    it("counts requests on one kept-alive connection", function()
      local url = sq(srv.base_url .. "/message/m1/pin")
      local out = sh("curl -sS --noproxy '*' -o /dev/null -o /dev/null -w '%{http_code}\\n'"
        .. " -X POST -H 'Authorization: Bearer test-key' -H 'x-phone: 919874532456'"
        .. " -H 'Content-Type: application/json' --data-binary '{\"pin\":true}' "
        .. url .. " " .. url)
      assert.equal("204\n204\n", out)
      local list = srv:requests()
      assert.equal(list[1].connection, list[2].connection)
      assert.equal(1, list[1].connection_requests)
      assert.equal(2, list[2].connection_requests)
    end)

    -- Each case: request options, status, message.
    local BAD_PHONE = "x-phone header is missing or invalid"
    local cases = {
      { "no Authorization", { headers = { Authorization = false } }, 401, "Unauthorized" },
      { "a wrong key", { headers = { Authorization = "Bearer other" } }, 401, "Unauthorized" },
      { "a lower-case scheme", { headers = { Authorization = "bearer test-key" } }, 401, "Unauthorized" },
      { "no x-phone", { headers = { ["x-phone"] = false } }, 400, BAD_PHONE },
      { "a short phone", { headers = { ["x-phone"] = "123456" } }, 400, BAD_PHONE },
      { "a long phone", { headers = { ["x-phone"] = "1234567890123456" } }, 400, BAD_PHONE },
      { "a phone with +", { headers = { ["x-phone"] = "+919874532456" } }, 400, BAD_PHONE },
      { "an empty phone id", { headers = { ["x-phone"] = "phone-" } }, 400, BAD_PHONE },
      { "an empty id", { path = "/message//pin" }, 404, "Not found" },
      { "another path", { path = "/messages/m1/pin" }, 404, "Not found" },
      { "a longer path", { path = "/message/a/b/pin" }, 404, "Not found" },
      { "GET", { method = "GET", body = false }, 405, "Method not allowed" },
      { "text/plain", { headers = { ["Content-Type"] = "text/plain" } }, 400, "Content-Type must be application/json" },
      { "no Content-Type", { headers = { ["Content-Type"] = false } }, 400, "Content-Type must be application/json" },
      { "no body", { body = false }, 400, "body must be a JSON object" },
      { "an array", { body = "[true]" }, 400, "body must be a JSON object" },
      { "broken JSON", { body = '{"pin":tru' }, 400, "body is not valid JSON" },
      { "no pin", { body = "{}" }, 400, "pin is required" },
      { "a string pin", { body = '{"pin":"true"}' }, 400, "pin must be a boolean" },
      { "time 5", { body = '{"pin":true,"time":5}' }, 400, "time must be 1, 7 or 30" },
      { "time null", { body = '{"pin":true,"time":null}' }, 400, "time must be 1, 7 or 30" },
      { "an unknown field", { body = '{"pin":true,"until":3}' }, 400, "unknown field 'until'" },
    }
    for _, case in ipairs(cases) do
      local what, o, status, msg = case[1], case[2], case[3], case[4]
      it("answers " .. status .. " to " .. what .. ", with the rate headers, uncounted", function()
        local res = request(srv, o)
        assert.equal(status, res.status)
        assert.equal('{"message":"' .. msg .. '"}', res.body)
        assert.equal("application/json; charset=utf-8", res.headers["content-type"])
        assert.equal("1000", res.headers["x-ratelimit-limit"])
        assert.equal("1000", res.headers["x-ratelimit-remaining"])
        assert.matches("^%d+$", res.headers["x-ratelimit-reset"])
        assert.matches(UUID, res.headers["x-periskope-trace-id"])
        if status == 405 then assert.equal("POST", res.headers["allow"]) end
        assert.equal(1, #srv:requests())
      end)
    end
  end)

  describe("rate limit", function()
    it("answers 429 with Retry-After past the limit, until the window ends", function()
      local srv = server.start{ rate_limit = 3, window = 2, retry_after = true }
      finally(function() srv:stop() end)
      -- Four requests in one 2 s window; on a machine so loaded that the
      -- window turned among them, again in a new one (reset() opens it).
      local seq
      for _ = 1, 3 do
        srv:reset()
        seq = {}
        for i = 1, 4 do seq[i] = request(srv) end
        local one = true
        for i = 2, 4 do one = one and seq[i].headers["x-ratelimit-reset"] == seq[1].headers["x-ratelimit-reset"] end
        if one then break end
      end
      local reset
      for i = 1, 3 do
        local res = seq[i]
        assert.equal(204, res.status)
        assert.equal(tostring(3 - i), res.headers["x-ratelimit-remaining"])
        assert.is_nil(res.headers["retry-after"])
        reset = reset or res.headers["x-ratelimit-reset"]
        assert.equal(reset, res.headers["x-ratelimit-reset"])
      end
      local res = seq[4]
      assert.equal(429, res.status)
      assert.equal('{"message":"Too many requests"}', res.body)
      assert.equal("3", res.headers["x-ratelimit-limit"])
      assert.equal("0", res.headers["x-ratelimit-remaining"])
      assert.equal(reset, res.headers["x-ratelimit-reset"])
      -- Seconds to the window's end, rounded up: a 2 s window that opened at
      -- the nearest whole second lasts 1.5 to 2.5 s.
      local ra = tonumber(res.headers["retry-after"])
      assert.is_true(ra == 1 or ra == 2 or ra == 3, "Retry-After " .. tostring(ra))
      -- A new window: poll (each poll may be a 429) until a 204, 4 s at most.
      local deadline = os.time() + 4
      repeat res = request(srv) until res.status == 204 or os.time() > deadline
      assert.equal(204, res.status)
      assert.equal("2", res.headers["x-ratelimit-remaining"])
      assert.is_true(tonumber(res.headers["x-ratelimit-reset"]) > tonumber(reset))
    end)

    it("sends no Retry-After unless asked, and reset() reopens the window", function()
      local srv = server.start{ rate_limit = 1, window = 60 }
      finally(function() srv:stop() end)
      assert.equal(204, request(srv).status)
      local res = request(srv)
      assert.equal(429, res.status)
      assert.is_nil(res.headers["retry-after"])
      srv:reset()
      assert.equal(204, request(srv).status)
      assert.equal(1, #srv:requests())
    end)
  end)

  describe("scripted behaviours", function()
    local srv
    setup(function() srv = server.start{} end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    it("are consumed one per request, in order, then the default resumes", function()
      assert.equal(5, srv:script{
        { status = 500, body = '{"message":"boom"}' },
        { status = 429, headers = { ["Retry-After"] = "3" }, remaining = 0, reset_in = 10 },
        { body_size = 5000 },
        { status = 503, rate_headers = false },
        { headers = { ["X-Multi"] = { "a", "b" }, ["X-Powered-By"] = false, ["X-Num"] = 7 } },
      })
      assert.equal(5, srv:stats().script)

      local res = request(srv)
      assert.equal(500, res.status)
      assert.equal('{"message":"boom"}', res.body)
      assert.equal("1000", res.headers["x-ratelimit-remaining"])
      assert.matches(UUID, res.headers["x-periskope-trace-id"])

      res = request(srv)
      assert.equal(429, res.status)
      assert.equal("3", res.headers["retry-after"])
      assert.equal("0", res.headers["x-ratelimit-remaining"])
      assert.equal(10, tonumber(res.headers["x-ratelimit-reset"]) - http_date(res.headers["date"]))

      res = request(srv)
      assert.equal(200, res.status)
      assert.equal(string.rep("x", 5000), res.body)

      res = request(srv)
      assert.equal(503, res.status)
      assert.is_nil(res.headers["x-ratelimit-limit"])
      assert.is_nil(res.headers["x-ratelimit-remaining"])
      assert.is_nil(res.headers["x-ratelimit-reset"])
      assert.equal("Express", res.headers["x-powered-by"])

      res = request(srv)
      assert.equal(204, res.status)
      assert.same({ "a", "b" }, res.all["x-multi"])
      assert.equal("7", res.headers["x-num"])
      assert.is_nil(res.headers["x-powered-by"])

      res = request(srv, { headers = { Authorization = false } })
      assert.equal(401, res.status)              -- the script is used up
      assert.equal(6, #srv:requests())
      assert.equal(0, srv:stats().script)
    end)

    it("are dropped by reset()", function()
      srv:script{ { status = 500 }, { status = 500 } }
      srv:reset()
      assert.equal(0, srv:stats().script)
      assert.equal(204, request(srv).status)
    end)

    it("are checked when queued", function()
      assert.has_error(function() srv:script{ { stauts = 500 } } end)
      assert.has_error(function() srv:script{ { action = "explode" } } end)
      assert.has_error(function() srv:script{ status = 500 } end,
                       "mock server: script expects an array of tables")
      assert.has_error(function() srv:script{ { headers = { X = { 1 } } } } end)
      local ok, err = pcall(srv.script, srv, { { status = "500" } })
      assert.is_false(ok)
      assert.matches("field 'status' must be a number", err, 1, true)
      assert.equal(0, srv:stats().script)
    end)

    it("skew the server's clock by date_offset: Date and X-RateLimit-Reset", function()
      srv:script{ { date_offset = -3600 }, { date_offset = 86400, reset_in = 2 } }
      local a, b, c = request(srv), request(srv), request(srv)
      local list = srv:requests()
      assert.is_true(math.abs(http_date(a.headers["date"]) - (list[1].time - 3600)) <= 1)
      assert.is_true(math.abs(http_date(b.headers["date"]) - (list[2].time + 86400)) <= 1)
      assert.equal(1, #a.all["date"])
      -- No window is open: it would end `window` (2) s from now, skewed too.
      local reset = tonumber(a.headers["x-ratelimit-reset"])
      assert.is_true(math.abs(reset - (list[1].time - 3600 + 2)) <= 1)
      assert.equal(2, tonumber(b.headers["x-ratelimit-reset"]) - http_date(b.headers["date"]))
      -- The next, unscripted answer is back on the real clock.
      assert.is_true(math.abs(http_date(c.headers["date"]) - list[3].time) <= 1)
    end)

    it("send Retry-After as an HTTP date on the skewed clock with retry_after_in", function()
      srv:script{ { status = 503, date_offset = -1000, retry_after_in = 2 } }
      local res = request(srv)
      assert.equal(503, res.status)
      assert.equal("0", res.headers["content-length"])
      assert.equal(2, http_date(res.headers["retry-after"]) - http_date(res.headers["date"]))
      local t = srv:requests()[1].time
      assert.is_true(math.abs(http_date(res.headers["date"]) - (t - 1000)) <= 1)
    end)

    it("send the body chunked when headers blank Content-Length", function()
      srv:script{ { status = 200, body_size = 20, headers = { ["Content-Length"] = "" } } }
      local res = request(srv)
      assert.equal(200, res.status)
      assert.is_nil(res.headers["content-length"])
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal(string.rep("x", 20), res.body)
    end)

    it("delay the answer by delay seconds", function()
      srv:script{ { delay = 3 } }
      local res = request(srv, { max_time = 0.5 })
      assert.equal(28, res.rc)                  -- curl: operation timed out
      assert.equal(1, #srv:requests())
    end)

    it("close the connection without an answer", function()
      srv:script{ { action = "close" } }
      local res = request(srv)
      assert.equal(52, res.rc)                  -- curl: empty reply from server
      assert.equal(1, #srv:requests())
    end)

    it("close the connection in the middle of the headers", function()
      srv:script{ { action = "close_mid_headers" } }
      local out, code = raw_exchange(srv, pin_bytes(srv, "/v1/message/m1/pin"))
      assert.equal(0, code)                     -- the server closed it
      assert.equal("HTTP/1.1 204 No Content\r\nX-RateLimit-Li", out)
    end)

    it("close the connection in the middle of the body", function()
      srv:script{ { action = "close_mid_body" }, { action = "close_mid_body" } }
      local out, code = raw_exchange(srv, pin_bytes(srv, "/v1/message/m1/pin"))
      assert.equal(0, code)
      assert.equal("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                   .. string.rep("x", 10), out)
      local res = request(srv)
      assert.equal(18, res.rc)                  -- curl: partial file
      assert.equal(string.rep("x", 10), res.body)
    end)

    it("write raw bytes, then close", function()
      local bytes = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Odd: \1\r\n\r\nh\0\255i"
      srv:script{ { action = "raw", raw = bytes } }
      local out, code = raw_exchange(srv, pin_bytes(srv, "/v1/message/m1/pin"))
      assert.equal(0, code)
      assert.equal(bytes, out)
    end)

    it("drip the body one byte per interval", function()
      srv:script{ { action = "drip", drip_bytes = 4, drip_interval = 0.1 } }
      local res = request(srv)
      assert.equal(0, res.rc)
      assert.equal(200, res.status)
      assert.equal("4", res.headers["content-length"])
      assert.equal("xxxx", res.body)
      assert.is_true(res.time >= 0.35, "took " .. res.time .. " s")
    end)
  end)

  describe("hostile mode", function()
    local srv
    setup(function() srv = server.start{ rate_limit = 100, window = 60 } end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    -- Every answer of one kind: that kind alone has weight.
    local function only(kind, extra, s)
      local settings = { weights = { [kind] = 1 } }
      for k, v in pairs(extra or {}) do settings[k] = v end
      ;(s or srv):hostile(settings)
    end

    it("answers ok as the default does, counted in the window", function()
      only("ok")
      local res = request(srv)
      assert.equal(204, res.status)
      assert.equal("99", res.headers["x-ratelimit-remaining"])
      assert.same({ ok = 1 }, srv:stats().hostile)
    end)

    it("injects 429 with Retry-After, and 503, with the window's headers", function()
      only("too_many", { retry_after = 3 })
      local res = request(srv)
      assert.equal(429, res.status)
      assert.equal("3", res.headers["retry-after"])
      assert.equal('{"message":"Too many requests"}', res.body)
      assert.equal("99", res.headers["x-ratelimit-remaining"])
      only("unavailable")
      res = request(srv)
      assert.equal(503, res.status)
      assert.equal('{"message":"Service unavailable"}', res.body)
      assert.equal("98", res.headers["x-ratelimit-remaining"])
      local st = srv:stats()
      assert.same({ too_many = 1, unavailable = 1 }, st.hostile)
      assert.equal(0, st.over_limit)
      assert.same({ [429] = 1, [503] = 1 }, st.statuses)
    end)

    it("hangs past the client's timeout", function()
      only("hang", { hang = 1 })
      local res = request(srv, { max_time = 0.3 })
      assert.equal(28, res.rc)                  -- curl: operation timed out
      assert.equal(1, #srv:requests())
      assert.same({ hang = 1 }, srv:stats().hostile)
    end)

    it("cuts the connection in the middle of the headers or of the body", function()
      only("cut")
      local seen = {}
      for _ = 1, 20 do
        local out, code = raw_exchange(srv, pin_bytes(srv, "/v1/message/m1/pin"))
        assert.equal(0, code)
        seen[out] = true
      end
      assert.same({
        ["HTTP/1.1 204 No Content\r\nX-RateLimit-Li"] = true,
        ["HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
          .. string.rep("x", 10)] = true,
      }, seen)
    end)

    it("sends resets no window has: an hour and more ahead, or in milliseconds", function()
      only("far_reset", { far_reset = 7200 })
      local seen = {}
      for _ = 1, 20 do
        local res = request(srv)
        assert.equal(204, res.status)
        assert.equal("0", res.headers["x-ratelimit-remaining"])
        local date = http_date(res.headers["date"])
        local reset = tonumber(res.headers["x-ratelimit-reset"])
        local form = reset == date + 7200 and "far" or reset == date * 1000 and "ms" or reset
        seen[form] = true
      end
      assert.same({ far = true, ms = true }, seen)
    end)

    it("answers a request past the window's limit with the window's 429, not a drawn one", function()
      local small = server.start{ rate_limit = 3, window = 60 }
      finally(function() small:stop() end)
      only("too_many", nil, small)
      for _ = 1, 3 do assert.equal(429, request(small).status) end
      local res = request(small)
      assert.equal(429, res.status)
      assert.is_nil(res.headers["retry-after"])  -- the window's: retry_after is off
      local st = small:stats()
      assert.same({ too_many = 3 }, st.hostile)
      assert.equal(1, st.over_limit)
      assert.same({ [429] = 4 }, st.statuses)
      local marked = {}
      for i, q in ipairs(small:requests()) do marked[i] = q.over_limit or false end
      assert.same({ false, false, false, true }, marked)
      -- A refused request is refused as Periskope does, neither drawn nor counted.
      assert.equal(401, request(small, { headers = { Authorization = false } }).status)
      assert.same({ too_many = 3 }, small:stats().hostile)
    end)

    it("draws every kind by weight", function()
      srv:hostile{ weights = { ok = 1, unavailable = 1 } }
      local codes = {}
      for _ = 1, 3 do
        local res = request(srv)
        codes[res.status] = (codes[res.status] or 0) + 1
      end
      local st = srv:stats()
      assert.equal(3, (st.hostile.ok or 0) + (st.hostile.unavailable or 0))
      assert.equal(codes[204], st.hostile.ok)
      assert.equal(codes[503], st.hostile.unavailable)
    end)

    it("refuses bad settings, and turns off with false or reset()", function()
      local bad = {
        { { weights = { ok = 1 }, hnag = 1 }, "unknown field 'hnag'" },
        { { weights = { boom = 1 } }, "weights: unknown kind 'boom'" },
        { { weights = { ok = -1 } }, "weights: 'ok' must be a number >= 0" },
        { { weights = { ok = 0 } }, "weights: at least one must be > 0" },
        { { hang = 1 }, "field 'weights' is required" },
        { { weights = { hang = 1 }, hang = 0 }, "field 'hang' must be in (0, 3600]" },
        { { weights = { far_reset = 1 }, far_reset = 60 }, "field 'far_reset' must be in (3600, 1e9]" },
      }
      for _, case in ipairs(bad) do
        local ok, err = pcall(srv.hostile, srv, case[1])
        assert.is_false(ok)
        assert.matches(case[2], err, 1, true)
      end
      assert.equal(204, request(srv).status)    -- none of them took effect
      only("unavailable")
      assert.equal(503, request(srv).status)
      srv:hostile(false)
      assert.equal(204, request(srv).status)
      only("unavailable")
      srv:reset()
      assert.equal(204, request(srv).status)
      assert.same({}, srv:stats().hostile)
    end)
  end)

  describe("with tls", function()
    it("answers https on a second port, for localhost, under a CA of its own", function()
      local srv = server.start { tls = true }
      finally(function() srv:stop() end)
      assert.equal("https://localhost:" .. srv.tls_port .. "/v1", srv.https_base_url)
      local url = srv.https_base_url .. "/message/m1/pin"
      local common = "curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' -X POST"
        .. " -H " .. sq("Authorization: Bearer " .. srv.api_key) .. " -H 'x-phone: 919874532456'"
        .. " -H 'Content-Type: application/json' --data-binary '{\"pin\":true}' "
      -- Verified against its CA, by name (localhost resolves) and by address.
      local out, rc = sh(common .. "--cacert " .. sq(srv.ca_file) .. " " .. sq(url))
      assert.equal(0, rc, out)
      assert.equal("204", out)
      out, rc = sh(common .. "--cacert " .. sq(srv.ca_file) .. " "
        .. sq("https://127.0.0.1:" .. srv.tls_port .. "/v1/message/m2/pin"))
      assert.equal(0, rc, out)
      assert.equal("204", out)
      -- Not by the system's store: the CA is the server's alone.
      out, rc = sh(common .. sq(url) .. " 2>&1")
      assert.equal(60, rc, out)           -- CURLE_PEER_FAILED_VERIFICATION
      assert.equal(2, #srv:requests())
      -- The plain port still answers the control API and plain pins.
      assert.equal(204, request(srv).status)
    end)
  end)

  describe("with two workers", function()
    it("keeps one script queue, one rate window and one record list", function()
      local srv = server.start{ workers = 2, rate_limit = 10 }
      finally(function() srv:stop() end)
      local url = sq(srv.base_url .. "/message/m1/pin")
      local cmd = "curl -sS --noproxy '*' --parallel --parallel-immediate --parallel-max 30"
        .. " -w '%{http_code}\\n' -X POST -H 'Authorization: Bearer test-key'"
        .. " -H 'x-phone: 919874532456' -H 'Content-Type: application/json'"
        .. " --data-binary '{\"pin\":true}'"
        .. string.rep(" -o /dev/null " .. url, 30) .. " 2>/dev/null"  -- one -o per URL
      -- Which worker accepts a connection is up to the kernel: repeat until
      -- both took part, checking every round.
      local workers = {}
      for _ = 1, 10 do
        srv:reset()
        srv:script{ { status = 201 }, { status = 202 }, { status = 203 } }
        local count = {}
        for code in sh(cmd):gmatch("%d+") do count[code] = (count[code] or 0) + 1 end
        assert.same({ ["201"] = 1, ["202"] = 1, ["203"] = 1, ["204"] = 10, ["429"] = 17 }, count)
        local list = srv:requests()
        assert.equal(30, #list)
        workers = {}
        for _, r in ipairs(list) do workers[r.worker] = true end
        if next(workers, next(workers)) then break end
      end
      local expected = {}
      for _, w in ipairs(workers_of(srv.pid)) do expected[w] = true end
      assert.same(expected, workers)            -- both workers answered
    end)
  end)
end)

-- The script a user runs a command or a host under (make demo does):
-- its flags, its environment, its exit status.
describe("spec/support/run_with_server.lua", function()
  local hosts = require "spec.support.hosts"
  local RUN = sq(os.getenv("PERISKOPE_LUA") or "lua5.4") .. " "
    .. sq(hosts.root() .. "/spec/support/run_with_server.lua")

  -- Runs it with `words` (shell words), env before it; stdout, stderr, status.
  local function run(words, env)
    local tmp = os.tmpname()
    local out, code = sh((env or "") .. " " .. RUN .. " " .. words .. " 2>" .. sq(tmp) .. " </dev/null")
    local err = read_file(tmp)
    os.remove(tmp)
    return out, err, code
  end

  -- A command that pins twice with the curl command, from the environment
  -- it was given, and prints each answer's head, curl's seconds and "--".
  local PIN_TWICE = [[for i in 1 2; do curl -sS --noproxy '*' -D - -o /dev/null -w '%{time_total}\n--\n' ]]
    .. [[-X POST -H "Authorization: Bearer $PERISKOPE_API_KEY" -H "x-phone: $PERISKOPE_PHONE" ]]
    .. [[-H 'Content-Type: application/json' --data-binary '{"pin":true}' "$PERISKOPE_BASE_URL/message/m$i/pin"; ]]
    .. [[done]]

  -- The answers PIN_TWICE printed: { status, headers, seconds } each.
  local function answers(out)
    local list = {}
    for block in out:gmatch("(.-)\n%-%-\n") do
      local head, seconds = block:match("^(.*)\n([%d.]+)$")
      local status, headers = parse_head(head or "")
      list[#list + 1] = { status = status, headers = headers, seconds = tonumber(seconds) }
    end
    return list
  end

  it("--help says every flag and its default, and exits 0 running nothing", function()
    for _, flag in ipairs { "--help", "-h" } do
      local out, err, code = run(flag .. " -- touch /nonexistent/x")
      assert.equal(0, code, err)
      assert.equal("", err)
      for _, line in ipairs { "--rate-limit N   requests allowed per window, then 429 (default 1000)",
        "--window S       the window, in seconds (default 2)",
        "--latency S      seconds the server waits before each answer (default 0)",
        "--retry-after    429s carry Retry-After", "PERISKOPE_BASE_URL", "PERISKOPE_API_KEY",
        "PERISKOPE_PHONE" } do
        assert.truthy(out:find(line, 1, true), line)
      end
    end
  end)

  it("gives the command the server's URL, key and phone, whatever the environment says; then its status", function()
    local out, err, code = run("-- sh -c " .. sq(PIN_TWICE .. "; exit 3"),
      "PERISKOPE_API_KEY=real-key PERISKOPE_BASE_URL=https://example.com/v1 PERISKOPE_PHONE=1234567")
    assert.equal(3, code, err)
    local a = answers(out)
    assert.equal(2, #a, out)
    -- The defaults --help gives: 1000 a window of 2 s, no wait, 204s.
    for _, res in ipairs(a) do
      assert.equal(204, res.status)
      assert.equal("1000", res.headers["x-ratelimit-limit"])
      local left = tonumber(res.headers["x-ratelimit-reset"]) - os.time()
      assert.truthy(left >= -1 and left <= 3, left)
    end
    assert.equal("999", a[1].headers["x-ratelimit-remaining"])
  end)

  it("--rate-limit, --window, --retry-after and --latency shape the server's answers", function()
    local out, err, code = run("--rate-limit 1 --window 30 --retry-after --latency 0.3 -- sh -c " .. sq(PIN_TWICE))
    assert.equal(0, code, err)
    local a = answers(out)
    assert.equal(2, #a, out)
    assert.equal(204, a[1].status)
    assert.equal("1", a[1].headers["x-ratelimit-limit"])
    local left = tonumber(a[1].headers["x-ratelimit-reset"]) - os.time()
    assert.truthy(left > 20 and left <= 31, left)
    assert.equal(429, a[2].status)
    local ra = tonumber(a[2].headers["retry-after"])
    assert.truthy(ra and ra > 20 and ra <= 31, a[2].headers["retry-after"])
    for _, res in ipairs(a) do assert.truthy(res.seconds >= 0.3, res.seconds) end
  end)

  it("refuses a flag's bad value, naming the flag and what it accepts, and runs nothing", function()
    local dir = sh("mktemp -d"):match("[^\n]+")
    finally(function() sh("rm -rf " .. sq(dir)) end)
    local touch = " -- touch " .. sq(dir .. "/ran")
    for _, case in ipairs {
      { "--window 0" .. touch, "--window must be a number of seconds > 0, got '0'" },
      { "--latency -1" .. touch, "--latency must be a number of seconds >= 0, got '-1'" },
      { "--rate-limit 1.5" .. touch, "--rate-limit must be a whole number >= 0, got '1.5'" },
      { "--rate-limit", "--rate-limit must be a whole number >= 0, got nothing" },
      { "--nope" .. touch, "unknown argument '--nope'" },
      { "--window 1 --", "no command given after --" },
    } do
      local out, err, code = run(case[1])
      assert.equal(2, code, case[1])
      assert.equal("", out)
      assert.truthy(err:find("run_with_server: " .. case[2] .. "\n", 1, true), err)
      assert.truthy(err:find("usage: run_with_server.lua", 1, true), err)
      assert.is_nil(read_file(dir .. "/ran"))
    end
  end)
end)
