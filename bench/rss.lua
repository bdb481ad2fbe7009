-- Memory of a periskope process over many sequential pins, for make bench.
--
--   lua rss.lua BASE_URL API_KEY PHONE N1 N2
--
-- Pins N2 times on one client and reads VmRSS (/proc/self/status) and the
-- Lua heap (collectgarbage "count") after N1 and after N2 pins, without
-- forcing a collection: what a long-running process would show. Prints
-- "rss pins=<n> ok=<204s> vmrss_kib=<k> lua_kib=<k>" at each point.
local periskope = require "periskope"

local base, key, phone = arg[1], arg[2], arg[3]
local n1, n2 = tonumber(arg[4]) or 10000, tonumber(arg[5]) or 100000

local function vmrss()
  local f = assert(io.open("/proc/self/status", "r"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)%s*kB"))
end

local client = periskope.new { api_key = key, phone = phone, base_url = base }
local ok = 0
local function report(i)
  print(("rss pins=%d ok=%d vmrss_kib=%d lua_kib=%.0f"):format(
    i, ok, vmrss(), collectgarbage("count")))
  io.stdout:flush()
end
for i = 1, n2 do
  local res = client:pin { message_id = "rss-" .. i }
  if res and res.status == 204 then ok = ok + 1 end
  if i == n1 or i == n2 then report(i) end
end
client:close()
os.exit(ok == n2 and 0 or 1)
