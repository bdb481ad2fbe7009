-- Runs inside `nvim --headless` for spec/neovim_spec.lua (`-c "luafile ..."`):
-- pins through the plugin's module, periskope.nvim (periskope.uv), and
-- plainly, then writes what happened as JSON to $PERISKOPE_NVIM_OUT. Neovim 0.7 has
-- no `-l`, and a headless nvim's stdout is its UI channel: a file is the
-- sure way out.
--
-- Environment: PERISKOPE_NVIM_CPATH (the LuaJIT build), PERISKOPE_NVIM_PATH
-- (the checkout's lua/?.lua), PERISKOPE_NVIM_OUT, and the options, which
-- the driver passes to setup:
-- PERISKOPE_NVIM_KEY, PERISKOPE_NVIM_BASE_URL. PERISKOPE_API_KEY and
-- PERISKOPE_BASE_URL are unset: the options must come from setup.

-- luacheck: globals vim
local result = {}

local function write_result()
  local f = assert(io.open(os.getenv("PERISKOPE_NVIM_OUT"), "wb"))
  f:write(vim.json and vim.json.encode(result) or vim.fn.json_encode(result))
  f:close()
end

local uv = vim.uv or vim.loop
local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

local ok, err = pcall(function()
  package.cpath = os.getenv("PERISKOPE_NVIM_CPATH") .. ";" .. package.cpath
  package.path = os.getenv("PERISKOPE_NVIM_PATH") .. ";" .. package.path
  local example = require "periskope.nvim"

  -- Events reach on_event on the main loop, where vim.api may be called.
  local events = {}
  example.setup {
    api_key = os.getenv("PERISKOPE_NVIM_KEY"),
    base_url = os.getenv("PERISKOPE_NVIM_BASE_URL"),
    phone = "919874532456",
    on_event = function(ev)
      events[#events + 1] = { type = ev.type, api = pcall(vim.api.nvim_get_current_buf) }
    end,
  }
  result.env_key = os.getenv("PERISKOPE_API_KEY") or false

  -- 1. The budget is learned by a first pin alone; then 8 at once, whose
  --    answers the spec delays by different times, while a timer ticks
  --    every 10 ms on the main loop.
  local warm
  example.pin({ message_id = "warm" }, function(res) warm = res and res.status or 0 end)
  vim.wait(10000, function() return warm ~= nil end, 5)
  result.warm = warm

  local ticks, gap, last = 0, 0, uv.hrtime()
  local timer = uv.new_timer()
  timer:start(10, 10, function()
    local now = uv.hrtime()
    gap = math.max(gap, (now - last) / 1e6)
    last = now
    ticks = ticks + 1
  end)
  local done = {}
  local t0 = uv.hrtime()
  for i = 1, 8 do
    local id = "n" .. i
    example.pin({ message_id = id, time = 7 }, function(res, e, kind)
      done[#done + 1] = { id = id, status = res and res.status, err = e, kind = kind,
        ms = ms_since(t0), api = pcall(vim.api.nvim_get_current_buf) }
    end)
  end
  result.queue_ms = ms_since(t0)   -- how long the 8 calls held the main loop
  vim.wait(20000, function() return #done == 8 end, 5)
  timer:stop()
  timer:close()
  result.many = { done = done, ticks = ticks, gap = gap, ms = ms_since(t0) }

  -- 2. Unpin, from a coroutine, without a callback.
  local co_res
  coroutine.wrap(function()
    local res = require("periskope.uv").pin(example.client, { message_id = "co", pin = false })
    co_res = res and res.status or 0
  end)()
  vim.wait(10000, function() return co_res ~= nil end, 5)
  result.co = co_res

  -- 3. Blocking, on the main thread, as any Lua would.
  local res, perr, pkind = example.client:pin { message_id = "nvim/blocking" }
  result.blocking = res and { status = res.status, ok = res.ok, attempts = res.attempts,
    trace_id = res.trace_id } or { error = perr, kind = pkind }

  -- 4. The user commands: a pin for 7 days, an unpin, and an id that pin refuses.
  local notes = {}
  vim.notify = function(msg, level) notes[#notes + 1] = { msg = msg, level = level or 0 } end
  vim.cmd("PeriskopePin cmd-1 7")
  vim.wait(10000, function() return #notes >= 1 end, 5)
  vim.cmd("PeriskopeUnpin cmd-2")
  vim.wait(10000, function() return #notes >= 2 end, 5)
  vim.cmd("PeriskopePin ..")
  vim.wait(10000, function() return #notes >= 3 end, 5)
  result.notes = notes
  result.error_level = vim.log.levels.ERROR
  result.events = events
end)
if not ok then result.driver_error = tostring(err) end
write_result()
