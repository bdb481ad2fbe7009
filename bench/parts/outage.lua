-- Part 8 (outage) of make bench: issue 20's outage. pin_many of
-- BENCH_OUTAGE_PINS messages at BENCH_OUTAGE_CONCURRENCY with timeout =
-- BENCH_OUTAGE_TIMEOUT (every other option at its default) against a
-- server that takes every request and answers none: the wall time until
-- every pin has its answer, and the requests sent while the circuit was
-- open. Twice: a client whose first contact is the outage, and one that
-- pinned before it (bench/outage.lua is the client).
local server = require "spec.support.server"
local cjson = require "cjson"
local b = require "bench.common"

local CFG, sq, md, fmt = b.CFG, b.sq, b.md, b.fmt

local M = {}

local TARGET_WALL = 3 -- seconds, for 100 pins at 16 with timeout = 1 (issue 20)
local HANG = 60       -- seconds the server holds each request: past the whole run

-- One case: { warm, wall, items, kinds, sent (request events), sent_open
-- (request events after the circuit opened), arrived (requests the server
-- got), arrived_open (of those, after the circuit opened), opened (s after
-- the start), closed (s, or nil), retried (pins with more than one request),
-- waits, valid }, or nil and why.
local function run_case(warm)
  local n = CFG.outage_pins
  local srv = server.start { api_key = b.API_KEY, rate_limit = 1000000000, window = 60 }
  local ok, res = pcall(function()
    b.pin_server(srv)
    -- Every request the client could send hangs: attempts are at most
    -- 1 + retries (2) per pin; the warm-up pin is answered at once.
    local script = {}
    if warm then script[1] = { status = 204 } end
    for _ = 1, 3 * n + 10 do script[#script + 1] = { delay = HANG } end
    srv:script(script)
    local cmd = b.lua_env("lua5.4") .. b.on_cpu(CFG.client_cpu) .. "lua5.4 bench/outage.lua "
      .. table.concat({ sq(srv.base_url), sq(b.API_KEY), b.PHONE, n, CFG.outage_concurrency, CFG.outage_timeout,
        warm and 1 or 0 }, " ")
    local out, code = b.sh(cmd .. " 2>&1")
    local line = out:match("(%b{})%s*$")
    if code ~= 0 or not line then error(("client exit %s: %s"):format(tostring(code), out:sub(1, 600)), 0) end
    local r = cjson.decode(line)
    local c = { warm = warm, warm_status = r.warm, wall = r.stop - r.start, items = r.items, kinds = {} }
    for _, v in ipairs(r.items) do
      local k = tostring(v)
      c.kinds[k] = (c.kinds[k] or 0) + 1
    end
    -- The client's events, in the order they came.
    local open_t, close_t
    local per = {}
    c.sent, c.sent_open, c.waits = 0, 0, 0
    for _, e in ipairs(r.events) do
      if e.type == "circuit" and e.state == "open" and not open_t then open_t = e.t end
      if e.type == "circuit" and e.state == "closed" and open_t and not close_t then close_t = e.t end
      if e.type == "request" then
        c.sent = c.sent + 1
        if open_t and not close_t then c.sent_open = c.sent_open + 1 end
        per[e.index or 0] = (per[e.index or 0] or 0) + 1
      end
      if e.type == "wait" then c.waits = c.waits + 1 end
    end
    c.retried = 0
    for _, k in pairs(per) do
      if k > 1 then c.retried = c.retried + 1 end
    end
    c.opened = open_t and open_t - r.start
    c.closed = close_t and close_t - r.start
    -- The server's side: arrival times of the batch's requests (the
    -- mock's clock, ngx.now() to the millisecond, on the same machine).
    c.arrived, c.arrived_open = 0, 0
    for _, q in ipairs(srv:requests()) do
      if tostring(q.uri):match("/message/out%d+/pin$") then
        c.arrived = c.arrived + 1
        if open_t and q.time >= open_t and (not close_t or q.time <= close_t) then
          c.arrived_open = c.arrived_open + 1
        end
      end
    end
    local answered = 0
    for _, v in ipairs(r.items) do
      if type(v) == "number" then answered = answered + 1 end
    end
    c.valid = #r.items == n and answered == 0 and (not warm or r.warm == 204)
    return c
  end)
  srv:stop()
  if not ok then return nil, tostring(res) end
  return res
end

local function kinds_text(k)
  local t = {}
  for name, count in pairs(k) do t[#t + 1] = count .. " " .. name end
  table.sort(t)
  return table.concat(t, ", ")
end

function M.run()
  md("### 8. An outage: pin_many against a server that answers nothing")
  md("")
  local cases = {}
  for _, warm in ipairs { false, true } do
    b.say(("== outage: %d pins at %d, timeout %g s, %s client"):format(CFG.outage_pins, CFG.outage_concurrency,
      CFG.outage_timeout, warm and "a warm" or "a new"))
    local c, err = run_case(warm)
    if not c then
      md("Outage run FAILED: " .. err)
      md("")
      return nil
    end
    cases[#cases + 1] = c
  end
  md(("`client:pin_many` of %d pins at concurrency %d (`bench/outage.lua`, Lua 5.4), on a client with"
    .. " `timeout = %g` and every other option at its default: `retries = 2` (a `timeout` is retryable, after"
    .. " a backoff from 0.5 s), `circuit = { failures = 5, cooldown = 10 }`. The server is the local mock"
    .. " scripted to hold every request %d s, so each is taken in full (and recorded with its arrival time)"
    .. " and never answered. A *new* client meets the outage on its first contact (its first pin goes alone:"
    .. " it learns the budget); a *warm* one pinned once, answered, just before. Sent while open: the"
    .. " client's `request` events after its `circuit` event `open`, and the requests the server got after"
    .. " that moment (its arrival times against the client's clock, same machine).")
    :format(CFG.outage_pins, CFG.outage_concurrency, CFG.outage_timeout, HANG))
  md("")
  b.table_head({ "client", "every pin answered s", "circuit opened s", "requests sent", "server got",
    "sent while open (client / server)", "pins retried", "backoff waits", "answers" }, "lrrrrrrrl")
  for _, c in ipairs(cases) do
    b.row(c.warm and "warm" or "new", fmt(c.wall, 2), c.opened and fmt(c.opened, 2) or "never",
      ("%d"):format(c.sent), ("%d"):format(c.arrived), ("%d / %d"):format(c.sent_open, c.arrived_open),
      ("%d"):format(c.retried), ("%d"):format(c.waits),
      kinds_text(c.kinds) .. (c.valid and "" or " — NOT VALID"))
  end
  md("")
  for _, c in ipairs(cases) do
    if c.retried == 0 and c.waits > 0 and c.opened then
      md(("%s client: the circuit opened with the first timeouts, %.2f s in; %d pin%s that had failed before it"
        .. " opened waited a backoff to retry, found it open at the retry and ended with %s timeout, sending"
        .. " nothing more: the last answer came %.2f s after the circuit opened. No pin was sent twice.")
        :format(c.warm and "The warm" or "The new", c.opened, c.waits, c.waits == 1 and "" or "s",
          c.waits == 1 and "its" or "their", c.wall - c.opened))
      md("")
    end
  end
  return { cases = cases }
end

function M.targets(result)
  for _, c in ipairs(result.cases) do
    local who = c.warm and "warm client" or "new client"
    b.row(("outage, %d pins at %d, timeout %g s (%s): every pin answered < %g s"):format(CFG.outage_pins,
      CFG.outage_concurrency, CFG.outage_timeout, who, TARGET_WALL), fmt(c.wall, 2) .. " s",
      b.verdict(c.wall < TARGET_WALL))
    b.row(("outage (%s): requests sent while the circuit was open = 0"):format(who),
      ("%d (client), %d (server)"):format(c.sent_open, c.arrived_open),
      b.verdict(c.sent_open == 0 and c.arrived_open == 0 and c.opened ~= nil))
  end
end

function M.valid(result)
  for _, c in ipairs(result.cases) do
    if not c.valid then return false end
  end
  return true
end

return M
