-- Runs one command against a fresh local Periskope server (make demo uses
-- it; so can a user trying the command or a host): `--help` says how.
-- The command gets PERISKOPE_BASE_URL, PERISKOPE_API_KEY and PERISKOPE_PHONE
-- pointing at the server (always: a real key must never reach it, nor its
-- URL a real key). Its output passes through; the server is stopped
-- afterwards, and the command's exit status becomes ours (128 + N for a
-- signal N); a usage error exits 2.

-- Find spec.support.server from the checkout root wherever we are run from.
local root = (arg and arg[0] or ""):match("^(.*)/spec/support/[^/]*$")
if root then package.path = root .. "/?.lua;" .. package.path end
local server = require "spec.support.server"

local HELP = [[
usage: lua5.4 spec/support/run_with_server.lua [options] -- command [args...]

Starts the local Periskope server (nginx on 127.0.0.1, a free port), runs
the command with these set in its environment, stops the server, and exits
with the command's status:

  PERISKOPE_BASE_URL  http://127.0.0.1:<port>/v1
  PERISKOPE_API_KEY   the key the server accepts (test-key)
  PERISKOPE_PHONE     919874532456

Whatever the calling environment holds for the three, the command gets the
server's: a real key never reaches it.

The server answers POST /v1/message/<id>/pin as the Periskope API does: 204
with X-RateLimit-Limit, -Remaining and -Reset; 401 for another key, 400 for
a bad x-phone or body; past its limit, 429 until the window ends.

options:
  --rate-limit N   requests allowed per window, then 429 (default 1000)
  --window S       the window, in seconds (default 2)
  --latency S      seconds the server waits before each answer (default 0)
  --retry-after    429s carry Retry-After: the seconds to the window's end
                   (default: no Retry-After)
  -h, --help       this text

examples (from the checkout, after make):
  the command, three pins at two per second:
    lua5.4 spec/support/run_with_server.lua --rate-limit 2 --window 1 -- \
      lua5.4 bin/periskope pin m1 m2 m3
  a host, every answer half a second late (nginx in the foreground, its
  nginx.conf passing the three variables on with env directives):
    lua5.4 spec/support/run_with_server.lua --latency 0.5 -- \
      nginx -p app/ -c nginx.conf -g 'daemon off;'
]]

local function usage(msg)
  io.stderr:write("run_with_server: ", msg, "\n",
    "usage: run_with_server.lua [--rate-limit N] [--window S] [--latency S]",
    " [--retry-after] -- command [args...] (--help says more)\n")
  os.exit(2)
end

local opts, command = {}, nil
-- flag -> the server's option, and what it accepts.
local NUMBER_FLAGS = {
  ["--rate-limit"] = { "rate_limit", "a whole number >= 0",
    function(v) return v >= 0 and v % 1 == 0 end },
  ["--window"] = { "window", "a number of seconds > 0", function(v) return v > 0 end },
  ["--latency"] = { "latency", "a number of seconds >= 0", function(v) return v >= 0 end },
}
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--" then
    command = {}
    for j = i + 1, #arg do command[#command + 1] = arg[j] end
    break
  elseif a == "-h" or a == "--help" then
    io.stdout:write(HELP)
    os.exit(0)
  elseif NUMBER_FLAGS[a] then
    local name, accepts, ok = NUMBER_FLAGS[a][1], NUMBER_FLAGS[a][2], NUMBER_FLAGS[a][3]
    local v = tonumber(arg[i + 1])
    if not (v and v == v and v ~= math.huge and ok(v)) then
      usage(("%s must be %s, got %s"):format(a, accepts, arg[i + 1] and ("'" .. arg[i + 1] .. "'") or "nothing"))
    end
    opts[name] = v
    i = i + 2
  elseif a == "--retry-after" then
    opts.retry_after = true
    i = i + 1
  else
    usage("unknown argument '" .. a .. "'")
  end
end
if not command or #command == 0 then usage("no command given after --") end

local function sq(s) return "'" .. (s:gsub("'", "'\\''")) .. "'" end

-- Returns the exit status of a shell command: os.execute answers in three
-- ways across 5.1 (raw wait status), 5.2+ and LuaJIT.
local function execute(cmd)
  local a, how, code = os.execute(cmd)
  if type(a) == "number" then              -- 5.1: wait status
    if a % 256 == 0 then return math.floor(a / 256) end
    return 128 + a % 128
  end
  if how == "signal" then return 128 + code end
  return code or (a and 0 or 1)
end

local status = server.with(opts, function(srv)
  local words = {}
  for _, w in ipairs(command) do words[#words + 1] = sq(w) end
  return execute(table.concat({
    "export PERISKOPE_BASE_URL=" .. sq(srv.base_url),
    "PERISKOPE_API_KEY=" .. sq(srv.api_key),
    "PERISKOPE_PHONE=919874532456;",
    "exec", table.concat(words, " "),
  }, " "))
end)
os.exit(status)
