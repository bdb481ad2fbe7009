-- The plugin's build step for lazy.nvim, which runs a plugin's build.lua
-- after installing or updating it: `make nvim` in this file's directory
-- (lazy.nvim runs it from its own working directory), which builds the
-- module for LuaJIT into lua/periskope.so and makes doc/tags.

-- luacheck: globals vim
local file = debug.getinfo(1, "S").source:match("^@(.*)$")
if not file then error("periskope: build.lua must be run from its file (:luafile, dofile)", 0) end
local dir = file:match("^(.*)/[^/]*$") or "."
local out = vim.fn.system { "make", "-C", dir, "--no-print-directory", "nvim" }
if vim.v.shell_error ~= 0 then
  error("periskope: `make nvim` failed (exit status " .. vim.v.shell_error .. "):\n" .. out, 0)
end
