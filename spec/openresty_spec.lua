-- periskope inside nginx's Lua module (LuaJIT): the README's OpenResty
-- recipe, examples/openresty/{http.conf,server.conf,pin_handlers.lua}, run
-- as is by an "app" nginx with 4 workers in front of a second nginx, the
-- local Periskope server. Two servers, because the client made in
-- init_by_lua pins once there, in the process that forks the workers, and
-- nginx opens its own listening socket only after init_by_lua has run.
--
-- The mock's `worker` field names its own worker, not the client's; the
-- app's answers name the worker that pinned, and the message ids join the
-- two, so every connection the mock saw is tied to the process that sent
-- on it.
local server = require "spec.support.server"
local hosts = require "spec.support.hosts"
local util = require "spec.support.util"
local cjson = require("cjson").new()

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

describe("OpenResty", function()
  local periskope_srv, app, dir

  -- GETs every url at once (curl --parallel); returns the bodies, in order.
  local function get_all(urls)
    local args = {}
    for i, url in ipairs(urls) do
      args[#args + 1] = sq(app.url .. url) .. " -o " .. sq(dir .. "/" .. i)
    end
    local out, code = sh("curl -sS --noproxy '*' --max-time 20 --parallel --parallel-immediate --parallel-max 50 "
      .. table.concat(args, " ") .. " 2>&1")
    assert(code == 0, "curl: " .. out)
    local bodies = {}
    for i = 1, #urls do
      bodies[i] = hosts.read_file(dir .. "/" .. i)
      os.remove(dir .. "/" .. i)
    end
    return bodies
  end

  local function get(url) return decode(get_all { url }[1]) end

  setup(function()
    local cpath = hosts.cpath()
    local root = hosts.root()
    dir = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-openresty.XXXXXX\""):match("[^\n]+")
    -- latency: a worker blocked in a pin accepts nothing, so the others
    -- take the next connections and several workers get to pin.
    periskope_srv = server.start { rate_limit = 100000, latency = 0.005 }
    -- The example's init_by_lua, plus one pin from the process that runs it,
    -- so that the client holds an open connection when the workers fork.
    local http, n = hosts.read_file(root .. "/" .. EXAMPLES .. "http.conf"):gsub(
      INIT_CALL:gsub("%p", "%%%0"), "%0\n    local stat = io.open('/proc/self/stat')"
        .. "\n    INIT = { pid = stat:read('*n'), res = require('pin_handlers').client:pin { message_id = 'init' } }"
        .. "\n    stat:close()", 1)
    assert(n == 1, "http.conf has no " .. INIT_CALL)
    app = server.start {
      workers = 4,
      lua_cpath = cpath,
      lua_path = root .. "/" .. EXAMPLES .. "?.lua",
      env = {
        PERISKOPE_API_KEY = periskope_srv.api_key,
        PERISKOPE_BASE_URL = periskope_srv.base_url,
        PERISKOPE_PHONE = util.PHONE,
      },
      extra_http = http,
      extra_server = hosts.read_file(root .. "/" .. EXAMPLES .. "server.conf") .. [[
        # Test only: what init_by_lua's pin got, and the request build_pin
        # describes (key included, hence never in the example).
        location = /t/init {
          content_by_lua_block {
            ngx.say(require("cjson").encode { pid = INIT.pid, status = INIT.res and INIT.res.status })
          }
        }
        location = /t/build_pin {
          content_by_lua_block {
            local c = require("pin_handlers").client
            ngx.say(require("cjson").encode(c:build_pin { message_id = ngx.req.get_uri_args().id }))
          }
        }
      ]],
    }
  end)

  teardown(function()
    if app then app:stop() end
    if periskope_srv then periskope_srv:stop() end
    if dir then sh("rm -rf " .. sq(dir)) end
  end)

  it("is quoted verbatim by the README", function()
    for _, file in ipairs { "http.conf", "server.conf", "pin_handlers.lua" } do
      assert.is_true(hosts.readme_quotes(EXAMPLES .. file), file)
    end
  end)

  it("pins from init_by_lua, before the workers fork", function()
    local init = get("/t/init")
    assert.equal(204, init.status)
    local recorded = periskope_srv:requests()
    assert.equal("init", id_of(recorded[1]))
    assert.are_not.equal(app.pid, init.pid)      -- nginx daemonizes after init
  end)

  it("pins from many workers at once; no connection is shared between processes", function()
    local urls, kind_of = {}, {}
    for i = 1, 100 do
      urls[#urls + 1] = "/pin?id=default-" .. i
      urls[#urls + 1] = "/pin/client?id=prefork-" .. i
      kind_of["default-" .. i] = "default"
      kind_of["prefork-" .. i] = "prefork"
    end
    local bodies = get_all(urls)
    local worker_of = {}                 -- message id -> pid of the app worker
    local workers = {}
    for i, body in ipairs(bodies) do
      local t = decode(body)
      assert.same({ true, 204, 1 }, { t.ok, t.status, t.attempts }, urls[i])
      assert.matches(UUID, t.trace_id)
      worker_of[urls[i]:match("id=(.*)")] = t.worker
      workers[t.worker] = true
    end
    assert.is_true(set_size(workers) >= 2, "one worker answered everything")
    local children = {}
    for pid in sh("pgrep -P " .. app.pid):gmatch("%d+") do children[tonumber(pid)] = true end
    for pid in pairs(workers) do assert.is_true(children[pid], "not a worker of the app: " .. pid) end

    local init_pid = get("/t/init").pid
    worker_of.init = init_pid
    local senders = {}                   -- mock connection -> {pid = true}
    local conns = {}                     -- "pid kind" -> {connection = true}
    local seen = 0
    for _, r in ipairs(periskope_srv:requests()) do
      local id = id_of(r)
      local pid = worker_of[id]
      if pid then
        seen = seen + 1
        senders[r.connection] = senders[r.connection] or {}
        senders[r.connection][pid] = true
        local key = pid .. " " .. (kind_of[id] or "init")
        conns[key] = conns[key] or {}
        conns[key][r.connection] = true
      end
    end
    assert.equal(201, seen)              -- each pin sent once, and init's
    for conn, pids in pairs(senders) do
      assert.equal(1, set_size(pids), "connection " .. conn .. " used by several processes")
    end
    -- Each worker opened one connection per client and kept it; the one the
    -- pre-fork client opened before the fork carried init's pin only.
    for key, set in pairs(conns) do
      assert.equal(1, set_size(set), key)
      if key:match("init$") then
        local c = next(set)
        assert.same({ [init_pid] = true }, senders[c])
      else
        assert.is_true(workers[tonumber(key:match("^%d+"))])
      end
    end
  end)

  describe("without blocking the worker (build_pin, ngx.location.capture, read_response)", function()
    before_each(function() periskope_srv:reset() end)

    it("sends exactly the request build_pin describes and reads the answer", function()
      local t = get("/pin/nonblocking?id=a%40b%2Fc")
      assert.same({ true, 204, 1 }, { t.ok, t.status, t.attempts })
      assert.matches(UUID, t.trace_id)
      assert.equal(100000, t.rate_limit.limit)
      assert.equal(99999, t.rate_limit.remaining)
      assert.is_number(t.rate_limit.reset)

      local want = get("/t/build_pin?id=a%40b%2Fc")
      local r = periskope_srv:requests()
      assert.equal(1, #r)
      r = r[1]
      assert.equal("POST", r.method)
      assert.equal("/v1/message/a%40b%2Fc/pin", r.uri)
      assert.equal(want.url, periskope_srv.url .. r.uri)
      assert.equal(want.body, r.body)
      local expected = {
        host = periskope_srv.url:match("//(.*)"),
        connection = "close",              -- nginx's proxy, not the module
        ["content-length"] = tostring(#want.body),
      }
      for name, value in pairs(want.headers) do expected[name:lower()] = value end
      assert.equal(5, set_size(want.headers))
      assert.same(expected, r.headers)
    end)

    it("reads an error answer as read_response does", function()
      periskope_srv:script { { status = 404, body = '{"message":"Message not found"}' } }
      local t = get("/pin/nonblocking?id=gone")
      assert.same({ false, 404, "Message not found" }, { t.ok, t.status, t.error })
    end)

    it("answers 400 for an id that build_pin refuses, sending nothing", function()
      local t = get("/pin/nonblocking?id=..")
      assert.is_false(t.ok)
      -- The reason alone: no position, so no file path of the server's.
      assert.equal(1, t.error:find("bad argument #1 to 'build_pin' (field 'message_id'", 1, true), t.error)
      t = get("/pin?id=..")
      assert.is_false(t.ok)
      assert.equal(1, t.error:find("bad argument #1 to 'pin' (field 'message_id'", 1, true), t.error)
      assert.equal(0, #periskope_srv:requests())
    end)

    -- 12 pins, each answered after 0.3 s, sent together to 4 workers. A
    -- blocking worker pins one at a time, so one of them sends at least 3
    -- in turn: 0.6 s from its first to its last (server-recorded arrival
    -- times). Non-blocking, all 12 are out at once.
    local function arrival_span(path)
      local script, urls = {}, {}
      for i = 1, 12 do
        script[i] = { delay = 0.3 }
        urls[i] = path .. "?id=m" .. i
      end
      periskope_srv:script(script)
      for _, body in ipairs(get_all(urls)) do assert.equal(204, decode(body).status) end
      local r = periskope_srv:requests()
      assert.equal(12, #r)
      local first, last = math.huge, -math.huge
      for _, req in ipairs(r) do
        first, last = math.min(first, req.time), math.max(last, req.time)
      end
      return last - first
    end

    it("lets the worker serve others while Periskope answers", function()
      local span = arrival_span("/pin/nonblocking")
      assert.is_true(span < 0.25, span .. " s")
    end)

    it("unlike the blocking handler", function()
      local span = arrival_span("/pin")
      assert.is_true(span >= 0.55, span .. " s")
    end)
  end)
end)
