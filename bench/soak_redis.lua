-- make soak, a process on the Redis limiter (bench/soak.lua starts one
-- under Lua 5.4 and one under LuaJIT): pins in a loop for a number of
-- seconds through periskope.limiter.redis, and writes down every pin.
--
--   SOAK_API_KEY=... SOAK_BASE_URL=... SOAK_PHONE=... SOAK_REDIS_PORT=... \
--     lua5.4 bench/soak_redis.lua <name> <seconds> <pin|many> [timeout [pid]]
--
-- It stops early when process pid (the soak) is gone.
-- pin: client:pin, one message at a time; many: client:pin_many, 8
-- messages at a time, 4 in flight. Lines on stdout (line-buffered, so a
-- crash leaves every line written before it):
--   P <pid>                          first
--   Q <id>                           before a pin is asked for
--   O <id> <status|kind> <attempts|-> <request events>   its outcome
--   M <seconds> <VmRSS kB>           every 5 s and at the end
--   L <epoch seconds>                each limiter event (a store failure:
--                                    this process paces alone for a while)
--   E <events> ...                   counts of limiter, circuit and wait events, last
local periskope = require "periskope"
local has_socket, socket = pcall(require, "socket")

-- The wall clock the servers' records use (os.time's seconds without
-- LuaSocket).
local function wall() return has_socket and socket.gettime() or os.time() end

local name, seconds, mode = arg[1], tonumber(arg[2]), arg[3]
local timeout = tonumber(arg[4] or "1")
local parent = arg[5] and "/proc/" .. arg[5] .. "/stat"

local function parent_gone()
  if not parent then return false end
  local f = io.open(parent, "r")
  if f then f:close() end
  return f == nil
end
if not (name and seconds and (mode == "pin" or mode == "many")) then
  io.stderr:write("usage: soak_redis.lua <name> <seconds> <pin|many> [timeout [pid]]\n")
  os.exit(2)
end
io.stdout:setvbuf("line")

local function rss()
  local f = io.open("/proc/self/status", "r")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return tonumber(text:match("VmRSS:%s*(%d+)")) or -1
end

local stat = assert(io.open("/proc/self/stat", "r"))
print("P " .. stat:read("*n"))
stat:close()

local sent = {}       -- id -> "request" events, until its outcome is written
local events = {}     -- "limiter:store", "circuit:open", "wait:rate-limit", ... -> count

local client = periskope.new {
  api_key = os.getenv("SOAK_API_KEY"),
  phone = os.getenv("SOAK_PHONE"),
  base_url = os.getenv("SOAK_BASE_URL"),
  timeout = timeout,
  connect_timeout = timeout,
  limiter = periskope.limiter.redis {
    host = "127.0.0.1",
    port = tonumber(os.getenv("SOAK_REDIS_PORT")),
    timeout = 0.5,
  },
  on_event = function(ev)
    if ev.type == "request" then
      local id = ev.url:match("/message/([^/]+)/pin$")
      if id then sent[id] = (sent[id] or 0) + 1 end
    elseif ev.type == "failure" then
      -- attempt 0: a failure without a request of its own.
      local key = "failure:" .. tostring(ev.kind) .. (ev.attempt == 0 and "(not-sent)" or "")
      events[key] = (events[key] or 0) + 1
    elseif ev.type == "limiter" or ev.type == "circuit" or ev.type == "wait" then
      if ev.type == "limiter" then print(("L %.3f"):format(wall())) end
      local key = ev.type .. ":" .. tostring(ev.state or ev.reason or "store")
      events[key] = (events[key] or 0) + 1
    end
  end,
}

-- A pin that sent nothing (the circuit open, the budget spent past
-- max_retry_wait) ends at once: the loop pauses after one rather than spin.
local idle = false

local function outcome(id, what, attempts)
  if what == "unavailable" or what == "rate_limited" then idle = true end
  print(("O %s %s %s %d"):format(id, tostring(what), attempts and tostring(attempts) or "-", sent[id] or 0))
  sent[id] = nil
end

local start = os.time()
local n, last_m = 0, -5
while os.time() - start < seconds and not parent_gone() do
  local batch = {}
  for i = 1, mode == "many" and 8 or 1 do
    n = n + 1
    batch[i] = { message_id = ("r%s-%d"):format(name, n), time = 7 }
    print("Q " .. batch[i].message_id)
  end
  if mode == "many" then
    local ok, results = pcall(client.pin_many, client, batch, { concurrency = 4 })
    for i, item in ipairs(batch) do
      local r = ok and results[i]
      if not ok then
        if i == 1 then io.stderr:write("pin_many raised: ", tostring(results), "\n") end
        outcome(item.message_id, "raised")
      elseif not r then
        outcome(item.message_id, "noresult")
      else
        outcome(item.message_id, r.status or r.kind, r.attempts)
      end
    end
  else
    local id = batch[1].message_id
    local ok, res, _, kind = pcall(client.pin, client, batch[1])
    if not ok then
      io.stderr:write("pin raised: ", tostring(res), "\n")
      outcome(id, "raised")
    else
      outcome(id, res and res.status or kind, res and res.attempts)
    end
  end
  if idle then
    os.execute("sleep 0.5")
    idle = false
  end
  local elapsed = os.time() - start
  if elapsed >= last_m + 5 then
    print(("M %d %d"):format(elapsed, rss()))
    last_m = elapsed
  end
end
print(("M %d %d"):format(os.time() - start, rss()))
local list = {}
for key, count in pairs(events) do list[#list + 1] = key .. "=" .. count end
table.sort(list)
print("E " .. table.concat(list, " "))
client:close()
