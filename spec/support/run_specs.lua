-- Runs the spec files side by side, each in its own busted process (each
-- starts its own local servers on ports of its own), then adds up what they
-- report: the failures with their messages, one busted-style summary line
-- ("N successes / N failures / N errors / N pending : T seconds") and the
-- ten slowest specs with their times, so that the next slow one is seen
-- when it arrives. Exits 1 when anything failed.
--
--   lua5.4 spec/support/run_specs.lua [--jobs N] [--lua CMD] [--busted PATH]
--                      [--times FILE] [--slowest N] [FILE...] [-- BUSTED ARGS...]
--
-- --lua: the command that runs busted (default: the interpreter running
-- this script); it is shell text, so it may be a wrapper with arguments
-- ("valgrind --error-exitcode=3 lua5.4").
--
-- Files default to every spec/*_spec.lua. The longest files (by the times
-- of the last run, kept in FILE, default build/spec-times) start first, so
-- the run ends soon after its longest file. The specs wait on servers far
-- more than they compute, so more processes than cores pay.
--
-- Plain Lua 5.1-5.4 and LuaJIT with lua-cjson; processes through the shell.
local cjson = require("cjson").new()
local server = require "spec.support.server"

local sq, read_file, write_file = server.quote, server.read_file, server.write_file

local function usage(msg)
  io.stderr:write("run_specs: ", msg, "\n",
    "usage: run_specs.lua [--jobs N] [--lua CMD] [--busted PATH] [--times FILE] [--slowest N]\n",
    "                     [FILE...] [-- BUSTED ARGS...]\n")
  os.exit(2)
end

-- The interpreter running this script runs busted too.
local function interpreter()
  local i = -1
  while arg[i - 1] do i = i - 1 end
  return arg[i]
end

local opts = { jobs = 6, busted = "/usr/bin/busted", times = "build/spec-times", slowest = 10,
  lua = sq(interpreter()) }
local files, extra = {}, {}
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--" then
      for j = i + 1, #arg do extra[#extra + 1] = arg[j] end
      break
    elseif a == "--jobs" or a == "--busted" or a == "--times" or a == "--slowest" or a == "--lua" then
      if not arg[i + 1] then usage(a .. " needs a value") end
      opts[a:sub(3)] = arg[i + 1]
      i = i + 1
    elseif a:sub(1, 2) == "--" then
      usage("unknown option " .. a)
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
end
local jobs = tonumber(opts.jobs)
if not jobs or jobs < 1 or jobs % 1 ~= 0 then usage("--jobs must be a whole number >= 1") end

if #files == 0 then
  local out = server.sh("ls spec/*_spec.lua")
  for f in out:gmatch("[^\n]+") do files[#files + 1] = f end
end

-- Longest first, by the last run's times; files never timed go first too.
local last = {}
for line in (read_file(opts.times) or ""):gmatch("[^\n]+") do
  local f, t = line:match("^(%S+) (%S+)$")
  if f then last[f] = tonumber(t) end
end
table.sort(files, function(a, b)
  local ta, tb = last[a] or math.huge, last[b] or math.huge
  if ta ~= tb then return ta > tb end
  return a < b
end)

local tmp = server.sh('mktemp -d "${TMPDIR:-/tmp}/periskope-specs.XXXXXX"'):match("[^\n]+")
if not tmp then usage("mktemp failed") end

-- One line per file for xargs: the busted command, its results file and
-- its stderr. xargs starts them in order, at most `jobs` at once.
local list = {}
for i, f in ipairs(files) do
  local base = tmp .. "/" .. i
  local words = { opts.lua, sq(opts.busted), "-o", "spec/support/output.lua" }
  for _, e in ipairs(extra) do words[#words + 1] = sq(e) end
  words[#words + 1] = sq(f)
  list[#list + 1] = "PERISKOPE_SPEC_OUT=" .. sq(base .. ".json") .. " "
    .. table.concat(words, " ") .. " 2>" .. sq(base .. ".err")
end
write_file(tmp .. "/list", table.concat(list, "\n") .. "\n")

local started = os.time()
io.write(("running %d spec files, %d at a time\n"):format(#files, jobs))
io.flush()
-- Each line is one sh -c argument: xargs -d '\n' keeps it whole.
os.execute("xargs -d '\\n' -P " .. jobs .. " -n 1 sh -c < " .. sq(tmp .. "/list"))
io.write("\n")

local counts = { success = 0, failure = 0, error = 0, pending = 0 }
local all, bad, times = {}, {}, {}
for i, f in ipairs(files) do
  local base = tmp .. "/" .. i
  local text = read_file(base .. ".json")
  local ok, res = pcall(cjson.decode, text or "")
  if not (ok and type(res) == "table") then
    local err = read_file(base .. ".err") or ""
    counts.error = counts.error + 1
    bad[#bad + 1] = { status = "error", name = f, message = "busted ended without results:\n"
      .. err:sub(-2000) }
  else
    times[#times + 1] = { file = f, duration = res.duration or 0 }
    for _, t in ipairs(res.tests) do
      t.file = f
      counts[t.status] = (counts[t.status] or 0) + 1
      all[#all + 1] = t
      if t.status == "failure" or t.status == "error" then bad[#bad + 1] = t end
    end
  end
end
server.sh("rm -rf " .. sq(tmp))

for _, t in ipairs(bad) do
  io.write(("\n%s %s\n%s%s\n"):format(t.status == "failure" and "Failure" or "Error",
    t.where and ("→ " .. t.where) or ("in " .. (t.file or "?")), t.name, ""))
  io.write(tostring(t.message or ""), "\n")
  if t.status == "error" and t.traceback then io.write(t.traceback, "\n") end
end

table.sort(all, function(a, b) return a.duration > b.duration end)
io.write("\nslowest specs:\n")
for i = 1, math.min(tonumber(opts.slowest) or 10, #all) do
  local t = all[i]
  io.write(("%7.2f s  %s: %s\n"):format(t.duration, t.file, t.name))
end

-- The times file: what the next run schedules by.
table.sort(times, function(a, b) return a.duration > b.duration end)
local lines = {}
for _, t in ipairs(times) do lines[#lines + 1] = ("%s %.3f"):format(t.file, t.duration) end
server.sh("mkdir -p " .. sq(opts.times:match("^(.*)/[^/]*$") or "."))
pcall(write_file, opts.times, table.concat(lines, "\n") .. "\n")

io.write(("\n%d successes / %d failures / %d errors / %d pending : %d seconds\n"):format(
  counts.success, counts.failure, counts.error, counts.pending, os.time() - started))
os.exit((counts.failure + counts.error) == 0 and 0 or 1)
