-- Runs inside `nvim --headless` for spec/neovim_spec.lua (`-c "luafile ..."`):
-- pins through examples/neovim/periskope_pin.lua and plainly, then writes
-- what happened as JSON to $PERISKOPE_NVIM_OUT. Neovim 0.7 has no `-l`, and
-- a headless nvim's stdout is its UI channel: a file is the sure way out.
--
-- Environment: PERISKOPE_NVIM_CPATH (the LuaJIT build), PERISKOPE_NVIM_OUT,
-- PERISKOPE_NVIM_EXAMPLE (the example's path), and PERISKOPE_API_KEY,
-- PERISKOPE_BASE_URL, PERISKOPE_PHONE, which the module reads itself.

-- luacheck: globals vim
local result = {}

local function write_result()
  local f = assert(io.open(os.getenv("PERISKOPE_NVIM_OUT"), "wb"))
  f:write(vim.json.encode(result))
  f:close()
end

local function ms_since(t0) return (vim.loop.hrtime() - t0) / 1e6 end

local ok, err = pcall(function()
  package.cpath = os.getenv("PERISKOPE_NVIM_CPATH") .. ";" .. package.cpath
  local example = dofile(os.getenv("PERISKOPE_NVIM_EXAMPLE"))

  -- 1. Off the main thread, while a timer ticks every 10 ms on the main
  --    loop; the spec makes the server take 0.5 s to answer this one.
  local ticks, done = 0, nil
  local timer = vim.loop.new_timer()
  timer:start(10, 10, function() ticks = ticks + 1 end)
  local t0 = vim.loop.hrtime()
  example.pin("a@b", function(status, detail)
    done = { status = status, detail = detail, ticks = ticks, ms = ms_since(t0) }
  end)
  result.queue_ms = ms_since(t0)     -- how long pin() held the main loop
  result.ticks_at_queue = ticks
  vim.wait(10000, function() return done ~= nil end, 5)
  timer:stop()
  timer:close()
  result.async = done

  -- 2. Blocking, on the main thread, as any Lua would.
  local periskope = require "periskope"
  local res, perr, kind = periskope.pin { message_id = "nvim/blocking" }
  result.blocking = res and { status = res.status, ok = res.ok, attempts = res.attempts,
    trace_id = res.trace_id } or { error = perr, kind = kind }

  -- 3. The user command: a good id, then one that pin refuses.
  local notes = {}
  vim.notify = function(msg, level) notes[#notes + 1] = { msg = msg, level = level or 0 } end
  example.setup()
  vim.cmd("PeriskopePin cmd-1")
  vim.wait(10000, function() return #notes >= 1 end, 5)
  vim.cmd("PeriskopePin ..")
  vim.wait(10000, function() return #notes >= 2 end, 5)
  result.notes = notes
  result.error_level = vim.log.levels.ERROR
end)
if not ok then result.driver_error = tostring(err) end
write_result()
