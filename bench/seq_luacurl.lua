-- Sequential pins with luacurl 0.3 (Debian's lua-curl: require "curl"), for
-- make bench, under LuaJIT or Lua 5.1: one easy handle reused for every pin,
-- the same headers and body as periskope. luacurl has no getinfo, so the
-- status comes from the status line, through a header callback.
--
--   luajit seq_luacurl.lua BASE_URL API_KEY PHONE USER_AGENT WARMUP N [ID_PREFIX]
--
-- Prints "luacurl pins=<N> ok=<204s> seconds=<wall> cpu=<process CPU s>".
local curl = require "curl"
local clock = require "bench.clock"

local base, key, phone, ua = arg[1], arg[2], arg[3], arg[4]
local warmup, n = tonumber(arg[5]) or 100, tonumber(arg[6]) or 1000
local prefix = arg[7] or "luacurl-"

local e = curl.easy_init()
local status
e:setopt(curl.OPT_NOSIGNAL, 1)
e:setopt(curl.OPT_POST, 1)
e:setopt(curl.OPT_HTTPHEADER, {
  "Authorization: Bearer " .. key,
  "x-phone: " .. phone,
  "Content-Type: application/json",
  "Accept: application/json",
  "User-Agent: " .. ua,
  "Expect:",
})
e:setopt(curl.OPT_HEADERFUNCTION, function(line, len)
  local s = line:match("^HTTP/%S+ (%d%d%d)")
  if s then status = tonumber(s) end
  return len
end)
e:setopt(curl.OPT_WRITEFUNCTION, function(_, len) return len end)

local function run(first, count)
  local ok = 0
  for i = first, first + count - 1 do
    status = nil
    e:setopt(curl.OPT_URL, base .. "/message/" .. prefix .. i .. "/pin")
    e:setopt(curl.OPT_POSTFIELDS, '{"pin":true}')
    e:perform()
    if status == 204 then ok = ok + 1 end
  end
  return ok
end

run(0, warmup)
local t0, c0 = clock.now(), os.clock()
local ok = run(warmup, n)
local seconds, cpu = clock.elapsed(t0), os.clock() - c0
print(("luacurl pins=%d ok=%d seconds=%.6f cpu=%.6f"):format(n, ok, seconds, cpu))
os.exit(ok == n and 0 or 1)
