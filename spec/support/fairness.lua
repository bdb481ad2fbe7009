-- Many processes, one API key, one Redis: spec/support/one_at_a_time.lua
-- run side by side against the local Periskope server in its rate-limited
-- mode, and what came of it. Serves spec/contention_fair_spec.lua and the
-- fairness part of make bench. Plain Lua for 5.1-5.4 and LuaJIT.
--
--   local fairness = require "spec.support.fairness"
--   local r = fairness.run {
--     procs = 16, pins = 5,        -- processes, and pins each (one at a time)
--     rate = 10, window = 2,       -- the server's budget: rate per window (s)
--     lua = "luajit",              -- the interpreter of the processes
--     control = false,             -- true: no limiter (each paces alone)
--     cpath = nil,                 -- another build of the module (an A/B
--                                  -- run); default: this checkout's
--   }
--   r.total (pins), r.ok (answered 204), r.answered429 (answers 429 the
--   server sent), r.elapsed (s, start to the last process's end), r.ideal
--   (s: total / rate * window), r.waits (each pin's seconds, sorted),
--   r.slowest, r.p99, r.span (first to last request, server clock),
--   r.store_failures (limiter events: asks the store did not answer, so
--   that a pin was paced by its process alone) and r.store_error (one)
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local hosts = require "spec.support.hosts"

local sh, sq = server.sh, server.quote

local M = {}

local now = server.now

-- The q-quantile of a sorted list (nearest rank).
function M.quantile(sorted, q)
  if #sorted == 0 then return nil end
  local i = math.ceil(q * #sorted)
  if i < 1 then i = 1 end
  return sorted[i]
end

function M.run(opts)
  local procs, pins = opts.procs, opts.pins
  local rate, window = opts.rate or 10, opts.window or 2
  local lua = opts.lua or "luajit"
  local cpath = opts.cpath or hosts.build(lua)
  local root = hosts.root()
  local r = { procs = procs, total = procs * pins, ideal = procs * pins / rate * window }
  local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-fair.XXXXXX\""):match("[^\n]+")
  local ok, err = pcall(redis.with, {}, function(rd)
    server.with({ rate_limit = rate, window = window, connections = 4096 }, function(srv)
      local env = table.concat({
        "PERISKOPE_API_KEY=" .. sq(srv.api_key),
        "PERISKOPE_BASE_URL=" .. sq(srv.base_url),
        "PERISKOPE_PHONE=919874532456",
        "PERISKOPE_REDIS_PORT=" .. rd.port,
        "PERISKOPE_LIMITER=" .. (opts.control and "none" or "redis"),
        "LUA_CPATH=" .. sq(cpath .. ";;"),
        "LUA_PATH=" .. sq(root .. "/?.lua;;"),
      }, " ")
      local lines = { "cd " .. sq(root) }
      for i = 1, procs do
        lines[#lines + 1] = env .. " " .. lua .. " spec/support/one_at_a_time.lua p" .. i .. " " .. pins
          .. " >" .. sq(dir .. "/p" .. i) .. " 2>&1 &"
      end
      lines[#lines + 1] = "wait"
      local t0 = now()
      sh(table.concat(lines, "\n"))
      r.elapsed = now() - t0
      r.waits, r.ok, r.lines, r.store_failures = {}, 0, 0, 0
      for i = 1, procs do
        local text = server.read_file(dir .. "/p" .. i) or ""
        for status, took in text:gmatch("p%d+%-%d+ (%S+) ([%d.]+)\n") do
          r.lines = r.lines + 1
          if status == "204" then r.ok = r.ok + 1 end
          r.waits[#r.waits + 1] = tonumber(took)
        end
        local n, why = text:match("\nlimiter failures (%d+) ([^\n]*)")
        r.store_failures = r.store_failures + (tonumber(n) or 0)
        if why and why ~= "" then r.store_error = r.store_error or why end
        if r.lines < i * pins and not r.failure then
          r.failure = ("process %d: %s"):format(i, text:sub(1, 400))
        end
      end
      table.sort(r.waits)
      r.slowest = r.waits[#r.waits]
      r.p99 = M.quantile(r.waits, 0.99)
      local stats = srv:stats()
      r.answered429 = stats.statuses[429] or 0
      r.requests = stats.requests
      local first, last = math.huge, 0
      for _, q in ipairs(srv:requests()) do
        if q.time < first then first = q.time end
        if q.time > last then last = q.time end
      end
      r.span = last - first
    end)
  end)
  sh("rm -rf " .. sq(dir))
  if not ok then error(err, 0) end
  return r
end

-- One line for the record: what the contention spec prints, what the
-- bench tabulates.
function M.line(name, r)
  return ("%s: %d processes x %d pins: %d of %d ok, %d answered 429, %.2f s (ideal %.0f s, %.2fx),"
    .. " slowest pin %.2f s, p99 %.2f s, %d store failures%s"):format(name, r.procs, r.total / r.procs,
    r.ok, r.total, r.answered429, r.elapsed, r.ideal, r.elapsed / r.ideal, r.slowest or -1, r.p99 or -1,
    r.store_failures, r.store_error and (" (" .. r.store_error .. ")") or "")
end

return M
