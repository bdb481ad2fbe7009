-- periskope.nvim: the Neovim plugin's commands and setup.
--
--   :PeriskopePin <message_id> [1|7|30]     pins (for 1, 7 or 30 days)
--   :PeriskopeUnpin <message_id>            unpins
--   require("periskope.nvim").setup { phone = "...", ... }   periskope.new's options
--
-- plugin/periskope.lua adds the commands at startup without loading the
-- module: the client is made at the first pin, from setup's options or,
-- without setup, from PERISKOPE_API_KEY, PERISKOPE_PHONE and
-- PERISKOPE_BASE_URL. Pins go through periskope.uv, which keeps the editor
-- running and calls back once on the main loop. doc/periskope.txt is the
-- manual (:help periskope).

-- luacheck: globals vim
local M = {}

-- The client the commands and M.pin use: setup's, or the one made from the
-- environment at the first pin; nil before either.
M.client = nil

-- Pins in flight per client, and the clients setup() replaced: a replaced
-- client is closed when its last pin has called back, not under its pins.
local inflight = setmetatable({}, { __mode = "k" })
local retired = setmetatable({}, { __mode = "k" })

local function retire(client)
  if (inflight[client] or 0) > 0 then
    retired[client] = true
  else
    client:close()
  end
end

-- An error's text without the position Lua may put first, so that no
-- message names a file of the machine.
local function reason(err)
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

-- The C module, or an error that says how to build it.
local function module()
  local ok, periskope = pcall(require, "periskope")
  if not ok then
    error("periskope: the module is not built or does not load: run `make nvim` in the plugin's"
      .. " directory (:checkhealth periskope says more)", 0)
  end
  return periskope
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- The client, made from the environment at first use when setup() made none.
function M.get_client()
  if not M.client then
    local periskope = module()
    if not env("PERISKOPE_API_KEY") then
      error("periskope: no API key: set PERISKOPE_API_KEY, or call"
        .. " require(\"periskope.nvim\").setup { api_key = ... } (:help periskope-setup)", 0)
    end
    M.client = periskope.new()
  end
  return M.client
end

-- Pins (args.pin = false: unpins) through periskope.uv and calls
-- on_done(res, err, kind) on the main loop once, with what client:pin
-- returns. Returns periskope.uv's handle (handle:cancel()). Raises at once
-- for arguments that pin refuses, or when there is no client to make.
function M.pin(args, on_done)
  local client = M.get_client()
  local puv = require "periskope.uv"
  inflight[client] = (inflight[client] or 0) + 1
  local ok, handle = pcall(puv.pin, client, args, function(...)
    inflight[client] = inflight[client] - 1
    if retired[client] and inflight[client] == 0 then
      retired[client] = nil
      client:close()
    end
    if on_done then return on_done(...) end
  end)
  if not ok then
    inflight[client] = inflight[client] - 1
    error(handle, 0)
  end
  return handle
end

-- vim.notify, from the main loop.
local function notify(msg, level)
  local function say() vim.notify(msg, level) end
  if vim.in_fast_event() then vim.schedule(say) else say() end
end

-- Runs a command's pin and says how it went.
local function command(args)
  local id = args.message_id
  local what = args.pin == false and "unpinned" or "pinned"
  local ok, err = pcall(M.pin, args, function(res, e, kind)
    if res and res.ok then
      notify(("periskope: %s %s"):format(what, id))
    elseif res then
      notify(("periskope: %s: %d %s"):format(id, res.status, res.error), vim.log.levels.ERROR)
    else
      notify(("%s (%s)"):format(tostring(e), tostring(kind)), vim.log.levels.ERROR)
    end
  end)
  if not ok then notify(reason(err), vim.log.levels.ERROR) end
end

local DAYS = { "1", "7", "30" }

-- :PeriskopePin's days: nothing (Periskope's default, 30), or 1, 7 or 30;
-- a word that is no number is refused here, not sent as no time at all.
local function pin_command(cmd)
  local id, days = cmd.fargs[1], cmd.fargs[2]
  if #cmd.fargs > 2 or (days and not tonumber(days)) then
    notify("periskope: usage: :PeriskopePin <message_id> [1|7|30] (the days to pin for)",
      vim.log.levels.ERROR)
    return
  end
  command { message_id = id, time = tonumber(days) }
end

local function complete_days(lead, line)
  -- Only the second argument has a fixed set of values.
  local _, words = line:gsub("%S+", "")
  if words == 2 and lead == "" or words == 3 and lead ~= "" then
    local out = {}
    for _, d in ipairs(DAYS) do
      if d:sub(1, #lead) == lead then out[#out + 1] = d end
    end
    return out
  end
  return {}
end

-- Adds :PeriskopePin and :PeriskopeUnpin (again: they are replaced).
function M.create_commands()
  vim.api.nvim_create_user_command("PeriskopePin", pin_command, {
    nargs = "+", complete = complete_days,
    desc = "Pin a WhatsApp message through Periskope (for 1, 7 or 30 days)",
  })
  vim.api.nvim_create_user_command("PeriskopeUnpin", function(cmd)
    command { message_id = cmd.fargs[1], pin = false }
  end, { nargs = 1, desc = "Unpin a WhatsApp message through Periskope" })
end

-- Makes the client from options (periskope.new's; raises, naming the
-- option, when one is wrong, and keeps the client it had) and adds the
-- commands. Called again, it replaces the client: the old one is closed
-- once its pins in flight have called back.
function M.setup(options)
  local client = module().new(options)
  if M.client then retire(M.client) end
  M.client = client
  M.create_commands()
  return M
end

return M
