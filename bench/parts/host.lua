-- Part 6 (host) of make bench: CPU per pin of an nginx worker pinning
-- BENCH_HOST_PINS times through periskope from a content handler.
local server = require "spec.support.server"
local b = require "bench.common"

local CFG, sq, md, commas, fmt = b.CFG, b.sq, b.md, b.commas, b.fmt

local M = {}

-- The host's location: its content handler pins ?n= times on one client
-- (the LuaJIT build, as nginx's Lua is LuaJIT) against base_url.
local function location(base_url)
  return ([[
    location = /bench/pins {
      content_by_lua_block {
        local c = package.loaded.bench_host_client
        if not c then
          c = require("periskope").new { api_key = %q, phone = %q, base_url = %q }
          package.loaded.bench_host_client = c
        end
        local args = ngx.req.get_uri_args()
        local ok = 0
        for i = 1, tonumber(args.n) do
          local res = c:pin { message_id = args.prefix .. i }
          if res and res.status == 204 then ok = ok + 1 end
        end
        ngx.say("ok=", ok)
      }
    }]]):format(b.API_KEY, b.PHONE, base_url)
end

-- A second nginx, the host: one worker whose content handler pins n times
-- in a loop through periskope against the lean endpoint of the main
-- server. The worker's CPU time per pin is what a pin takes from the other
-- requests that worker serves. Returns { cpu_us, valid } or nil.
function M.run(ctx)
  local srv = ctx.srv
  md("### 6. CPU per pin of an nginx worker pinning through periskope")
  md("")
  local root = b.sh("pwd"):match("[^\n]+")
  local result
  local ok, err = pcall(server.with, { api_key = b.API_KEY, lua_cpath = root .. "/build/luajit/?.so",
      extra_server = location(srv.url .. "/lean/v1") }, function(h)
    local pids = b.server_pids(h)
    local worker = pids[2]
    if not worker then error("the host has no worker", 0) end
    if b.HAVE_TASKSET then b.sh("taskset -pc " .. CFG.client_cpu .. " " .. worker .. " >/dev/null 2>&1") end
    local function call(n, prefix)
      local out = b.sh("curl -s --max-time 600 " .. sq(h.url .. "/bench/pins?n=" .. n .. "&prefix=" .. prefix))
      return tonumber(out:match("ok=(%d+)"))
    end
    b.say(("== nginx host: %d pins from one worker's content handler"):format(CFG.host_pins))
    call(CFG.warmup, "host-warm-")
    assert(srv:reset() == nil)
    local c0, s0, t0 = b.pid_cpu(worker), b.server_cpu(srv), b.clock.now()
    local got = call(CFG.host_pins, "host-")
    local seconds = b.clock.elapsed(t0)
    local c1, s1 = b.pid_cpu(worker), b.server_cpu(srv)
    result = { ok = got or 0, cpu = c1 - c0, server = s1 - s0, seconds = seconds,
      counted = srv:stats().requests }
  end)
  if not ok or not result then
    md("host run FAILED: " .. tostring(err))
    md("")
    return nil
  end
  local n = CFG.host_pins
  result.valid = result.ok == n and result.counted == n
  md(("One nginx worker (the host, `lua_cpath` = `build/luajit`) serves one request whose"
    .. " content handler pins %s times in a loop on one client, against the lean endpoint of"
    .. " the main server. The worker's CPU time (user + system, `/proc/<pid>/stat`) over the"
    .. " request, divided by the pins, is what each pin takes from the other requests that"
    .. " worker would serve; the blocking pin also holds the worker for the whole round trip"
    .. " (the non-blocking way, periskope.ngx, is measured in bench/nonblocking.md)."):format(commas(n)))
  md("")
  b.table_head({ "pins", "seconds", "pins/s", "worker CPU µs/pin", "server CPU µs/pin", "checks" }, "rrrrrl")
  b.row(commas(n), fmt(result.seconds, 2), commas(n / result.seconds), fmt(result.cpu / n * 1e6, 1),
    fmt(result.server / n * 1e6, 1), ("%s/%s 204s; server counted %s%s"):format(commas(result.ok),
    commas(n), commas(result.counted), result.valid and "" or " — NOT VALID"))
  md("")
  return { cpu_us = result.cpu / n * 1e6, valid = result.valid }
end

function M.valid(result) return result.valid end

return M
