-- Pins WhatsApp messages from Neovim (0.7 or later, built on LuaJIT)
-- without freezing the editor: periskope.uv runs each pin's HTTP exchange
-- on a thread of libuv's pool, and everything else (pacing, retries and
-- their waits, on_event) on the main loop.
--
--   require("periskope_pin").setup { api_key = "...", phone = "..." }
--   :PeriskopePin <message_id> [1|7|30]     pins (for 1, 7 or 30 days)
--   :PeriskopeUnpin <message_id>            unpins
--
-- setup's options are periskope.new's; those left out come from
-- PERISKOPE_API_KEY, PERISKOPE_PHONE and PERISKOPE_BASE_URL, which a
-- Neovim started from a desktop launcher may not have.

-- luacheck: globals vim
local periskope = require "periskope"
local puv = require "periskope.uv"

local M = {}

-- An error's text without the position Lua may put first, so that no
-- message names a file of the machine.
local function reason(err)
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

-- Pins (args.pin = false: unpins) and calls on_done(res, err, kind) on the
-- main loop once Periskope answered or the pin failed, as client:pin
-- returns. Raises at once for arguments that pin refuses.
function M.pin(args, on_done)
  assert(M.client, "periskope_pin: call setup() first")
  puv.pin(M.client, args, on_done)
end

-- Runs a command's pin and says how it went.
local function command(args)
  local id = args.message_id
  local what = args.pin == false and "unpinned" or "pinned"
  local ok, err = pcall(M.pin, args, function(res, e, kind)
    if res and res.ok then
      vim.notify(("periskope: %s %s"):format(what, id))
    elseif res then
      vim.notify(("periskope: %s: %d %s"):format(id, res.status, res.error), vim.log.levels.ERROR)
    else
      vim.notify(("%s (%s)"):format(e, kind), vim.log.levels.ERROR)
    end
  end)
  if not ok then vim.notify(reason(err), vim.log.levels.ERROR) end
end

-- Makes the client from options (raises, naming the option, when one is
-- wrong) and adds the commands.
function M.setup(options)
  if M.client then M.client:close() end
  M.client = periskope.new(options)
  vim.api.nvim_create_user_command("PeriskopePin", function(cmd)
    command { message_id = cmd.fargs[1], time = tonumber(cmd.fargs[2]) }
  end, { nargs = "+", desc = "Pin a WhatsApp message through Periskope (for 1, 7 or 30 days)" })
  vim.api.nvim_create_user_command("PeriskopeUnpin", function(cmd)
    command { message_id = cmd.fargs[1], pin = false }
  end, { nargs = 1, desc = "Unpin a WhatsApp message through Periskope" })
end

return M
