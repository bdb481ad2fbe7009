-- client:pin_many at several concurrencies, for make bench, against a
-- server that answers every pin after a fixed latency.
--
--   lua pin_many.lua BASE_URL API_KEY PHONE ROUND_TRIPS C1 [C2 ...]
--
-- For each concurrency c: a warm-up batch of c pins (it opens the
-- connections), then a timed batch of ROUND_TRIPS * c pins, so that every
-- concurrency takes about ROUND_TRIPS latencies. Prints one line per c:
-- "pin_many c=<c> pins=<n> ok=<204s> seconds=<wall>".
local periskope = require "periskope"
local clock = require "bench.clock"

local base, key, phone = arg[1], arg[2], arg[3]
local trips = tonumber(arg[4]) or 50

local client = periskope.new { api_key = key, phone = phone, base_url = base }

local function batch(prefix, count, c)
  local list = {}
  for i = 1, count do list[i] = { message_id = prefix .. i } end
  local results = client:pin_many(list, { concurrency = c })
  local ok = 0
  for i = 1, count do
    if results[i].status == 204 then ok = ok + 1 end
  end
  return ok
end

local all_ok = true
for j = 5, #arg do
  local c = assert(tonumber(arg[j]), "bench: concurrency must be a number")
  batch("many-warm-" .. c .. "-", c, c)
  local n = trips * c
  local t0 = clock.now()
  local ok = batch("many-" .. c .. "-", n, c)
  local seconds = clock.elapsed(t0)
  print(("pin_many c=%d pins=%d ok=%d seconds=%.6f"):format(c, n, ok, seconds))
  io.stdout:flush()
  all_ok = all_ok and ok == n
end
client:close()
os.exit(all_ok and 0 or 1)
