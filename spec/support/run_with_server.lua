-- Runs one command against a fresh mock Periskope server (make demo):
--
--   lua5.4 spec/support/run_with_server.lua [--rate-limit N] [--window S]
--       [--latency S] [--retry-after] -- command [args...]
--
-- The command gets PERISKOPE_BASE_URL, PERISKOPE_API_KEY and PERISKOPE_PHONE
-- pointing at the mock (always: a real key must never reach the mock, nor a
-- mock URL a real key). Its output passes through; the server is stopped
-- afterwards, and the command's exit status becomes ours (128 + N for a
-- signal N).

-- Find spec.support.server from the checkout root wherever we are run from.
local root = (arg and arg[0] or ""):match("^(.*)/spec/support/[^/]*$")
if root then package.path = root .. "/?.lua;" .. package.path end
local server = require "spec.support.server"

local function usage(msg)
  io.stderr:write("run_with_server: ", msg, "\n",
    "usage: run_with_server.lua [--rate-limit N] [--window S] [--latency S]",
    " [--retry-after] -- command [args...]\n")
  os.exit(2)
end

local opts, command = {}, nil
local NUMBER_FLAGS = { ["--rate-limit"] = "rate_limit", ["--window"] = "window",
                       ["--latency"] = "latency" }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--" then
    command = {}
    for j = i + 1, #arg do command[#command + 1] = arg[j] end
    break
  elseif NUMBER_FLAGS[a] then
    local v = tonumber(arg[i + 1])
    if not v then usage(a .. " needs a number") end
    opts[NUMBER_FLAGS[a]] = v
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
