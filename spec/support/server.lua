-- Starts and stops the mock Periskope server (a real nginx running
-- spec/support/mock.lua) for the specs, the demo and the benchmarks, and talks
-- to its control API. Plain Lua for 5.1-5.4 and LuaJIT: io, os, string,
-- table, cjson and LuaSocket (the control calls); the processes it needs
-- (nginx, kill, mktemp) run through the shell, since there is no luaposix
-- here.
--
--   local server = require "spec.support.server"
--   local srv = server.start{          -- every option may be left out
--     api_key = "test-key",            -- the bearer token it accepts
--     rate_limit = 1000, window = 2,   -- N counted requests per window (s), then 429
--     retry_after = false,             -- true: rate-limit 429s carry Retry-After
--     keepalive_timeout = 5,           -- s (fractions too); sent as "Keep-Alive: timeout=N"
--     latency = 0,                     -- s slept before every answer under /v1/
--     fixed_rate = nil,                -- { limit =, remaining =, reset = }: the
--                                      -- X-RateLimit-* of every answer, whatever the
--                                      -- window says (a stand-in that replays the
--                                      -- OpenAPI example: 10, 9, 1737542181)
--     workers = 1, connections = 1024, -- worker_processes, worker_connections
--     extra_main = nil,                -- nginx.conf text at main level (env ...;)
--     extra_http = nil,                -- text at the end of http{}
--     extra_server = nil,              -- text at the end of the mock's server{}
--     lua_path = nil, lua_cpath = nil, -- put before the default lua_package_(c)path
--     env = nil,                       -- name -> value: nginx's environment at start
--     tls = false,                     -- true: a second, TLS listener too (below)
--     reuseport = false,               -- true: the kernel spreads connections over the workers
--     records = 16,                    -- MiB kept for request records (~25k typical
--                                      -- records; past that they are counted, not kept)
--   }
--   srv.port, srv.url ("http://127.0.0.1:<port>"), srv.base_url (url .. "/v1"),
--   srv.pid (nginx master), srv.api_key
--   With tls: srv.tls_port, srv.https_url ("https://localhost:<tls_port>": a
--   name to resolve), srv.https_base_url, srv.ca_file (the PEM of a CA made
--   for this server alone, which signed its certificate for localhost and
--   127.0.0.1; openssl makes both at start).
--   srv:script{ {status = 429, remaining = 0, reset_in = 3}, {action = "close"} }
--   srv:requests()  -- {method, uri, headers, body, time, connection,
--                   --  connection_requests, worker, over_limit (true: answered
--                   --  the rate window's 429)} per request to /v1/
--   srv:stats()     -- {requests, dropped, script, statuses = {[204] = n, [429] = n, ...},
--                   --  over_limit (429s of the rate window), hostile = {[kind] = n}}
--   srv:hostile{ weights = { ok = 80, too_many = 4, unavailable = 4, hang = 4, cut = 4,
--                            far_reset = 4 }, hang = 2, retry_after = 1, far_reset = 7200 }
--                   -- answers made hostile at random (mock.lua says how);
--                   -- srv:hostile(false) turns it off
--   srv:reset()     -- forget requests, script, rate window and hostile mode
--   srv:stop()      -- idempotent; the temp dir goes too
--   server.with(opts, function(srv) ... end)  -- always stops
--   server.sh(script) -> stdout, exit status; server.quote(s) -> shell word
--
-- The behaviours a script may hold are described in mock.lua.

local cjson = require("cjson").new()   -- a private copy: the caller's settings stay theirs

local M = {}

-- Debian's dynamic modules (packages nginx, libnginx-mod-http-lua). An nginx
-- with the Lua module built in (OpenResty) needs no load_module.
local MODULES = {
  "/usr/lib/nginx/modules/ndk_http_module.so",
  "/usr/lib/nginx/modules/ngx_http_lua_module.so",
}

local OPTIONS = {
  api_key = "string", rate_limit = "number", window = "number",
  retry_after = "boolean", keepalive_timeout = "number", latency = "number",
  workers = "number", connections = "number", extra_http = "string",
  extra_main = "string", extra_server = "string", lua_path = "string",
  lua_cpath = "string", env = "table", tls = "boolean", reuseport = "boolean",
  fixed_rate = "table", records = "number",
}

local DEFAULTS = {
  api_key = "test-key", rate_limit = 1000, window = 2, retry_after = false,
  keepalive_timeout = 5, latency = 0, workers = 1, connections = 1024, records = 16,
}

local START_TRIES = 20     -- ports tried before giving up
local toint = math.tointeger or function(x) return x end  -- cjson gives floats

------------------------------------------------------------------------------
-- Shell and file helpers

-- Quotes s as one shell word.
local function sq(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

-- Quotes s as one nginx.conf string.
local function cq(s)
  return '"' .. (s:gsub('["\\]', "\\%0")) .. '"'
end

-- Runs a shell script; returns its stdout and exit status. io.popen's close
-- gives no status in 5.1, so a subshell runs the script (it may `exit`) and
-- the status is printed last.
local function sh(script)
  local p = assert(io.popen("(\n" .. script .. '\n)\necho "__exit=$?"', "r"))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("__exit=(%d+)\n?$"))
  return (out:gsub("__exit=%d+\n?$", "")), code
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

local function pack(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack  -- luacheck: ignore 143

------------------------------------------------------------------------------
-- Facts about this machine, looked up once

local cached = {}

local function is_root()
  if cached.root == nil then
    local out = sh("id -u")
    cached.root = out:match("^%s*0%s*$") ~= nil
  end
  return cached.root
end

local function nginx_binary()
  if not cached.nginx then
    -- Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
    local out = sh("command -v nginx || echo /usr/sbin/nginx")
    cached.nginx = out:match("[^\n]+")
  end
  return cached.nginx
end

-- The checkout's root, absolute: nginx looks up spec/support/mock.lua there.
local function repo_root()
  if not cached.root_dir then
    local src = debug.getinfo(1, "S").source
    local dir = src:match("^@(.*)/[^/]*$") or "."
    if dir:sub(1, 1) ~= "/" then
      dir = sh("pwd"):match("[^\n]+") .. "/" .. dir:gsub("^%./", "")
    end
    cached.root_dir = dir:gsub("/spec/support/?$", "")
  end
  return cached.root_dir
end

-- Ports that some socket of this machine already uses (Linux /proc); nginx
-- would spend 2.5 s retrying bind() on one of them before failing.
local function ports_in_use()
  local used = {}
  for _, file in ipairs{ "/proc/net/tcp", "/proc/net/tcp6" } do
    local text = read_file(file) or ""
    for hex in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do
      used[tonumber(hex, 16)] = true
    end
  end
  return used
end

-- A random port in 20000..60999. Read from /dev/urandom rather than
-- math.random: seeding would change the caller's random state, and parallel
-- runs seeded by os.time() would all try the same ports.
local function random_port()
  local n
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(4)
    f:close()
    if b and #b == 4 then
      n = ((b:byte(1) * 256 + b:byte(2)) * 256 + b:byte(3)) * 256 + b:byte(4)
    end
  end
  n = n or math.random(0, 40999)
  return toint(20000 + n % 41000)
end

------------------------------------------------------------------------------
-- Options

local function check_options(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("mock server: options must be a table", 3)
  end
  local o = {}
  for k, v in pairs(opts or {}) do
    local want = OPTIONS[k]
    if not want then error("mock server: unknown option '" .. tostring(k) .. "'", 3) end
    if type(v) ~= want then
      error("mock server: option '" .. k .. "' must be a " .. want .. ", got " .. type(v), 3)
    end
    o[k] = v
  end
  for k, v in pairs(DEFAULTS) do
    if o[k] == nil then o[k] = v end
  end
  local function int(name, min)
    local v = o[name]
    if v % 1 ~= 0 or v < min then
      error("mock server: option '" .. name .. "' must be an integer >= " .. min, 4)
    end
  end
  int("rate_limit", 0)
  int("workers", 1)
  int("connections", 16)
  int("records", 1)
  local function finite(x) return x == x and x > -math.huge and x < math.huge end
  if not finite(o.window) or o.window <= 0 then
    error("mock server: option 'window' must be a number > 0", 3)
  end
  if not finite(o.keepalive_timeout) or o.keepalive_timeout < 0 then
    error("mock server: option 'keepalive_timeout' must be a number >= 0", 3)
  end
  if not finite(o.latency) or o.latency < 0 then
    error("mock server: option 'latency' must be a number >= 0", 3)
  end
  if o.fixed_rate ~= nil then
    for _, name in ipairs { "limit", "remaining", "reset" } do
      local v = o.fixed_rate[name]
      if type(v) ~= "number" or v % 1 ~= 0 or v < 0 then
        error("mock server: option 'fixed_rate' must hold integers >= 0 named limit,"
          .. " remaining and reset", 3)
      end
    end
  end
  if o.api_key:find("[%c]") then
    error("mock server: option 'api_key' must have no control bytes", 3)
  end
  for name, value in pairs(o.env or {}) do
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or type(value) ~= "string" then
      error("mock server: option 'env' must map variable names to strings", 3)
    end
  end
  return o
end

------------------------------------------------------------------------------
-- nginx

local function nginx_conf(dir, port, o)
  local lines = { "# Written by spec/support/server.lua for one mock server." }
  local function add(...) lines[#lines + 1] = table.concat({ ... }) end
  for _, so in ipairs(MODULES) do
    if read_file(so) then add("load_module ", cq(so), ";") end
  end
  -- Workers of a root master would run as nobody, who cannot read a checkout
  -- under /root nor write the 0700 temp dir.
  if is_root() then add("user root;") end
  add("daemon on;")
  add("master_process on;")
  add("worker_processes ", o.workers, ";")
  add("pid ", cq(dir .. "/nginx.pid"), ";")
  add("error_log ", cq(dir .. "/error.log"), " warn;")
  if o.extra_main then add(o.extra_main) end
  add("events { worker_connections ", o.connections, "; }")
  add("http {")
  add("  access_log off;")
  add("  server_tokens off;")
  -- The second value makes nginx send "Keep-Alive: timeout=K", as Periskope does.
  -- In milliseconds, so a spec can wait out a fraction of a second; the
  -- header states whole seconds, rounded up.
  add("  keepalive_timeout ", math.floor(o.keepalive_timeout * 1000 + 0.5), "ms ",
      math.ceil(o.keepalive_timeout), ";")
  add("  keepalive_requests 1000000;")   -- Express has no such limit
  for _, t in ipairs{ "client_body", "proxy", "fastcgi", "uwsgi", "scgi" } do
    add("  ", t, "_temp_path ", cq(dir .. "/" .. t .. "_temp"), ";")
  end
  -- One size for both, so a recorded body is always in memory.
  add("  client_max_body_size 2m;")
  add("  client_body_buffer_size 2m;")
  add("  lua_package_path ", cq(repo_root() .. "/?.lua;"
        .. (o.lua_path and o.lua_path .. ";" or "") .. ";"), ";")
  if o.lua_cpath then add("  lua_package_cpath ", cq(o.lua_cpath .. ";;"), ";") end
  add("  lua_shared_dict periskope_mock 4m;")                -- counters, script
  add("  lua_shared_dict periskope_mock_requests ", o.records, "m;")  -- ~1.6k typical records a MiB
  add("  lua_socket_log_errors off;")
  add("  server {")
  add("    listen 127.0.0.1:", port, o.reuseport and " reuseport" or "", ";")
  if o.tls then
    add("    listen 127.0.0.1:", o.tls_port, " ssl;")
    add("    ssl_certificate ", cq(dir .. "/server.pem"), ";")
    add("    ssl_certificate_key ", cq(dir .. "/server.key"), ";")
  end
  add("    location /v1/ { content_by_lua_block { require('spec.support.mock').pin() } }")
  add("    location /_mock/ { content_by_lua_block { require('spec.support.mock').control() } }")
  add("    location / { default_type application/json; return 404 '{\"message\":\"Not found\"}'; }")
  if o.extra_server then add(o.extra_server) end
  add("  }")
  if o.extra_http then add(o.extra_http) end
  add("}")
  return table.concat(lines, "\n") .. "\n"
end

-- Shell assignments that put o.env in the environment of the nginx command.
-- init_by_lua runs in that process and sees it; workers see only what an
-- `env NAME;` directive (extra_main) lets through.
local function env_prefix(o)
  local words = {}
  for name, value in pairs(o.env or {}) do words[#words + 1] = name .. "=" .. sq(value) .. " " end
  table.sort(words)
  return table.concat(words)
end

-- Starts nginx once. Returns its pid, or nil, the error text and whether the
-- port was taken. The listening socket is bound before nginx daemonizes, so
-- once the command succeeded and the pid file exists, connections queue.
local function try_start(dir, port, o)
  write_file(dir .. "/nginx.conf", nginx_conf(dir, port, o))
  local out, code = sh(table.concat({
    env_prefix(o) .. sq(nginx_binary()) .. " -p " .. sq(dir .. "/") .. " -c " .. sq(dir .. "/nginx.conf")
      .. " -e " .. sq(dir .. "/error.log") .. " </dev/null >" .. sq(dir .. "/start.out") .. " 2>&1"
      .. " || exit $?",
    -- The daemon writes the pid file just after the first process exits.
    "i=0",
    "while [ ! -s " .. sq(dir .. "/nginx.pid") .. " ] && [ $i -lt 200 ]; do",
    "  sleep 0.025; i=$((i+1))",
    "done",
    "cat " .. sq(dir .. "/nginx.pid") .. " 2>/dev/null",
  }, "\n"))
  local pid = code == 0 and tonumber(out:match("%d+"))
  if pid then return toint(pid) end
  local log = (read_file(dir .. "/start.out") or "") .. (read_file(dir .. "/error.log") or "")
  local text = ("mock server: nginx failed to start on port %d (exit status %s)\n%s")
    :format(port, tostring(code), log)
  return nil, text, log:find("Address already in use", 1, true) ~= nil
end

-- A CA of its own and a certificate it signed for localhost and 127.0.0.1,
-- valid for two days: ca.pem, server.pem and server.key in dir.
local function make_certs(dir)
  local d = sq(dir)
  local out, code = sh(table.concat({
    "cd " .. d .. " || exit 1",
    "printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
      .. "subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext",
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
      .. " -subj '/CN=periskope test CA' -addext 'basicConstraints=critical,CA:TRUE'"
      .. " -addext 'keyUsage=critical,keyCertSign,cRLSign' -keyout ca.key -out ca.pem 2>&1 || exit 1",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=localhost'"
      .. " -keyout server.key -out server.csr 2>&1 || exit 1",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile server.ext -out server.pem 2>&1 || exit 1",
  }, "\n"))
  if code ~= 0 then error("mock server: openssl could not make the test certificates:\n" .. out, 3) end
end

-- Makes sure nginx goes away if this Lua process dies without stop() (a
-- crashed or killed test run): a background shell waits for this process
-- ($PPID of the shell os.execute starts) and then stops nginx by its pid, but
-- only while the pid file, which nginx deletes on exit, still names it.
local function start_watchdog(dir, pid)
  local pidfile = sq(dir .. "/nginx.pid")
  os.execute(table.concat({
    "(lua=$PPID",
    " while kill -0 $lua 2>/dev/null && [ -d " .. sq(dir) .. " ]; do sleep 1; done",
    " if [ \"$(cat " .. pidfile .. " 2>/dev/null)\" = " .. pid .. " ]; then",
    "  kill -TERM " .. pid .. "; sleep 2; rm -rf " .. sq(dir),
    " fi) >/dev/null 2>&1 </dev/null &",
  }, "\n"))
end

------------------------------------------------------------------------------
-- Server objects

local Server = {}
Server.__index = Server

-- One call to the control API, in this process (LuaSocket's HTTP client:
-- no shell and no curl command per call); raises unless it answers 200.
-- Returns the decoded JSON answer.
function Server:_control(method, path, body)
  if self.stopped then error("mock server: already stopped", 3) end
  local http, ltn12 = require "socket.http", require "ltn12"
  local chunks = {}
  local ok, status = http.request {
    url = self.url .. path,
    method = method,
    headers = body and { ["content-type"] = "application/json", ["content-length"] = #body } or nil,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
    create = function()
      local sock = require("socket").tcp()
      sock:settimeout(30)
      return sock
    end,
  }
  local answer = table.concat(chunks)
  if not ok then
    error(("mock server: %s %s failed: %s"):format(method, path, tostring(status)), 3)
  end
  if status ~= 200 then
    error(("mock server: %s %s answered %s: %s"):format(method, path, tostring(status), answer), 3)
  end
  return cjson.decode(answer)
end

-- Appends behaviours to the queue that requests to /v1/ consume, one each.
-- Returns how many are queued now.
function Server:script(list)
  if type(list) ~= "table" or (#list == 0 and next(list) ~= nil) then
    error("mock server: script expects an array of tables", 2)
  end
  if #list == 0 then return self:stats().script end
  return self:_control("POST", "/_mock/script", cjson.encode(list)).queued
end

-- The requests to /v1/ recorded since start or reset, in arrival order.
function Server:requests()
  local list = self:_control("GET", "/_mock/requests")
  for _, r in ipairs(list) do
    r.connection = toint(r.connection)
    r.connection_requests = toint(r.connection_requests)
    r.worker = toint(r.worker)
  end
  return list
end

-- Counters: requests (all received, recorded or not), dropped (not recorded:
-- the dict was full), script (behaviours still queued), statuses (answers
-- by status), over_limit (429s of the rate window: not injected), hostile
-- (hostile answers by kind).
function Server:stats()
  local s = self:_control("GET", "/_mock/stats")
  local statuses = {}
  for code, n in pairs(s.statuses or {}) do statuses[toint(tonumber(code))] = toint(n) end
  local hostile = {}
  for kind, n in pairs(s.hostile or {}) do hostile[kind] = toint(n) end
  return { requests = toint(s.requests), dropped = toint(s.dropped), script = toint(s.script),
           statuses = statuses, over_limit = toint(s.over_limit), hostile = hostile }
end

-- Makes the answers hostile at random (settings as mock.lua describes them:
-- weights by kind, hang, retry_after, far_reset), or, with false or nil,
-- well behaved again. Raises with the mock's reason on bad settings.
function Server:hostile(settings)
  if settings ~= nil and settings ~= false and type(settings) ~= "table" then
    error("mock server: hostile expects a table of settings, or false", 2)
  end
  self:_control("POST", "/_mock/hostile", settings and cjson.encode(settings) or "{}")
end

-- Forgets recorded requests, the script queue, the rate window and hostile mode.
function Server:reset()
  self:_control("POST", "/_mock/reset", "{}")
end

-- Waits until the server has closed every kept-alive connection that this
-- process holds to it (each is then in CLOSE_WAIT on our side, or gone),
-- at most `timeout` seconds (default 10); raises past that. A connection
-- libcurl keeps in its pool shows in /proc/net/tcp as ours: no other
-- process on the machine talks to this server's port.
function Server:wait_idle_closed(timeout)
  local socket = require "socket"
  local deadline = socket.gettime() + (timeout or 10)
  local port = ("%04X"):format(self.port)
  while true do
    local open = false
    for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
      for line in (read_file(file) or ""):gmatch("[^\n]+") do
        -- sl local_address rem_address st: ESTABLISHED (01) to our port.
        local rem, st = line:match("^%s*%d+:%s+%x+:%x+%s+%x+:(%x+)%s+(%x+)")
        if rem == port and st == "01" then open = true end
      end
    end
    if not open then return end
    if socket.gettime() > deadline then
      error("mock server: a kept-alive connection stayed open past " .. (timeout or 10) .. " s", 2)
    end
    socket.sleep(0.01)
  end
end

-- Stops nginx (TERM, then KILL after 5 s) and waits until it is gone; removes
-- the temp dir. A zombie counts as gone: whoever reaps it is not us. Safe to
-- call twice.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local _, code = sh(table.concat({
    "pid=" .. self.pid,
    "kill -TERM $pid 2>/dev/null",
    "gone() { ! kill -0 $pid 2>/dev/null ||"
      .. " [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" = Z ]; }",
    "i=0",
    "while ! gone; do",
    "  if [ $i -eq 200 ]; then pkill -KILL -P $pid; kill -KILL $pid 2>/dev/null; fi",
    "  if [ $i -ge 400 ]; then exit 1; fi",
    "  sleep 0.025; i=$((i+1))",
    "done",
  }, "\n"))
  sh("rm -rf " .. sq(self.dir))
  if code ~= 0 then error("mock server: nginx pid " .. self.pid .. " did not exit", 2) end
end

------------------------------------------------------------------------------
-- Module

-- The shell helpers, for specs that drive curl themselves.
M.sh = sh
M.quote = sq
M.read_file = read_file   -- nil when the file cannot be opened
M.write_file = write_file

-- The epoch time in seconds, fractions included, as the shell's date
-- gives it (what the specs compare with the server's record times).
function M.now()
  return tonumber((sh("date +%s.%N")))
end

-- Starts a mock server; see the option list at the top. Raises with nginx's
-- error log when nginx cannot start.
function M.start(opts)
  local o = check_options(opts)
  local out, code = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-mock.XXXXXX\"")
  local dir = code == 0 and out:match("[^\n]+")
  if not dir then error("mock server: mktemp failed: " .. out, 2) end
  write_file(dir .. "/mock.json", cjson.encode({
    api_key = o.api_key, rate_limit = o.rate_limit, window = o.window,
    retry_after = o.retry_after, latency = o.latency, fixed_rate = o.fixed_rate,
  }))
  if o.tls then make_certs(dir) end
  local used = ports_in_use()
  local port, pid, err
  for _ = 1, START_TRIES do
    repeat port = random_port() until not used[port]
    if o.tls then
      repeat o.tls_port = random_port() until not used[o.tls_port] and o.tls_port ~= port
    end
    local taken
    pid, err, taken = try_start(dir, port, o)
    if pid or not taken then break end
    used[port] = true
  end
  if not pid then
    sh("rm -rf " .. sq(dir))
    error(err, 2)
  end
  start_watchdog(dir, pid)
  local url = "http://127.0.0.1:" .. port
  local srv = {
    port = port, url = url, base_url = url .. "/v1", pid = pid,
    api_key = o.api_key, dir = dir, stopped = false,
  }
  if o.tls then
    srv.tls_port = o.tls_port
    srv.https_url = "https://localhost:" .. o.tls_port
    srv.https_base_url = srv.https_url .. "/v1"
    srv.ca_file = dir .. "/ca.pem"
  end
  return setmetatable(srv, Server)
end

-- Runs fn(srv) with a fresh server, always stops it, and re-raises fn's
-- error unchanged. Returns fn's results.
function M.with(opts, fn)
  local srv = M.start(opts)
  local r = pack(pcall(fn, srv))
  srv:stop()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

return M
