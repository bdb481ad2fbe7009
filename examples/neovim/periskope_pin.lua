-- Pins WhatsApp messages from Neovim (0.7 or later, built on LuaJIT)
-- without freezing the editor: the blocking pin runs on a thread of libuv's
-- pool. The key, phone and base URL come from PERISKOPE_API_KEY,
-- PERISKOPE_PHONE and PERISKOPE_BASE_URL.

-- luacheck: globals vim
local M = {}

-- Runs on the pool thread, in a Lua state of its own: it sees no upvalues
-- and no vim.*, so it loads periskope itself, with the main state's cpath.
-- Only nil, booleans, numbers and strings cross between the states: it
-- returns the status (0 when no answer came) and the trace id or the error.
local function work(cpath, message_id)
  package.cpath = cpath
  local periskope = require "periskope"
  local ok, res, err = pcall(function()
    local r, e = periskope.pin { message_id = message_id }  -- no tail call:
    return r, e                       -- the error then names 'pin'
  end)
  if not ok then return 0, res end    -- a bad message id raised
  if not res then return 0, err end
  return res.status, res.ok and (res.trace_id or "") or res.error
end

-- Pins message_id; calls on_done(status, trace_id_or_error) on the main
-- loop once Periskope answered (status 204) or the pin failed (status 0,
-- or Periskope's 4xx or 5xx).
function M.pin(message_id, on_done)
  local pin = vim.loop.new_work(work, function(status, detail)
    -- This runs inside a libuv callback, where most of vim.api may not be
    -- called: on_done waits for the main loop's next turn.
    vim.schedule(function() on_done(status, detail) end)
  end)
  pin:queue(package.cpath, message_id)
end

-- :PeriskopePin <message_id>
function M.setup()
  vim.api.nvim_create_user_command("PeriskopePin", function(cmd)
    M.pin(cmd.args, function(status, detail)
      if status >= 200 and status < 300 then
        vim.notify("pinned " .. cmd.args)
      else
        vim.notify(("periskope: %d %s"):format(status, detail), vim.log.levels.ERROR)
      end
    end)
  end, { nargs = 1, desc = "Pin a WhatsApp message through Periskope" })
end

return M
