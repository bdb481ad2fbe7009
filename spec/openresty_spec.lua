-- periskope inside nginx's Lua module (LuaJIT): the recipe of doc/openresty.md,
-- examples/openresty/{main.conf,http.conf,server.conf,pin_handlers.lua},
-- run as is by an "app" nginx in front of a second nginx, the local
-- Periskope server, which answers over TLS at https://localhost:<port>
-- under a CA of its own: the app's pins resolve a name and verify a
-- certificate, as they do against the real API. Two servers, because the
-- client made in init_by_lua pins once there, in the process that forks
-- the workers, and nginx opens its own listening socket only after
-- init_by_lua has run.
--
-- The mock's `worker` field names its own worker, not the client's; the
-- app's answers name the worker that pinned, and the message ids join the
-- two, so every connection the mock saw is tied to the process that sent
-- on it.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local dns = require "spec.support.dns"
local util = require "spec.support.util"
local cjson = require("cjson").new()
local socket = require "socket"

local sh, sq = server.sh, server.quote

local EXAMPLES = "examples/openresty/"
local UUID = "^%x+%-%x+%-%x+%-%x+%-%x+$"
local INIT_CALL = 'require("pin_handlers").init()'

-- Decodes an answer of the app: a JSON object, or raises showing the text.
local function decode(text)
  local ok, t = pcall(cjson.decode, text)
  assert(ok and type(t) == "table", "not a JSON object: " .. tostring(text))
  return t
end

-- The message id in a recorded /v1/message/<id>/pin URI.
local function id_of(req)
  return req.uri:match("^/v1/message/([^/]+)/pin$")
end

