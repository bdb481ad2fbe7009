-- Starts and stops a real Redis server (Debian's redis-server) for the
-- shared pacing specs: 127.0.0.1 only, a free port, persistence off, its
-- files in a temp dir, stopped by its pid. Plain Lua for 5.1-5.4 and LuaJIT.
--
--   local redis = require "spec.support.redis"
--   local r = redis.start{ password = nil }
--   r.port, r.pid
--   r:cli("KEYS", "*")   -- redis-cli's output (the password never on argv)
--   r:pause() / r:resume()  -- SIGSTOP / SIGCONT: a server that stops answering
--   r:restart()          -- stopped and started again on the same port: empty
--   r:stop()             -- idempotent
--   redis.with(opts, function(r) ... end)  -- always stops
--
--   local s = redis.stand_in{ mode = "proxy", upstream = r.port, trickle = 0.5 }
--   s.port, s.pid
--   s:accepted()         -- connections it has accepted so far
--   s:stop()             -- idempotent
--   A Redis with faults (spec/support/redis_stand_in.lua says which), run
--   by lua5.4 with LuaSocket whatever Lua runs the specs.

local server = require "spec.support.server"

local sh, sq = server.sh, server.quote

local M = {}

local Redis = {}
Redis.__index = Redis

local function random_port()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(2)
  f:close()
  return 20000 + (b:byte(1) * 256 + b:byte(2)) % 40000
end

function Redis:_launch()
  local args = {
    "redis-server", "--port", self.port, "--bind", "127.0.0.1",
    "--save", "''", "--appendonly", "no", "--dir", sq(self.dir),
    "--daemonize", "yes", "--pidfile", sq(self.dir .. "/redis.pid"),
    "--logfile", sq(self.dir .. "/redis.log"), "--protected-mode", "no",
  }
  if self.password then
    -- A config file, so the password is not on a command line.
    server.write_file(self.dir .. "/auth.conf", "requirepass " .. self.password .. "\n")
    table.insert(args, 2, sq(self.dir .. "/auth.conf"))
  end
  local out, code = sh(table.concat({
    "rm -f " .. sq(self.dir .. "/redis.pid"),
    table.concat(args, " ") .. " </dev/null >/dev/null 2>&1 || exit 3",
    "i=0",
    "while [ $i -lt 200 ]; do",
    "  if [ -s " .. sq(self.dir .. "/redis.pid") .. " ] && "
      .. self:_cli_cmd("PING") .. " 2>/dev/null | grep -q PONG; then",
    "    cat " .. sq(self.dir .. "/redis.pid") .. "; exit 0",
    "  fi",
    "  sleep 0.025; i=$((i+1))",
    "done",
    "exit 4",
  }, "\n"))
  local pid = code == 0 and tonumber(out:match("%d+"))
  if not pid then
    return nil, (server.read_file(self.dir .. "/redis.log") or "")
  end
  self.pid = math.floor(pid)
  -- Should the spec process die, the server goes with it.
  os.execute(table.concat({
    "(lua=$PPID",
    " while kill -0 $lua 2>/dev/null && [ -d " .. sq(self.dir) .. " ]; do sleep 1; done",
    " kill -CONT " .. self.pid .. "; kill -TERM " .. self.pid .. "; sleep 1; rm -rf " .. sq(self.dir),
    ") >/dev/null 2>&1 </dev/null &",
  }, "\n"))
  return true
end

function Redis:_cli_cmd(...)
  local words = { "redis-cli", "-h", "127.0.0.1", "-p", self.port }
  for _, w in ipairs{ ... } do words[#words + 1] = sq(w) end
  local cmd = table.concat(words, " ")
  if self.password then cmd = "REDISCLI_AUTH=" .. sq(self.password) .. " " .. cmd end
  return cmd
end

function Redis:cli(...)
  local out = sh(self:_cli_cmd(...) .. " 2>&1")
  return out
end

function Redis:pause() sh("kill -STOP " .. self.pid) end
function Redis:resume() sh("kill -CONT " .. self.pid) end

-- Stops the server by its pid and waits until it is gone.
function Redis:_kill()
  local _, code = sh(table.concat({
    "pid=" .. self.pid,
    "kill -CONT $pid 2>/dev/null; kill -TERM $pid 2>/dev/null",
    "i=0",
    "while kill -0 $pid 2>/dev/null && [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" != Z ]; do",
    "  if [ $i -eq 200 ]; then kill -KILL $pid 2>/dev/null; fi",
    "  if [ $i -ge 400 ]; then exit 1; fi",
    "  sleep 0.025; i=$((i+1))",
    "done",
  }, "\n"))
  if code ~= 0 then error("redis: pid " .. self.pid .. " did not exit", 3) end
end

function Redis:restart()
  self:_kill()
  local ok, log = self:_launch()
  if not ok then error("redis: restart on port " .. self.port .. " failed\n" .. log, 2) end
end

function Redis:stop()
  if self.stopped then return end
  self.stopped = true
  self:_kill()
  sh("rm -rf " .. sq(self.dir))
end

function M.start(opts)
  opts = opts or {}
  local out, code = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-redis.XXXXXX\"")
  local dir = code == 0 and out:match("[^\n]+")
  if not dir then error("redis: mktemp failed: " .. out, 2) end
  local log
  for _ = 1, 10 do
    local r = setmetatable({ dir = dir, port = random_port(), password = opts.password }, Redis)
    local ok
    ok, log = r:_launch()
    if ok then return r end
  end
  sh("rm -rf " .. sq(dir))
  error("redis: could not start redis-server\n" .. (log or ""), 2)
