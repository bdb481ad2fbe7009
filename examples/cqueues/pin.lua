#!/usr/bin/env lua5.4
-- Pins messages at once under cqueues, a second event loop beside luv:
-- each pin is a job whose exchange libcurl runs behind one descriptor
-- (client:pin_job with io = "watch"), and cqueues.poll waits for it, or for
-- the job's timeout, without a thread. The key, phone and base URL come
-- from PERISKOPE_API_KEY, PERISKOPE_PHONE and PERISKOPE_BASE_URL.
--
--   lua5.4 examples/cqueues/pin.lua MESSAGE_ID...
local cqueues = require "cqueues"
local periskope = require "periskope"

-- Steps job to its end from inside a cqueues coroutine; returns what
-- client:pin returns.
local function drive(job)
  local fd
  while true do
    local action, a, b, c = job:step()
    if action == "watch" then
      -- a: the descriptor (the same at every step), b: "r", c: seconds
      -- until the job's own timer (nil: none). Ready or timed out, the
      -- next step sees which.
      fd = a
      cqueues.poll({ pollfd = a, events = b }, c)
    elseif action == "wait" then
      cqueues.sleep(a)
    else
      -- The loop forgets the descriptor before the job closes it.
      if fd then cqueues.cancel(fd) end
      job:close()
      return a, b, c
    end
  end
end

local client = periskope.new()
local loop = cqueues.new()
for _, id in ipairs(arg) do
  loop:wrap(function()
    local res, err, kind = drive(client:pin_job({ message_id = id, time = 7 }, { io = "watch" }))
    if res then
      print(id, res.status, res.ok and "pinned" or res.error)
    else
      print(id, "failed", err, kind)
    end
  end)
end
assert(loop:loop())
client:close()
