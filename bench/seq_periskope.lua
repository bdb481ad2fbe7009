-- Sequential pins with periskope on one client, for make bench; runs under
-- Lua 5.1-5.4 and LuaJIT (LUA_CPATH picks the build).
--
--   lua seq_periskope.lua BASE_URL API_KEY PHONE WARMUP N [ID_PREFIX] [hook]
--
-- Sends WARMUP pins, then N timed ones, each with a new message id. Prints
-- "periskope pins=<N> ok=<204s> seconds=<wall> cpu=<process CPU s>"; the
-- warm-up counts in neither. Exits 1 unless all N got a 204.
local periskope = require "periskope"
local clock = require "bench.clock"

local base, key, phone = arg[1], arg[2], arg[3]
local warmup, n = tonumber(arg[4]) or 100, tonumber(arg[5]) or 1000
local prefix = arg[6] or "lua-"
-- "hook": an on_event that does nothing, to measure what events cost.
local on_event = arg[7] == "hook" and function() end or nil

local client = periskope.new { api_key = key, phone = phone, base_url = base, on_event = on_event }

local function run(first, count)
  local ok = 0
  for i = first, first + count - 1 do
    local res = client:pin { message_id = prefix .. i }
    if res and res.status == 204 then ok = ok + 1 end
  end
  return ok
end

run(0, warmup)
local t0, c0 = clock.now(), os.clock()
local ok = run(warmup, n)
local seconds, cpu = clock.elapsed(t0), os.clock() - c0
client:close()
print(("periskope pins=%d ok=%d seconds=%.6f cpu=%.6f"):format(n, ok, seconds, cpu))
os.exit(ok == n and 0 or 1)