local function set_size(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function example(file) return hosts.read_file(hosts.root() .. "/" .. EXAMPLES .. file) end

-- The stub DNS server the apps' resolver asks: localhost is the mock.
local resolver

-- The example's http.conf with this machine's resolver and the mock's CA
-- in place of the public ones it names.
local function local_http(text, periskope_srv)
  local n1, n2
  text, n1 = text:gsub("resolver [^;]+;", "resolver 127.0.0.1:" .. resolver.port .. " ipv6=off;")
  text, n2 = text:gsub("lua_ssl_trusted_certificate [^;]+;",
    "lua_ssl_trusted_certificate " .. (periskope_srv.ca_file or "/etc/ssl/certs/ca-certificates.crt") .. ";")
  assert(n1 == 1 and n2 == 1, "http.conf names no resolver or CA file")
  return text
end

-- An app nginx running the example as it is, against periskope_srv, with
-- test-only text added to its http { } and server { }.
local function start_app(periskope_srv, o)
  local root = hosts.root()
  resolver = resolver or dns.start { localhost = "127.0.0.1" }
  return server.start {
    workers = o.workers or 1,
    -- Connections spread over the workers by the kernel: a worker that
    -- does not block would otherwise take them all.
    reuseport = (o.workers or 1) > 1,
    lua_cpath = hosts.cpath(),
    lua_path = root .. "/" .. EXAMPLES .. "?.lua;" .. root .. "/lua/?.lua",
    env = {
      PERISKOPE_API_KEY = periskope_srv.api_key,
      PERISKOPE_BASE_URL = periskope_srv.https_base_url or periskope_srv.base_url,
      PERISKOPE_CA_FILE = periskope_srv.ca_file,
      PERISKOPE_PHONE = util.PHONE,
    },
    extra_main = example("main.conf"),
    extra_http = local_http(o.http or example("http.conf"), periskope_srv) .. (o.extra_http or ""),
    extra_server = example("server.conf") .. (o.extra_server or ""),
  }
end

-- GETs every url of app at once (curl --parallel), into dir; returns the
-- bodies in order, and each transfer's seconds.
local function get_all(app, dir, urls)
  local args = {}
  for i, url in ipairs(urls) do
    args[#args + 1] = sq(app.url .. url) .. " -o " .. sq(dir .. "/" .. i)
  end
  local out, code = sh("curl -sS --noproxy '*' --max-time 20 --parallel --parallel-immediate --parallel-max 64 "
    .. "-w '%{time_total}\\n' " .. table.concat(args, " ") .. " 2>&1")
  assert(code == 0, "curl: " .. out)
  local bodies, times = {}, {}
  for i = 1, #urls do
    bodies[i] = hosts.read_file(dir .. "/" .. i)
    os.remove(dir .. "/" .. i)
  end
  for t in out:gmatch("[^\r\n]+") do times[#times + 1] = tonumber(t:match("^([%d.]+)$")) end
  return bodies, times
end

-- One GET, in this process.
local function get(app, path)
  local http = require "socket.http"
  local body, status = http.request(app.url .. path)
  assert(body, status)
  return decode(body), status
end

describe("OpenResty", function()
  local dir
  setup(function() dir = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-openresty.XXXXXX\""):match("[^\n]+") end)
  teardown(function()
    if dir then sh("rm -rf " .. sq(dir)) end
    if resolver then resolver:stop() end
  end)

  it("is quoted verbatim by doc/openresty.md", function()
    for _, file in ipairs { "main.conf", "http.conf", "server.conf", "pin_handlers.lua" } do
      assert.is_true(hosts.readme_quotes(EXAMPLES .. file), file)
    end
  end)

  describe("the example, 4 workers, over https", function()
    local periskope_srv, app

    setup(function()
      periskope_srv = server.start { tls = true, rate_limit = 100000, latency = 0.005 }
      -- The example's init_by_lua, plus one pin from the process that runs
      -- it, so that the client holds an open connection when the workers fork.
      local http, n = example("http.conf"):gsub(
        INIT_CALL:gsub("%p", "%%%0"), "%0\n    local stat = io.open('/proc/self/stat')"
          .. "\n    INIT = { pid = stat:read('*n'), res = require('pin_handlers').client:pin { message_id = 'init' } }"
          .. "\n    stat:close()", 1)
      assert(n == 1, "http.conf has no " .. INIT_CALL)
      app = start_app(periskope_srv, { workers = 4, http = http, extra_http = [[
        lua_shared_dict test_results 1m;
      ]], extra_server = [[
        # Test only: what init_by_lua's pin got; the other phases and
        # misuses of periskope.ngx.pin.
        location = /t/init {
          content_by_lua_block {
            ngx.say(require("cjson").encode { pid = INIT.pid, status = INIT.res and INIT.res.status })
          }
        }
        location = /t/rewrite {
          rewrite_by_lua_block {
            local res = require("periskope.ngx").pin(require("pin_handlers").client, { message_id = "rewrite" })
            ngx.say(require("cjson").encode { status = res.status, phase = ngx.get_phase() })
            return ngx.exit(200)
          }
        }
        location = /t/access {
          access_by_lua_block {
            local res = require("periskope.ngx").pin(require("pin_handlers").client, { message_id = "access" })
            ngx.say(require("cjson").encode { status = res.status, phase = ngx.get_phase() })
            return ngx.exit(200)
          }
        }
        location = /t/timer {
          content_by_lua_block {
            ngx.timer.at(0, function()
              local res, err = require("periskope.ngx").pin(require("pin_handlers").client, { message_id = "timer" })
              ngx.shared.test_results:set("timer", require("cjson").encode {
                status = res and res.status, err = err, phase = ngx.get_phase() })
            end)
            ngx.say("{}")
          }
        }
        location = /t/timer/result {
          content_by_lua_block { ngx.say(ngx.shared.test_results:get("timer") or "{}") }
        }
        location = /t/set {
          set_by_lua_block $answer {
            local ok, err = pcall(require("periskope.ngx").pin, require("pin_handlers").client, { message_id = "set" })
            return require("cjson").encode { ok = ok, err = err }
          }
          return 200 $answer;
        }
      ]] })
    end)

    teardown(function()
      if app then app:stop() end
      if periskope_srv then periskope_srv:stop() end
    end)

    before_each(function() if periskope_srv then periskope_srv:reset() end end)

    it("pins from init_by_lua, before the workers fork", function()
      local init = get(app, "/t/init")
      assert.equal(204, init.status)
      assert.are_not.equal(app.pid, init.pid)      -- nginx daemonizes after init
    end)

    it("pins without blocking: https to a name it resolves, verified by the server's own CA", function()
      local t = get(app, "/pin?id=a%40b%2Fc")
      assert.same({ true, 204, 1 }, { t.ok, t.status, t.attempts }, cjson.encode(t))
      assert.matches(UUID, t.trace_id)
      assert.equal(100000, t.rate_limit.limit)
      local r = periskope_srv:requests()
      assert.equal(1, #r)
      r = r[1]
      assert.equal("POST", r.method)
      assert.equal("/v1/message/a%40b%2Fc/pin", r.uri)
      assert.equal('{"pin":true}', r.body)
      assert.equal("Bearer " .. periskope_srv.api_key, r.headers.authorization)
      assert.equal(util.PHONE, r.headers["x-phone"])
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("application/json", r.headers.accept)
      assert.matches("^periskope%-lua/", r.headers["user-agent"])
      assert.equal("localhost:" .. periskope_srv.tls_port, r.headers.host)
    end)

    it("unpins, and pins for a time", function()
      assert.equal(204, get(app, "/pin?id=u1&unpin=1").status)
      assert.equal(204, get(app, "/pin?id=t7&time=7").status)
      local r = periskope_srv:requests()
      assert.equal('{"pin":false}', r[1].body)
      assert.equal('{"pin":true,"time":7}', r[2].body)
    end)

    it("refuses what pin refuses, before anything is sent: a 400 with the reason, no file path", function()
      local t, status = get(app, "/pin?id=..")
      assert.equal(400, status)
      assert.equal(1, t.error:find("bad argument #1 to 'pin' (field 'message_id'", 1, true), t.error)
      t = get(app, "/pin?id=x&time=5")
      assert.truthy(t.error:find("field 'time' must be 1, 7 or 30", 1, true), t.error)
      t = get(app, "/pin/blocking?id=..")
      assert.equal(1, t.error:find("bad argument #1 to 'pin' (field 'message_id'", 1, true), t.error)
      assert.equal(0, #periskope_srv:requests())
    end)

    it("retries and waits as pin does, on_event running in the worker (ngx.log works there)", function()
      periskope_srv:script { { status = 503, rate_headers = false, headers = { ["Retry-After"] = "1" } } }
      local t = get(app, "/pin?id=again")
      assert.same({ true, 204, 2 }, { t.ok, t.status, t.attempts })
      local g = util.gaps(periskope_srv:requests())[1]
      assert.truthy(g >= 0.95, g)
      local log = server.read_file(app.dir .. "/error.log") or ""
      assert.truthy(log:find("periskope: wait retry-after 1", 1, true), log)
    end)

    it("says why no answer came: kind and error", function()
      -- Closed unanswered, every time (a kept-alive connection found closed
      -- is sent again once, uncounted: more closes than attempts).
      local closes = {}
      for i = 1, 8 do closes[i] = { action = "close" } end
      periskope_srv:script(closes)
      local t, status = get(app, "/pin?id=gone")
      assert.equal(502, status)
      assert.equal("network", t.kind)
      assert.equal(1, t.error:find("periskope: POST https://localhost:" .. periskope_srv.tls_port
        .. "/v1/message/gone/pin: ", 1, true), t.error)
      assert.truthy(#periskope_srv:requests() >= 3)
    end)

    it("pins from rewrite, access and timer handlers too", function()
      assert.same({ status = 204, phase = "rewrite" }, get(app, "/t/rewrite"))
      assert.same({ status = 204, phase = "access" }, get(app, "/t/access"))
      get(app, "/t/timer")
      local deadline = socket.gettime() + 10
      local t = {}
      while t.status == nil and socket.gettime() < deadline do
        socket.sleep(0.02)
        t = get(app, "/t/timer/result")
      end
      assert.same({ status = 204, phase = "timer" }, t)
    end)

    it("says what to do from a phase that cannot wait", function()
      local t = get(app, "/t/set")
      assert.is_false(t.ok)
      assert.equal(1, t.err:find("periskope: periskope.ngx.pin cannot wait in the set phase", 1, true), t.err)
      assert.equal(0, #periskope_srv:requests())
    end)

    it("pins from many workers at once; no connection is shared between processes", function()
      local urls = {}
      for i = 1, 24 do
        urls[#urls + 1] = "/pin?id=nb-" .. i
        urls[#urls + 1] = "/pin/blocking?id=b-" .. i
      end
      local bodies = get_all(app, dir, urls)
      local worker_of, workers = {}, {}   -- message id -> pid of the app worker
      for i, body in ipairs(bodies) do
        local t = decode(body)
        assert.same({ true, 204, 1 }, { t.ok, t.status, t.attempts }, urls[i])
        worker_of[urls[i]:match("id=(.*)")] = t.worker
        workers[t.worker] = true
      end
      assert.is_true(set_size(workers) >= 2, "one worker answered everything")
      local children = {}
      for pid in sh("pgrep -P " .. app.pid):gmatch("%d+") do children[tonumber(pid)] = true end
      for pid in pairs(workers) do assert.is_true(children[pid], "not a worker of the app: " .. pid) end
      -- A connection carries the pins of one process only.
      local senders = {}
      for _, r in ipairs(periskope_srv:requests()) do
        local pid = worker_of[id_of(r)]
        if pid then
          senders[r.connection] = senders[r.connection] or {}
          senders[r.connection][pid] = true
        end
      end
      for conn, pids in pairs(senders) do
        assert.equal(1, set_size(pids), "connection " .. conn .. " used by several processes")
      end
    end)
  end)

  -- A second per answer: a blocked worker holds /plain for up to that
  -- long, far beyond what a loaded machine adds to a free one's answer.
  describe("one worker, a server answering after 1 s", function()
    local periskope_srv, app

    setup(function()
      periskope_srv = server.start { latency = 1, rate_limit = 100000 }
      app = start_app(periskope_srv, { workers = 1, extra_server = [[
        location = /plain { return 200 "{}"; }
      ]] })
    end)

    teardown(function()
      if app then app:stop() end
      if periskope_srv then periskope_srv:stop() end
    end)

    -- Sends urls at once in the background and, until all are answered,
    -- GETs /plain on the same worker every 10 ms. Returns the answers, the
    -- seconds each took, and the seconds of every /plain.
    local function pins_beside_plain(urls)
      local args = {}
      for i, url in ipairs(urls) do args[#args + 1] = sq(app.url .. url) .. " -o " .. sq(dir .. "/b" .. i) end
      sh("(curl -sS --noproxy '*' --max-time 30 --parallel --parallel-immediate --parallel-max 64"
        .. " -w '%{time_total}\\n' " .. table.concat(args, " ") .. " > " .. sq(dir .. "/times")
        .. " 2>&1; touch " .. sq(dir .. "/done") .. ") >/dev/null 2>&1 </dev/null &")
      local http = require "socket.http"
      local plain = {}
      local deadline = socket.gettime() + 30
      while not server.read_file(dir .. "/done") do
        assert(socket.gettime() < deadline, "the pins took over 30 s")
        local t0 = socket.gettime()
        assert(http.request(app.url .. "/plain"))
        plain[#plain + 1] = socket.gettime() - t0
        socket.sleep(0.01)
      end
      local bodies, times = {}, {}
      for i = 1, #urls do
        bodies[i] = decode(hosts.read_file(dir .. "/b" .. i))
        os.remove(dir .. "/b" .. i)
      end
      local text = hosts.read_file(dir .. "/times")
      for t in text:gmatch("[^\r\n]+") do times[#times + 1] = tonumber(t:match("^([%d.]+)$")) end
      assert(#times == #urls, "curl: " .. text)
      os.remove(dir .. "/times")
      os.remove(dir .. "/done")
      return bodies, times, plain
    end

    local function max(list)
      local m = 0
      for _, v in ipairs(list) do if v > m then m = v end end
      return m
    end

    it("answers 32 pins at once within 2 s while another location answers at once", function()
      periskope_srv:reset()
      assert.equal(204, get(app, "/pin?id=warm").status)   -- the budget learned
      local urls = {}
      for i = 1, 32 do urls[i] = "/pin?id=c" .. i end
      local bodies, times, plain = pins_beside_plain(urls)
      for i, t in ipairs(bodies) do assert.equal(204, t.status, urls[i]) end
      assert.equal(32, #times)
      assert.truthy(max(times) < util.within(2), "slowest pin " .. max(times) .. " s")
      -- The plain location kept answering at once; its slowest answer (on a
      -- machine this suite keeps busy) stays well under one blocked pin.
      assert.truthy(#plain >= 3, #plain)
      table.sort(plain)
      assert.truthy(plain[math.ceil(#plain / 2)] < util.within(0.05), "median /plain " .. plain[math.ceil(#plain / 2)])
      assert.truthy(max(plain) < util.within(0.6), "slowest /plain " .. max(plain) .. " s")
    end)

    it("unlike the blocking pin, which holds the worker", function()
      local urls = {}
      for i = 1, 2 do urls[i] = "/pin/blocking?id=b" .. i end
      local bodies, times, plain = pins_beside_plain(urls)
      for i, t in ipairs(bodies) do assert.equal(204, t.status, urls[i]) end
      -- One at a time: the second waits for the first.
      assert.truthy(max(times) >= 1.9, "slowest pin " .. max(times) .. " s")
      assert.truthy(max(plain) >= 0.8, "slowest /plain " .. max(plain) .. " s")
    end)
  end)

  describe("pins in flight when nginx reloads or quits", function()
    -- Sends n pins at once in the background; returns a function that
    -- waits for them and gives their answers.
    local function pins_in_background(app, n, tag)
      local args = {}
      for i = 1, n do
        args[#args + 1] = sq(app.url .. "/pin?id=" .. tag .. i) .. " -o " .. sq(dir .. "/" .. tag .. i)
      end
      sh("(curl -sS --noproxy '*' --max-time 30 --parallel --parallel-immediate " .. table.concat(args, " ")
        .. " >/dev/null 2>&1; touch " .. sq(dir .. "/" .. tag .. "done") .. ") >/dev/null 2>&1 </dev/null &")
      return function()
        util.wait_for("the pins' answers", 30, function() return server.read_file(dir .. "/" .. tag .. "done") end)
        local out = {}
        for i = 1, n do
          out[i] = server.read_file(dir .. "/" .. tag .. i) or ""
          os.remove(dir .. "/" .. tag .. i)
        end
        os.remove(dir .. "/" .. tag .. "done")
        return out
      end
    end

    for _, sig in ipairs { "HUP", "QUIT" } do
      it(("answers every pin in flight across a %s of the master"):format(sig), function()
        local periskope_srv = server.start { latency = 1.5, rate_limit = 100000 }
        local app = start_app(periskope_srv, { workers = 1 })
        local warm = get(app, "/pin?id=warm")                -- the budget learned
        assert.equal(204, warm.status, cjson.encode(warm))
        local wait = pins_in_background(app, 8, sig)
        util.wait_for("the pins to reach the server", 10, function() return #periskope_srv:requests() >= 9 end)
        sh("kill -" .. sig .. " " .. app.pid)
        local answers = wait()
        for i, body in ipairs(answers) do
          local t = decode(body)
          assert.same({ true, 204 }, { t.ok, t.status }, sig .. " pin " .. i)
        end
        local log = server.read_file(app.dir .. "/error.log") or ""
        assert.falsy(log:find("left in connection", 1, true), log)
        assert.falsy(log:find("[alert]", 1, true), log)
        app:stop()
        periskope_srv:stop()
      end)
    end
  end)

  describe("pacing shared by 4 workers (a shared dictionary)", function()
    local periskope_srv, app

    setup(function()
      periskope_srv = server.start { rate_limit = 5, window = 1 }
      app = start_app(periskope_srv, { workers = 4 })
    end)

    teardown(function()
      if app then app:stop() end
      if periskope_srv then periskope_srv:stop() end
    end)

    it("keeps to the key's budget without a 429: pins wait with ngx.sleep", function()
      local urls = {}
      for i = 1, 12 do urls[i] = "/pin?id=p" .. i end
      local bodies = get_all(app, dir, urls)
      local workers = {}
      for i, body in ipairs(bodies) do
        local t = decode(body)
        assert.same({ true, 204, 1 }, { t.ok, t.status, t.attempts }, urls[i])
        workers[t.worker] = true
      end
      assert.is_true(set_size(workers) >= 2, "one worker answered everything")
      local st = periskope_srv:stats()
      assert.equal(12, st.requests)
      assert.is_nil(st.statuses[429])
      local log = server.read_file(app.dir .. "/error.log") or ""
      assert.truthy(log:find("periskope: wait rate-limit", 1, true), log)
    end)
  end)
end)
