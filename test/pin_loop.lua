-- pins N messages on one client against PERISKOPE_BASE_URL (the local
-- server, via run_with_server.lua), then closes it: the leak check's load.
--   lua test/pin_loop.lua 1000
-- PERISKOPE_CPATH (make check-valgrind sets it) names the build to load.
local cpath = os.getenv("PERISKOPE_CPATH")
if cpath and cpath ~= "" then package.cpath = cpath .. ";" .. package.cpath end
local periskope = require "periskope"

local n = tonumber(arg[1]) or 1000
local c = periskope.new {}
local ok = 0
for i = 1, n do
  local res = c:pin { message_id = "leak-" .. i, time = 7 }
  if res and res.status == 204 then ok = ok + 1 end
end
-- One of each other path, so their memory is checked too.
c:build_pin { message_id = "x" }
periskope.read_response(429, { ["Retry-After"] = "1" }, '{"message":"slow"}')
pcall(c.pin, c, { message_id = "x", time = 5 })
c:close()
-- A hook that pins and pins many on its own client, then closes it: the
-- nested calls' transfers and the deferred release are checked too.
local h, nested
h = periskope.new { on_event = function(ev)
  if ev.type == "request" and not nested then
    nested = true
    h:pin { message_id = "nested" }
    h:pin_many { { message_id = "n1" }, { message_id = "n2" } }
  elseif ev.type == "response" and ev.index == 3 then
    h:close()
  end
end }
pcall(h.pin_many, h, { { message_id = "a" }, { message_id = "b" }, { message_id = "c" } })
assert(tostring(h) == "periskope.Client (closed)")
collectgarbage()
print(("pin_loop: %d of %d pins answered 204"):format(ok, n))
os.exit(ok == n and 0 or 1, true) -- true: close the state, so valgrind sees it all freed
