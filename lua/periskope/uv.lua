-- periskope.uv: pin from Neovim (or any host with luv) without blocking its
-- loop. Everything pin does -- argument checks, pacing, retries and their
-- waits, events -- runs on the loop's thread; only the HTTP exchange runs
-- on a thread of libuv's pool (uv.new_work), through libcurl, and waits
-- are uv timers.
--
--   local puv = require "periskope.uv"
--   puv.pin(client_or_options, { message_id = id, time = 7 }, function(res, err, kind) ... end)
--   -- or, inside a coroutine, without a callback:
--   local res, err, kind = puv.pin(client_or_options, args)
--
-- In Neovim the callback and on_event run on the main loop (scheduled with
-- vim.schedule), where every vim.api function may be called.

-- luacheck: globals vim
local periskope = require "periskope"

local unpack = table.unpack or unpack   -- luacheck: ignore 143

local M = {}

-- What the coroutine is resumed with when on_event raised: it raises again.
local RAISED = {}

local function get_uv()
  if type(vim) == "table" then return vim.uv or vim.loop end
  return require "luv"
end

-- Runs the callback where the host allows anything: Neovim's main loop
-- outside libuv's callbacks; elsewhere at once.
local function later(fn)
  if type(vim) == "table" and vim.schedule then return vim.schedule(fn) end
  return fn()
end

-- Runs on a thread of libuv's pool, in a Lua state of its own: it sees no
-- upvalue, only what was passed (nil, booleans, numbers, strings), so it
-- loads periskope itself with the caller's cpath and rebuilds the request.
local function work(cpath, url, headers, body, timeout, connect_timeout, max_body, ca_file)
  package.cpath = cpath
  local p = require "periskope"
  local list = {}
  for line in headers:gmatch("[^\n]+") do list[#list + 1] = line end
  return p.perform { url = url, headers = list, body = body, timeout = timeout,
    connect_timeout = connect_timeout, max_body = max_body, ca_file = ca_file }
end

-- Pins with client (a periskope client, or a table of options for a client
-- made for this pin and closed after it) and calls callback(res, err, kind)
-- once, as client:pin would return. Raises at once for bad arguments or
-- options, as client:pin does. An error raised later by on_event is raised
-- on the loop (Neovim reports it) and the callback is not called. Without
-- a callback, from inside a coroutine, it yields until the pin is done and
-- returns its results.
function M.pin(client, args, callback)
  local uv = get_uv()
  local own = false
  if type(client) == "table" then
    client = periskope.new(client)
    own = true
  end
  local job = client:pin_job(args)
  local co
  if callback == nil then
    co = coroutine.running()
    if not co or (coroutine.isyieldable and not coroutine.isyieldable()) then
      error("periskope: periskope.uv.pin needs a callback, or a coroutine to resume", 2)
    end
  elseif type(callback) ~= "function" then
    error("bad argument #3 to 'pin' (a function expected, got " .. type(callback) .. ")", 2)
  end

  local function finish(...)
    if own then client:close() end
    if co then
      local ok, err = coroutine.resume(co, ...)
      if not ok then error(err, 0) end
    else
      callback(...)
    end
  end

  local drive
  local function handle(action, a, b, c)
    if action == "send" then
      local w = uv.new_work(work, function(...)
        local r = { n = select("#", ...), ... }
        later(function() drive(unpack(r, 1, r.n)) end)
      end)
      w:queue(package.cpath, a.url, table.concat(a.headers, "\n"), a.body, a.timeout,
        a.connect_timeout, a.max_body, a.ca_file)
    elseif action == "wait" then
      local t = uv.new_timer()
      t:start(math.floor(a * 1000 + 0.5), 0, function()
        t:close()
        later(function() drive() end)
      end)
    else
      finish(a, b, c)
    end
  end

  local first = true
  drive = function(...)
    local ok, action, a, b, c = pcall(job.step, job, ...)
    if not ok then
      if own then client:close() end
      -- on_event raised: out of pin itself the first time; later in the
      -- coroutine, or else on the loop (which reports it).
      if co and not first then
        local resumed, err = coroutine.resume(co, RAISED, action)
        if not resumed then error(err, 0) end
        return
      end
      error(action, 0)
    end
    first = false
    return handle(action, a, b, c)
  end

  drive()
  if co then
    local r = { n = 0 }
    local function keep(...) r = { n = select("#", ...), ... } end
    keep(coroutine.yield())
    if r[1] == RAISED then error(r[2], 0) end
    return unpack(r, 1, r.n)
  end
end

return M
