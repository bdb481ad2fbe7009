-- periskope.limiter.redis's queue: waiters of a shared budget take its
-- slots in the order they began to wait, whichever process they are in,
-- and one that dies waiting stops holding its place when its ticket's
-- lease ends. Beside spec/limiter_spec.lua, which has the rest of the
-- stores, so that the two run side by side.
local periskope = require "periskope"
local server = require "spec.support.server"
local redis = require "spec.support.redis"
local util = require "spec.support.util"

local sh, sq = server.sh, server.quote

local sha256_hex = util.sha256_hex

local recorder = util.recorder

local of_type = util.of_type

-- The queue part of a stored budget's text (see psk_shared_encode): the
-- last ticket given, and the waiting tickets, lowest first, each { id,
-- until } (its lease's end, server epoch seconds).
local function stored_queue(text)
  local words = {}
  for w in (text or ""):gmatch("%S+") do words[#words + 1] = w end
  assert(words[1] == "p3", "not a budget: " .. tostring(text))
  local q = { last = tonumber(words[15]), n = tonumber(words[16]), tickets = {} }
  local base, id = tonumber(words[17]), nil
  for i = 1, q.n do
    local gap, off = words[17 + i]:match("^(%d+):(%d+)$")
    id = i == 1 and q.last - tonumber(gap) or id + tonumber(gap)
    q.tickets[i] = { id = id, ["until"] = (base + tonumber(off)) / 10 }
  end
  return q
end

local wait_for = util.wait_for

describe("periskope.limiter.redis's queue #redis", function()
  local rd
  setup(function() rd = redis.start() end)
  teardown(function() if rd then rd:stop() end end)
  before_each(function() rd:cli("FLUSHALL") end)

  -- Waiters of a shared budget take its slots in the order they began
  -- to wait, whichever process they are in; one that dies waiting stops
  -- holding its place when its ticket's lease ends. On servers of
  -- their own: 1 request per window.
  local queue_srv, dir
  local pids, servers = {}, {}
  teardown(function()
    for _, pid in ipairs(pids) do sh("kill -KILL " .. pid .. " 2>/dev/null") end
    if dir then sh("rm -rf " .. sq(dir)) end
    for _, srv in ipairs(servers) do srv:stop() end
  end)

  -- The queue's server: one request per window of `window` seconds
  -- (default 1), started once per window length, reset for each spec.
  local function one_per_window(window)
    window = window or 1
    if not servers[window] then
      servers[window] = server.start { rate_limit = 1, window = window }
      servers[#servers + 1] = servers[window]
    end
    if not dir then dir = sh("mktemp -d \"${TMPDIR:-/tmp}/periskope-queue.XXXXXX\""):match("[^\n]+") end
    queue_srv = servers[window]
    queue_srv:reset()
    return queue_srv
  end

  local function name() return "periskope:" .. sha256_hex(queue_srv.api_key) end

  -- A process (this run's interpreter and module) that pins one id
  -- through the Redis limiter, in the background; its pid. Loaded and
  -- connected, it says so (<id>.ready) and pins only once told to
  -- (<id>.go): on a loaded machine a process starts late, its pin not.
  -- One that `dies` kills itself (SIGKILL) at its first wait for a slot,
  -- once the store has given it a ticket, saying so first (<id>.dying):
  -- killed from outside, it could be scheduled late enough to have its
  -- slot already.
  local function waiter(id, dies)
    local script = dir .. "/" .. id .. ".lua"
    local base = dir .. "/" .. id
    server.write_file(script, ([[
      package.cpath = %q .. ";" .. package.cpath
      local socket = require "socket"
      local periskope = require "periskope"
      local on_event
      if %s then
        on_event = function(ev)
          if ev.type == "wait" and ev.reason == "rate-limit" then
            io.open(%q, "w"):close()
            os.execute("kill -KILL " .. io.open("/proc/self/stat"):read("*l"):match("^%%d+"))
          end
        end
      end
      local c = periskope.new { api_key = %q, phone = "919874532456", base_url = %q,
        limiter = periskope.limiter.redis { port = %d }, on_event = on_event }
      io.open(%q, "w"):close()
      local deadline = socket.gettime() + 60   -- a test that gave up never says go
      while not io.open(%q) do
        if socket.gettime() > deadline then error("no go within 60 s") end
        socket.sleep(0.002)
      end
      local res = c:pin { message_id = %q }
      io.stdout:write(res and res.status or "failed")
    ]]):format(os.getenv("PERISKOPE_CPATH") or "", tostring(dies == true), base .. ".dying", queue_srv.api_key,
      queue_srv.base_url, rd.port, base .. ".ready", base .. ".go", id))
    local pid = sh(util.lua_bin() .. " " .. sq(script) .. " >" .. sq(dir .. "/" .. id .. ".out")
      .. " 2>&1 </dev/null & echo $!"):match("%d+")
    pids[#pids + 1] = pid
    return pid
  end

  local function running(pid)
    local _, code = sh("kill -0 " .. pid .. " 2>/dev/null")
    return code == 0
  end

  local function queue() return stored_queue(rd:cli("GET", name())) end

  -- Starts a waiter and, once it is ready, lets it pin; waits until it
  -- holds a ticket (the store gave one more) or has ended (it came when a
  -- slot was free). Its pid.
  local function start_waiter(id)
    local pid = waiter(id)
    wait_for(id .. " to be ready", 10, function() return server.read_file(dir .. "/" .. id .. ".ready") end)
    local last = queue().last
    server.write_file(dir .. "/" .. id .. ".go", "")
    wait_for(id .. " to wait or end", 10, function() return queue().last > last or not running(pid) end)
    return pid
  end

  local function pinned()
    local ids = {}
    for _, r in ipairs(queue_srv:requests()) do ids[#ids + 1] = r.uri:match("/message/([^/]+)/pin") end
    return ids
  end

  it("serves waiters of several processes in the order they began to wait", function()
    local c = util.client(one_per_window(), { limiter = periskope.limiter.redis { port = rd.port } })
    assert.equal(204, c:pin { message_id = "first" }.status)   -- the window's one slot
    -- Each starts once the one before waits (or is done).
    local started = {}
    for i = 1, 3 do started[i] = start_waiter("w" .. i) end
    for i = 1, 3 do wait_for("w" .. i .. " to end", 10, function() return not running(started[i]) end) end
    assert.same({ "first", "w1", "w2", "w3" }, pinned())
    for i = 1, 3 do assert.equal("204", server.read_file(dir .. "/w" .. i .. ".out")) end
    assert.is_nil(queue_srv:stats().statuses[429])
    assert.equal(0, queue().n)
    c:close()
  end)

  it("a waiter that dies holds its place until its ticket's lease ends, no longer", function()
    local events, hook = recorder()
    -- 3 s windows: time for a waiter to ask while the window's one slot
    -- is taken, however loaded the machine.
    local c = util.client(one_per_window(3), { limiter = periskope.limiter.redis { port = rd.port },
      on_event = hook })
    -- A waiter that dies holding its ticket (again, should the window
    -- turn before it asks: it then finds a slot and pins).
    local lease
    for attempt = 1, 5 do
      local id = "dies" .. attempt
      local pid = waiter(id, true)
      wait_for(id .. " to be ready", 10, function() return server.read_file(dir .. "/" .. id .. ".ready") end)
      assert.equal(204, c:pin { message_id = "first" .. attempt }.status)   -- the window's one slot
      local last = queue().last
      server.write_file(dir .. "/" .. id .. ".go", "")
      wait_for(id .. "'s end", 10, function() return not running(pid) end)
      if server.read_file(dir .. "/" .. id .. ".dying") then
        assert.equal("", server.read_file(dir .. "/" .. id .. ".out"))   -- it never pinned
        local q = queue()
        assert.equal(last + 1, q.last)
        assert.equal(1, q.n)   -- its ticket, still there
        assert.equal(last + 1, q.tickets[1].id)
        lease = q.tickets[1]["until"]
        break
      end
      assert.equal("204", server.read_file(dir .. "/" .. id .. ".out"))
    end
    assert.truthy(lease, "no waiter asked before the window turned in 5 attempts")
    -- Behind the dead ticket, this one waits out its lease, then goes.
    assert.equal(204, c:pin { message_id = "after" }.status)
    local reqs = queue_srv:requests()
    assert.equal("/v1/message/after/pin", reqs[#reqs].uri)
    local at = reqs[#reqs].time
    assert.is_true(at >= lease - 0.05, ("went at %.2f, before the lease's end %.2f"):format(at, lease))
    assert.is_true(at <= lease + util.within(1.5),
      ("went at %.2f, long after the lease's end %.2f"):format(at, lease))
    assert.is_nil(queue_srv:stats().statuses[429])
    assert.equal(0, #of_type(events, "limiter"))
    assert.equal(0, queue().n)
    c:close()
  end)
end)
