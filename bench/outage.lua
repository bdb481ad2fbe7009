-- The client of make bench's part "outage": one pin_many through an outage.
--
--   lua5.4 bench/outage.lua BASE_URL API_KEY PHONE PINS CONCURRENCY TIMEOUT WARM
--
-- A client with timeout = TIMEOUT and every other option at its default
-- (retries 2, circuit { failures = 5, cooldown = 10 }) pins PINS messages
-- (ids out1, out2, ...) with pin_many at CONCURRENCY against BASE_URL,
-- whose server answers none of them. With WARM = 1 one pin (id warm) goes
-- first and must be answered 204: the client has learned the budget, as
-- one that ran before the outage has; with 0 the batch is its first
-- contact (its first pin goes alone). Prints one JSON object: the wall
-- clock (epoch seconds, LuaSocket) before and after pin_many, each item's
-- status or kind, and the events (time, type, index, attempt, kind, state).
local periskope = require "periskope"
local socket = require "socket"
local cjson = require "cjson"

local base, key, phone = arg[1], arg[2], arg[3]
local pins, concurrency, timeout = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
local warm = arg[7] == "1"

local events = {}
local client = periskope.new {
  api_key = key, phone = phone, base_url = base, timeout = timeout,
  on_event = function(ev)
    events[#events + 1] = { t = socket.gettime(), type = ev.type, index = ev.index, attempt = ev.attempt,
      kind = ev.kind, state = ev.state, seconds = ev.seconds, reason = ev.reason }
  end,
}

local out = {}
if warm then
  local res, err = client:pin { message_id = "warm" }
  out.warm = res and res.status or err
end
events = {}

local list = {}
for i = 1, pins do list[i] = { message_id = "out" .. i } end
out.start = socket.gettime()
local results = client:pin_many(list, { concurrency = concurrency })
out.stop = socket.gettime()
out.items = {}
for i, r in ipairs(results) do out.items[i] = r.status or r.kind end
out.events = events
client:close()
io.write(cjson.encode(out), "\n")
