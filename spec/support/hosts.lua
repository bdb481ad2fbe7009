-- The LuaJIT build of the module, for the hosts that embed LuaJIT (nginx's
-- Lua module, Neovim), whatever interpreter runs busted; and the checks that
-- the README quotes the examples those hosts run.
local server = require "spec.support.server"

local M = {}

local sh, sq = server.sh, server.quote

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end
M.read_file = read_file

-- The checkout's root, absolute, from this file's path.
function M.root()
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    dir = sh("pwd"):match("[^\n]+") .. "/" .. dir:gsub("^%./", "")
  end
  return (dir:gsub("/spec/support/?$", ""))
end

-- A cpath (absolute: nginx and nvim have their own working directories)
-- that finds the LuaJIT build. Under LuaJIT, PERISKOPE_CPATH already names
-- one (make test LUA=luajit); otherwise make builds build/luajit, or finds
-- it up to date, so the hosts never run a module older than the source.
-- Raises with make's output when the build fails.
function M.cpath()
  local given = os.getenv("PERISKOPE_CPATH")
  if jit and given and given ~= "" then   -- jit: LuaJIT only
    return (given:gsub("[^;]+", function(entry)
      return entry:sub(1, 1) == "/" and entry or M.root() .. "/" .. entry
    end))
  end
  return M.build("luajit")
end

-- Builds the module for one interpreter (lua5.1 ... lua5.4, luajit) with
-- make, or finds it up to date; returns an absolute cpath that finds it.
-- Spec files run side by side: flock keeps two of them from building the
-- same objects at once. Raises with make's output when the build fails.
function M.build(lua)
  local root = M.root()
  local lock = root .. "/build/.make-" .. lua .. (os.getenv("PERISKOPE_BUILD_SUFFIX") or "") .. ".lock"
  local out, code = sh("mkdir -p " .. sq(root .. "/build") .. " && flock " .. sq(lock)
    .. " make -C " .. sq(root) .. " --no-print-directory LUA=" .. lua .. " 2>&1")
  if code ~= 0 then error("make LUA=" .. lua .. " failed:\n" .. out, 2) end
  return root .. "/build/" .. lua .. (os.getenv("PERISKOPE_BUILD_SUFFIX") or "") .. "/?.so"
end

-- The README and the pages of doc/ that it links to, where the examples
-- are quoted.
M.DOCS = { "README.md", "doc/openresty.md", "doc/neovim.md", "doc/shared-pacing.md" }

-- True when the README or a page of doc/ holds the example file's text,
-- byte for byte, as the body of one fenced code block.
function M.readme_quotes(path)
  local text = read_file(M.root() .. "/" .. path)
  for _, doc in ipairs(M.DOCS) do
    local page = read_file(M.root() .. "/" .. doc)
    if page:find("```%w*\n" .. text:gsub("%p", "%%%0") .. "```\n") then return true end
  end
  return false
end

return M
