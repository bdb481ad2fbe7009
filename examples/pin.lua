#!/usr/bin/env lua5.4
-- Pin (or unpin) one WhatsApp message through Periskope.
--
--   PERISKOPE_API_KEY=... PERISKOPE_PHONE=919876543210 \
--     examples/pin.lua <message_id> [--unpin] [--time 1|7|30]
--
-- Its first line names lua5.4, which `make` builds for (Debian's plain
-- `lua` is 5.2); with a module built for another Lua, run it with that
-- one: `luajit examples/pin.lua ...`.
-- PERISKOPE_BASE_URL points it elsewhere (make demo uses the local server).
local periskope = require "periskope"

local function usage(msg)
  io.stderr:write(msg and ("pin.lua: " .. msg .. "\n") or "",
    "usage: examples/pin.lua <message_id> [--unpin] [--time 1|7|30]\n")
  os.exit(2)
end

local args = { pin = true }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--unpin" then
    args.pin = false
  elseif a == "--time" then
    i = i + 1
    args.time = tonumber(arg[i]) or usage("--time needs 1, 7 or 30")
  elseif a == "-h" or a == "--help" then
    usage()
  elseif a:sub(1, 2) == "--" then
    usage("unknown flag " .. a)
  elseif args.message_id then
    usage("one message id only")
  else
    args.message_id = a
  end
  i = i + 1
end
if not args.message_id then usage("a message id is required") end

-- Misuse (a bad id, time or phone) raises: show it as a usage error.
local ok, res, err, kind = pcall(periskope.pin, args)
if not ok then usage(tostring(res)) end

if not res then
  print(("failed      %s (kind: %s)"):format(err, kind))
  os.exit(1)
end

local what = args.pin and "pinned" or "unpinned"
print(("%-11s %s"):format(res.ok and what or "refused", args.message_id))
print(("%-11s %d%s"):format("status", res.status, res.ok and "" or ("  " .. res.error)))
local rl = res.rate_limit
if rl then
  local left = rl.reset and (" (window resets at %s UTC)"):format(os.date("!%H:%M:%S", rl.reset)) or ""
  print(("%-11s %s of %s requests left%s"):format("rate limit", tostring(rl.remaining),
    tostring(rl.limit), left))
end
if res.trace_id then print(("%-11s %s"):format("trace id", res.trace_id)) end
print(("%-11s %d"):format("attempts", res.attempts))
os.exit(res.ok and 0 or 1)
