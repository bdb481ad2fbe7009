-- periskope.uv: pin from Neovim (or any host with luv) without blocking its
-- loop and without a thread. The pin job runs on the loop's thread: its
-- HTTP exchange is libcurl's, whose sockets sit behind one descriptor
-- that a uv poll handle watches (client:pin_job's io = "watch"), and its
-- waits are uv timers; a Redis limiter's operations go over luv TCP. No
-- thread of libuv's pool is taken, so pins never hold back the host's own
-- file work, and any number run at once.
--
--   local puv = require "periskope.uv"
--   local handle = puv.pin(client_or_options, { message_id = id, time = 7 },
--     function(res, err, kind) ... end)
--   handle:cancel()      -- the callback then gets nil, message, "cancelled"
--   -- or, inside a coroutine, without a callback:
--   local res, err, kind = puv.pin(client_or_options, args)
--
-- The callback is called exactly once: with what client:pin returns, or
-- nil, message, kind where kind is also "closed" (the client was closed
-- while the pin was in flight), "cancelled", or "error" (on_event raised:
-- its error is the message). In Neovim the steps, on_event and the
-- callback run on the main loop (vim.schedule), where every vim.api
-- function may be called, and pins in flight are cancelled when Neovim
-- exits (VimLeavePre).

-- luacheck: globals vim
local periskope = require "periskope"

local unpack = table.unpack or unpack   -- luacheck: ignore 143

local M = {}

local WATCH = { io = "watch" }

-- What the coroutine is resumed with when on_event raised: it raises again.
local RAISED = {}

local nvim = type(vim) == "table" and type(vim.schedule) == "function"

local function get_uv()
  if nvim then return vim.uv or vim.loop end
  return require "luv"
end

-- Runs fn soon, never inside the caller's own call and never raising into
-- the loop: in Neovim on the main loop (vim.schedule: every vim.api
-- function may be called), an error of fn reported as an error message
-- (raised, it would surface in whatever vim.wait runs the loop); elsewhere
-- from a 0 ms timer, an error of fn written to stderr (a raise in a luv
-- callback would end the process).
local function later(uv, fn)
  local function run()
    local ok, err = xpcall(fn, debug.traceback)
    if ok then return end
    if nvim then
      vim.api.nvim_err_writeln("periskope.uv: " .. tostring(err))
    else
      io.stderr:write("periskope.uv: ", tostring(err), "\n")
    end
  end
  if nvim then return vim.schedule(run) end
  local t = uv.new_timer()
  t:start(0, 0, function()
    t:close()
    run()
  end)
end

-- Pins in flight, cancelled when Neovim exits.
local active = setmetatable({}, { __mode = "k" })
local exit_hooked = false

local function hook_exit()
  if exit_hooked or not nvim or not vim.api.nvim_create_autocmd then return end
  exit_hooked = true
  vim.api.nvim_create_autocmd("VimLeavePre", {
    callback = function()
      for handle in pairs(active) do handle:cancel() end
    end,
  })
end

-- The text client:pin raises for the same arguments: pin_job's errors name
-- pin_job, or '?' when called through pcall.
local function as_pin(err)
  if type(err) ~= "string" then return err end
  return (err:gsub("^bad argument #%d+ to '[^']*'", "bad argument #1 to 'pin'"))
end

local function failure_kind(err)
  if type(err) == "string" and err:find("attempt to use a closed client", 1, true) then
    return "closed"
  end
  return "error"
end

-- Pins with client (a periskope client, or a table of options for a client
-- made for this pin and closed after it) and calls callback(res, err, kind)
-- once. Raises at once, as client:pin does, for bad arguments or options.
-- Returns a handle whose cancel() ends the pin (a second cancel, or one
-- after the end, does nothing). Without a callback, from inside a
-- coroutine, it yields until the pin is done and returns its results.
function M.pin(client, args, callback)
  local uv = get_uv()
  local own = false
  if type(client) == "table" and getmetatable(client) == nil then
    client = periskope.new(client)
    own = true
  end
  local co
  if callback == nil then
    co = coroutine.running()
    if not co or (coroutine.isyieldable and not coroutine.isyieldable()) then
      if own then client:close() end
      error("periskope: periskope.uv.pin needs a callback, or a coroutine to resume", 2)
    end
  elseif type(callback) ~= "function" then
    if own then client:close() end
    error("bad argument #3 to 'pin' (a function expected, got " .. type(callback) .. ")", 2)
  end
  local made, job = pcall(client.pin_job, client, args, WATCH)
  if not made then
    if own then client:close() end
    error(as_pin(job), 0)
  end

  local handle = {}
  local poll, poll_fd, timer, done, first = nil, nil, uv.new_timer(), false, true
  local inside = true   -- still inside this call to pin
  local result          -- coroutine mode: the results, when they came inside
  local tcp             -- the store's connection (the Redis limiter's), if open

  local function quiet()
    if poll then poll:stop() end
    timer:stop()
    if tcp then tcp:read_stop() end
  end

  local function drop_tcp()
    if tcp and not tcp:is_closing() then tcp:close() end
    tcp = nil
  end

  -- The end, once: handles closed, then the client (when it is ours), then
  -- the caller told.
  local function finish(...)
    if done then return end
    done = true
    active[handle] = nil
    quiet()
    drop_tcp()
    if poll then poll:close() end
    timer:close()
    job:close()           -- its descriptor: no longer watched
    if own then client:close() end
    local r = { n = select("#", ...), ... }
    if co and inside then
      result = r            -- returned by pin itself, below
    elseif co then
      later(uv, function()
        local ok, err = coroutine.resume(co, unpack(r, 1, r.n))
        if not ok then error(err, 0) end
      end)
    else
      later(uv, function() callback(unpack(r, 1, r.n)) end)
    end
  end

  local step
  local function ready()
    quiet()
    if nvim then vim.schedule(step) else step() end
  end

  -- The next step with what a socket call of the store gave.
  local function answer(...)
    local r = { n = select("#", ...), ... }
    quiet()
    if nvim then
      vim.schedule(function() step(unpack(r, 1, r.n)) end)
    else
      step(unpack(r, 1, r.n))
    end
  end

  -- A socket call of the store's operation (connect, write, read,
  -- release), over luv TCP, within the seconds the job gives; its result
  -- goes to the next step as a cosocket's would. A connection is not kept:
  -- the next operation connects again (on loopback, well under a
  -- millisecond), its setup pipelined with its command.
  local function store_call(action, a, b)
    local function timed(seconds)
      timer:start(math.max(1, math.ceil(seconds * 1000)), 0, function()
        drop_tcp()
        answer(nil, "timeout")
      end)
    end
    if action == "connect" then
      drop_tcp()
      timed(a.timeout)
      local function connect(addr, port)
        tcp = uv.new_tcp()
        tcp:connect(addr, port, function(cerr)
          if done or not tcp then return end
          if cerr then
            drop_tcp()
            return answer(nil, tostring(cerr))
          end
          answer(true, nil, 0)
        end)
      end
      if a.host:match("^%d+%.%d+%.%d+%.%d+$") or a.host:find(":", 1, true) then
        connect(a.host, a.port)       -- an address: no lookup
      else
        -- A name: libuv looks it up on its thread pool, once per operation.
        uv.getaddrinfo(a.host, tostring(a.port), { socktype = "stream" }, function(err, addrs)
          if done then return end
          if err or not addrs or not addrs[1] then return answer(nil, tostring(err or "no address")) end
          connect(addrs[1].addr, addrs[1].port)
        end)
      end
    elseif action == "write" then
      timed(b)
      tcp:write(a, function(err)
        if done or not tcp then return end
        if err then return answer(nil, tostring(err)) end
        answer(#a)
      end)
    elseif action == "read" then
      timed(b)
      tcp:read_start(function(err, chunk)
        if done or not tcp then return end
        tcp:read_stop()
        if err then return answer(nil, tostring(err)) end
        if not chunk then return answer(nil, "closed") end
        answer(chunk)
      end)
    else -- release
      drop_tcp()
      answer()
    end
  end

  step = function(...)
    if done then return end
    quiet()
    local ok, action, a, b, c = pcall(job.step, job, ...)
    if not ok then
      if first and co then
        -- Out of pin itself, at once: the caller's own call raises.
        done = true
        active[handle] = nil
        drop_tcp()
        if poll then poll:close() end
        timer:close()
        job:close()
        if own then client:close() end
        error(action, 0)
      end
      if co then return finish(RAISED, action) end
      return finish(nil, action, failure_kind(action))
    end
    first = false
    if action == "watch" then
      if poll_fd ~= a then
        if poll then poll:close() end
        poll, poll_fd = uv.new_poll(a), a
      end
      poll:start("r", ready)
      if c then timer:start(math.max(1, math.ceil(c * 1000)), 0, ready) end
    elseif action == "wait" then
      timer:start(math.max(0, math.floor(a * 1000 + 0.5)), 0, ready)
    elseif action == "connect" or action == "write" or action == "read" or action == "release" then
      store_call(action, a, b)
    else
      finish(a, b, c)
    end
  end

  function handle.cancel()
    if done then return false end
    job:cancel()
    finish(nil, "periskope: cancelled: the pin was cancelled", "cancelled")
    return true
  end

  active[handle] = true
  hook_exit()
  step()
  inside = false
  if co then
    local r = result
    if not r then
      local function keep(...) r = { n = select("#", ...), ... } end
      keep(coroutine.yield())
    end
    if r[1] == RAISED then error(r[2], 0) end
    return unpack(r, 1, r.n)
  end
  return handle
end

return M
