-- Runs inside `nvim --headless -u NONE` for spec/neovim_plugin_spec.lua
-- (`-c "luafile ..."`), with only a fresh clone of the repository and
-- Neovim's own runtime on 'runtimepath': sources the plugin files as
-- Neovim's startup does, then runs :checkhealth periskope, :help periskope
-- and the commands, and writes what it saw as JSON to $PERISKOPE_PLUGIN_OUT.
--
-- Environment: PERISKOPE_PLUGIN_OUT; PERISKOPE_PLUGIN_LAZY, when set, the
-- path of a lazy.nvim plugin spec to load as lazy.nvim does once the rest
-- is done (require(spec.main).setup(spec.opts)), then pin once more. The
-- PERISKOPE_* variables are the plugin's own.

-- luacheck: globals vim
local result = {}

local function write_result()
  local f = assert(io.open(os.getenv("PERISKOPE_PLUGIN_OUT"), "wb"))
  f:write(vim.json and vim.json.encode(result) or vim.fn.json_encode(result))
  f:close()
end

-- What :help {subject} opens: the file and the line the cursor is on, or
-- the error.
local function help(subject)
  local ok, err = pcall(vim.cmd, "help " .. subject)
  if not ok then return { error = tostring(err) } end
  local out = { file = vim.api.nvim_buf_get_name(0), line = vim.api.nvim_get_current_line() }
  vim.cmd("helpclose")
  return out
end

local notes = {}
local function wait_notes(n)
  vim.wait(10000, function() return #notes >= n end, 5)
end

local ok, err = pcall(function()
  result.rtp = vim.o.runtimepath
  -- Startup with plugins on loads these (-u NONE turns that off).
  vim.cmd("runtime! plugin/**/*.vim plugin/**/*.lua")
  result.commands = { pin = vim.fn.exists(":PeriskopePin"), unpin = vim.fn.exists(":PeriskopeUnpin") }
  result.loaded_at_startup = package.loaded["periskope"] ~= nil

  vim.cmd("checkhealth periskope")
  result.health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  vim.cmd("tabclose")

  result.help = help("periskope")
  result.help_cmd = help(":PeriskopePin")
  result.help_uv = help("periskope.uv.pin()")

  vim.notify = function(msg, level) notes[#notes + 1] = { msg = msg, level = level or 0 } end
  vim.cmd("PeriskopePin plugin-1 7")
  wait_notes(1)
  if notes[1] and notes[1].msg == "periskope: pinned plugin-1" then
    vim.cmd("PeriskopeUnpin plugin-2")
    wait_notes(2)
    vim.cmd("PeriskopePin plugin-3 seven")      -- refused before anything is sent
    wait_notes(3)
  end

  -- Which files answered require: the module's, mapped into this process,
  -- and periskope.uv's.
  local loaded, periskope = pcall(require, "periskope")
  result.module = { ok = loaded, version = loaded and periskope.VERSION or tostring(periskope) }
  local maps = io.open("/proc/self/maps", "r")
  result.module.file = maps and maps:read("*a"):match("%s(/[^\n]-/periskope%.so)\n")
  if maps then maps:close() end
  result.module.on_rtp = vim.api.nvim_get_runtime_file("lua/periskope.so", true)
  local uv_ok, puv = pcall(require, "periskope.uv")
  result.uv_source = uv_ok and debug.getinfo(puv.pin, "S").source or tostring(puv)

  local lazy = os.getenv("PERISKOPE_PLUGIN_LAZY")
  if lazy and lazy ~= "" then
    local spec = dofile(lazy)
    result.lazy = { build = spec.build, cmd = spec.cmd, main = spec.main }
    require(spec.main).setup(spec.opts)
    local before = #notes
    vim.cmd("PeriskopePin plugin-4")
    wait_notes(before + 1)
  end
  result.notes = notes
  result.error_level = vim.log.levels.ERROR
end)
if not ok then result.driver_error = tostring(err) end
write_result()