end

local StandIn = {}
StandIn.__index = StandIn

local STAND_IN_OPTIONS = { "upstream", "trickle", "delay", "blackhole", "untildrop", "stream", "lifetime" }

-- The checkout's spec/support, where the stand-in's script is.
local function support_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "."
end

function M.stand_in(opts)
  local out, code = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-stand-in.XXXXXX\"")
  local dir = code == 0 and out:match("[^\n]+")
  if not dir then error("redis stand-in: mktemp failed: " .. out, 2) end
  local words = { "lua5.4", sq(support_dir() .. "/redis_stand_in.lua"), sq(opts.mode) }
  for _, name in ipairs(STAND_IN_OPTIONS) do
    if opts[name] then
      words[#words + 1] = "--" .. name
      words[#words + 1] = ("%.17g"):format(opts[name])
    end
  end
  local log = dir .. "/out"
  out = sh(table.concat(words, " ") .. " >" .. sq(log) .. " 2>&1 </dev/null & echo $!")
  local s = setmetatable({ dir = dir, log = log, pid = tonumber(out:match("%d+")) }, StandIn)
  local socket = require "socket"
  local deadline = socket.gettime() + 10
  while true do
    local text = server.read_file(log) or ""
    s.port = tonumber(text:match("^(%d+)\n"))
    if s.port then break end
    if socket.gettime() > deadline then
      s:stop()
      error("redis stand-in did not start: " .. text, 2)
    end
    socket.sleep(0.01)
  end
  -- Should the spec process die, the stand-in goes with it.
  os.execute(table.concat({
    "(lua=$PPID",
    " while kill -0 $lua 2>/dev/null && [ -d " .. sq(dir) .. " ]; do sleep 1; done",
    " kill -KILL " .. s.pid .. "; rm -rf " .. sq(dir),
    ") >/dev/null 2>&1 </dev/null &",
  }, "\n"))
  return s
end

function StandIn:accepted()
  local n = 0
  for _ in (server.read_file(self.log) or ""):gmatch("accepted\n") do n = n + 1 end
  return n
end

function StandIn:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then
    sh(table.concat({
      "pid=" .. self.pid,
      "kill -TERM $pid 2>/dev/null",
      "i=0",
      "while kill -0 $pid 2>/dev/null && [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" != Z ]; do",
      "  if [ $i -ge 200 ]; then kill -KILL $pid 2>/dev/null; fi",
      "  sleep 0.025; i=$((i+1))",
      "done",
    }, "\n"))
  end
  sh("rm -rf " .. sq(self.dir))
end

function M.with(opts, fn)
  local r = M.start(opts)
  local ok, err = pcall(fn, r)
  r:stop()
  if not ok then error(err, 0) end
end

return M
