-- :checkhealth periskope -- the module (which file, its version), its
-- libcurl, LuaJIT, the loop periskope.uv uses, and the PERISKOPE_*
-- variables. The API key is said to be set or not, never shown. Neovim 0.7
-- and 0.8 report through require("health").report_*, 0.9 and later through
-- vim.health.start/ok/...

-- luacheck: globals vim
local M = {}

local function reporter()
  local h = vim.health
  if not (h and h.start) then h = require "health" end
  return {
    start = h.start or h.report_start,
    ok = h.ok or h.report_ok,
    info = h.info or h.report_info,
    warn = h.warn or h.report_warn,
    error = h.error or h.report_error,
  }
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- The periskope.so this process has mapped (Linux: /proc/self/maps), and
-- true when that file has since been replaced on disk (a build step after
-- it was loaded); else the one Neovim's loader finds first: lua/periskope.so
-- on 'runtimepath', then package.cpath.
local function loaded_file()
  local maps = io.open("/proc/self/maps", "r")
  if maps then
    local text = maps:read("*a")
    maps:close()
    local path = text:match("%s(/[^\n]-/periskope%.so)\n")
    if path then return path, false end
    path = text:match("%s(/[^\n]-/periskope%.so) %(deleted%)\n")
    if path then return path, true end
  end
  local found = vim.api.nvim_get_runtime_file("lua/periskope.so", false)[1]
  if found then return found, false end
  return package.searchpath and package.searchpath("periskope", package.cpath) or nil, false
end

local function mtime(path)
  local st = (vim.uv or vim.loop).fs_stat(path)
  return st and st.mtime.sec
end

-- Whether a source file of the checkout beside the module is newer than
-- it: an update that did not run the build step.
local function stale(so)
  local root = so:match("^(.*)/lua/periskope%.so$")
  local built = root and mtime(so)
  if not built then return nil end
  for _, pattern in ipairs { "/src/*.c", "/src/*.h" } do
    for _, file in ipairs(vim.fn.glob(root .. pattern, false, true)) do
      local t = mtime(file)
      if t and t > built then return file:match("[^/]+$") end
    end
  end
  return nil
end

-- A URL as it may be shown: no user information, whatever the variable holds.
local function shown_url(url)
  return (url:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1***@"))
end

local function check_module(r)
  r.start("periskope: the module")
  local ok, periskope = pcall(require, "periskope")
  if not ok then
    r.error("the module does not load: " .. tostring(periskope), {
      "run `make nvim` in the plugin's directory (a plugin manager's build step:"
        .. " build = \"make nvim\"); it needs make, a C compiler, pkg-config,"
        .. " libcurl's and LuaJIT's headers (Debian: libcurl4-openssl-dev libluajit2-5.1-dev)",
      "see :help periskope-install",
    })
    return nil
  end
  local file, replaced = loaded_file()
  r.ok(("periskope %s loaded from %s"):format(tostring(periskope.VERSION), file or "an unknown file"))
  local newer = file and not replaced and stale(file)
  if replaced then
    r.warn("that file was replaced since it was loaded (a build step ran): this Neovim runs the old one",
      { "restart Neovim" })
  elseif newer then
    r.warn(("%s is newer than the module: the plugin was updated without its build step"):format(newer),
      { "run `make nvim` in the plugin's directory" })
  end

  -- libcurl's version, as the module reports it in its default User-Agent
  -- (periskope-lua/<v> libcurl/<v> <Lua>/<v>): read from the request
  -- build_pin would send, with options that owe nothing to the environment.
  local made, client = pcall(periskope.new, { api_key = "health-check", phone = "phone-health",
    base_url = "http://127.0.0.1" })
  local ua
  if made then
    local built, req = pcall(client.build_pin, client, { message_id = "health-check" })
    ua = built and req.headers["User-Agent"] or nil
    client:close()
  end
  local curl = ua and ua:match("libcurl/(%S+)")
  if curl then
    r.ok(("libcurl %s (User-Agent: %s)"):format(curl, ua))
  else
    r.warn("libcurl's version could not be read from the module's User-Agent")
  end
  return periskope
end

local function check_host(r)
  r.start("periskope: Neovim")
  if type(jit) == "table" then
    r.ok(("%s: `make nvim` builds the module for it"):format(jit.version))
  else
    r.error(("this Neovim runs %s, not LuaJIT"):format(_VERSION), {
      "`make nvim` builds for LuaJIT; for this Neovim, `make LUA=lua5.1` and copy"
        .. " build/lua5.1/periskope.so to lua/periskope.so",
    })
  end
  local loop = vim.uv and "vim.uv" or "vim.loop"
  local ok, puv = pcall(require, "periskope.uv")
  if ok and type(puv) == "table" and type(puv.pin) == "function" then
    r.ok(("periskope.uv loads; it drives pins on %s"):format(loop))
  else
    r.error("periskope.uv does not load: " .. tostring(puv), { "reinstall the plugin" })
  end
  local cjson = pcall(require, "cjson")
  if cjson then
    r.ok("lua-cjson: error bodies are read for their message")
  else
    r.info("no lua-cjson: a failed pin's error reads \"HTTP <status>\", not the server's message")
  end
end

local function check_config(r, periskope)
  r.start("periskope: configuration")
  local plugin = package.loaded["periskope.nvim"]
  local client = plugin and plugin.client
  if client then
    r.ok(("the commands use the client setup() made: %s"):format(tostring(client)))
  end

  if env("PERISKOPE_API_KEY") then
    r.ok("PERISKOPE_API_KEY is set (its value is not shown)")
  elseif client then
    r.info("PERISKOPE_API_KEY is not set; the client has its key from setup()")
  else
    r.warn("PERISKOPE_API_KEY is not set, and setup() made no client: :PeriskopePin has no key", {
      "export PERISKOPE_API_KEY before starting Neovim (a desktop launcher may not pass it),"
        .. " or call require(\"periskope.nvim\").setup { api_key = ... }: see :help periskope-setup",
    })
  end

  if env("PERISKOPE_PHONE") then
    r.ok(("PERISKOPE_PHONE is set: %s"):format(env("PERISKOPE_PHONE")))
  else
    r.info("PERISKOPE_PHONE is not set: no x-phone header, unless setup() or a pin names the phone"
      .. " (fine when the organisation has one phone)")
  end

  local base = env("PERISKOPE_BASE_URL")
  if base then
    r.info(("PERISKOPE_BASE_URL is set: %s"):format(shown_url(base)))
  end

  -- What the environment holds, checked as periskope.new checks it (its
  -- errors name the variable, never a value).
  if periskope and env("PERISKOPE_API_KEY") then
    local ok, c = pcall(function()
      local made = periskope.new()   -- not a tail call: the error names 'new'
      return made
    end)
    if ok then
      r.ok("periskope.new() accepts the PERISKOPE_* variables")
      c:close()
    else
      r.error(tostring(c), { "fix the variable it names, or pass the option to setup()" })
    end
  end
end

function M.check()
  local r = reporter()
  local periskope = check_module(r)
  check_host(r)
  check_config(r, periskope)
end

return M
